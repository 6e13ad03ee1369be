//! The model's physical address space: 4 KiB granules with their RMM states (TF-RMM
//! `lib/granule/include/granule_types.h`, `runtime/rmi/granule.c`), plus windows of VMM memory
//! attached as host RAM (the pages behind shared regions).
//!
//! Host DRAM granules live from [`DRAM_BASE`]; the host allocates them (like its kernel page
//! allocator) and may delegate them. Attached windows start at [`WINDOW_BASE`] and are NS-only
//! (the model refuses to delegate them: they are VMM mappings, see `delegate`).

use std::collections::BTreeMap;
use std::sync::Arc;

use cvm_core::vm_memory::{Bytes, GuestAddress, GuestRegionMmap, MemoryRegionAddress, MmapRegion};

use crate::abi::{GranuleState, GRANULE_SIZE};
use crate::rmi::HostMemError;

/// First PA of the model's host DRAM.
pub const DRAM_BASE: u64 = 0x8_0000_0000;
/// Size of the model's host DRAM (granules are materialised on allocation only).
pub const DRAM_SIZE: u64 = 1 << 36;
/// First PA of attached VMM windows.
pub const WINDOW_BASE: u64 = 0x100_0000_0000;
const WINDOW_ALIGN: u64 = 1 << 30;
const BLOCK_2M: u64 = 2 << 20;

/// A granule of host DRAM.
#[derive(Debug)]
pub(crate) struct Granule {
    /// RMM state.
    pub state: GranuleState,
    /// Contents; `None` reads as zeros.
    pub data: Option<Box<[u8; GRANULE_SIZE as usize]>>,
}

struct Window {
    size: u64,
    region: GuestRegionMmap,
}

/// The physical address space.
#[derive(Default)]
pub(crate) struct PhysMem {
    granules: BTreeMap<u64, Granule>,
    free: Vec<u64>,
    next: u64,
    windows: BTreeMap<u64, Window>,
    next_window: u64,
}

impl PhysMem {
    /// Allocates `count` physically contiguous zeroed NS granules; returns the first PA.
    pub fn alloc(&mut self, count: u64) -> Result<u64, HostMemError> {
        if count == 0 {
            return Err(HostMemError::Exhausted);
        }
        let base = match (count, self.free.pop()) {
            (1, Some(pa)) => pa,
            _ => {
                let bytes = count * GRANULE_SIZE;
                if self.next + bytes > DRAM_SIZE {
                    return Err(HostMemError::Exhausted);
                }
                let pa = DRAM_BASE + self.next;
                self.next += bytes;
                pa
            }
        };
        for i in 0..count {
            self.granules.insert(
                base + i * GRANULE_SIZE,
                Granule {
                    state: GranuleState::Undelegated,
                    data: None,
                },
            );
        }
        Ok(base)
    }

    /// Returns an NS granule to the allocator.
    pub fn free(&mut self, pa: u64) -> Result<(), HostMemError> {
        match self.granules.get(&pa) {
            Some(g) if g.state == GranuleState::Undelegated => {
                self.granules.remove(&pa);
                self.free.push(pa);
                Ok(())
            }
            _ => Err(HostMemError::NotHostGranule { pa }),
        }
    }

    /// State of an allocated DRAM granule.
    pub fn state(&self, pa: u64) -> Option<GranuleState> {
        self.granules.get(&pa).map(|g| g.state)
    }

    /// Whether `pa` is an allocated granule in `state`.
    pub fn is(&self, pa: u64, state: GranuleState) -> bool {
        self.state(pa) == Some(state)
    }

    /// Changes a granule's state, scrubbing it when it leaves or enters the delegated pool
    /// (TF-RMM `granule.c`: delegate and undelegate zero the granule).
    pub fn set_state(&mut self, pa: u64, state: GranuleState) {
        if let Some(g) = self.granules.get_mut(&pa) {
            if matches!(state, GranuleState::Delegated | GranuleState::Undelegated) {
                g.data = None;
            }
            g.state = state;
        }
    }

    /// Mutable bytes of an allocated granule.
    pub fn bytes_mut(&mut self, pa: u64) -> Option<&mut [u8; GRANULE_SIZE as usize]> {
        let g = self.granules.get_mut(&pa)?;
        Some(
            g.data
                .get_or_insert_with(|| Box::new([0; GRANULE_SIZE as usize])),
        )
    }

    /// Reads `buf.len()` bytes of realm-world granule `pa` at `offset` (no state check).
    pub fn read_granule(&self, pa: u64, offset: usize, buf: &mut [u8]) -> bool {
        let Some(g) = self.granules.get(&pa) else {
            return false;
        };
        let Some(end) = offset
            .checked_add(buf.len())
            .filter(|e| *e <= GRANULE_SIZE as usize)
        else {
            return false;
        };
        match g.data.as_deref() {
            Some(d) => buf.copy_from_slice(&d[offset..end]),
            None => buf.fill(0),
        }
        true
    }

    /// Writes realm-world granule `pa` at `offset` (no state check).
    pub fn write_granule(&mut self, pa: u64, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset
            .checked_add(data.len())
            .filter(|e| *e <= GRANULE_SIZE as usize)
        else {
            return false;
        };
        match self.bytes_mut(pa) {
            Some(d) => {
                d[offset..end].copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn window(&self, pa: u64, len: usize) -> Option<(&GuestRegionMmap, u64)> {
        let (base, w) = self.windows.range(..=pa).next_back()?;
        let off = pa - base;
        (off.checked_add(len as u64)? <= w.size).then_some((&w.region, off))
    }

    /// Reads NS memory (an undelegated DRAM granule or an attached window).
    pub fn ns_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let oob = HostMemError::OutOfRange { pa, len: buf.len() };
        if pa >= WINDOW_BASE {
            let (region, off) = self.window(pa, buf.len()).ok_or(oob.clone())?;
            return region
                .read_slice(buf, MemoryRegionAddress(off))
                .map_err(|_| oob);
        }
        let base = pa & !(GRANULE_SIZE - 1);
        if !self.is(base, GranuleState::Undelegated) {
            return Err(HostMemError::NotHostGranule { pa });
        }
        if self.read_granule(base, (pa - base) as usize, buf) {
            Ok(())
        } else {
            Err(oob)
        }
    }

    /// Writes NS memory.
    pub fn ns_write(&mut self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        let oob = HostMemError::OutOfRange {
            pa,
            len: data.len(),
        };
        if pa >= WINDOW_BASE {
            let (region, off) = self.window(pa, data.len()).ok_or(oob.clone())?;
            return region
                .write_slice(data, MemoryRegionAddress(off))
                .map_err(|_| oob);
        }
        let base = pa & !(GRANULE_SIZE - 1);
        if !self.is(base, GranuleState::Undelegated) {
            return Err(HostMemError::NotHostGranule { pa });
        }
        if self.write_granule(base, (pa - base) as usize, data) {
            Ok(())
        } else {
            Err(oob)
        }
    }

    /// Attaches VMM memory as NS host RAM at a PA ≡ `align_to` (mod 2 MiB).
    pub fn attach(&mut self, mapping: Arc<MmapRegion>, align_to: u64) -> Result<u64, HostMemError> {
        let size = mapping.size() as u64;
        let slot = WINDOW_BASE + self.next_window;
        let pa = slot + (align_to % BLOCK_2M);
        let region =
            GuestRegionMmap::with_arc(mapping, GuestAddress(0)).ok_or(HostMemError::Exhausted)?;
        let span = (pa - slot + size).div_ceil(WINDOW_ALIGN) * WINDOW_ALIGN;
        self.next_window = self
            .next_window
            .checked_add(span)
            .ok_or(HostMemError::Exhausted)?;
        self.windows.insert(pa, Window { size, region });
        Ok(pa)
    }

    /// Detaches the window at `pa`.
    pub fn detach(&mut self, pa: u64) -> Result<(), HostMemError> {
        self.windows
            .remove(&pa)
            .map(drop)
            .ok_or(HostMemError::NotHostGranule { pa })
    }

    /// Every allocated DRAM granule with its state, ascending PA.
    pub fn states(&self) -> impl Iterator<Item = (u64, GranuleState)> + '_ {
        self.granules.iter().map(|(pa, g)| (*pa, g.state))
    }

    /// Granules not in the NS state (delegated or in realm use).
    pub fn delegated(&self) -> usize {
        self.granules
            .values()
            .filter(|g| g.state != GranuleState::Undelegated)
            .count()
    }

    /// Allocated NS granules (host pages not yet freed).
    pub fn allocated(&self) -> usize {
        self.granules.len()
    }

    /// Attached windows.
    pub fn windows(&self) -> usize {
        self.windows.len()
    }
}
