//! Physical memory of the modelled machine: host RAM page states, page contents, pinned VMM
//! memory, and the TSM TLB-version fence across N physical harts.
//!
//! Page states and transitions follow Salus `page-tracking/src/page_info.rs` (`enum
//! PageState`), `MEMORY.md` and `src/vm_pages.rs` (spec/cove.md §2.2):
//!
//! | from | call | to |
//! |---|---|---|
//! | Host | TSM_CONVERT_PAGES | Converting(v) (unmapped from the host at TLB version v) |
//! | Converting(v) | INITIATE_FENCE + LOCAL_FENCE on every other hart | Converted (once every hart saw a version > v) |
//! | Converted | CREATE_TVM / CREATE_VCPU / ADD_PGT_PAGES | VmState(owner), zeroed first |
//! | Converted | ADD_MEASURED_PAGES / ADD_ZERO_PAGES | Mapped(owner) |
//! | Host | ADD_SHARED_PAGES | Shared(n + 1) |
//! | Mapped (blocked, TVM-fenced) | TVM_REMOVE_PAGES | Converted |
//! | VmState / Mapped | DESTROY_TVM | Converted |
//! | Converted (fenced, unassigned) | TSM_RECLAIM_PAGES | Host, zeroed |
//!
//! Salus only reclaims fenced pages ("TODO: support reclaim of converted pages not yet
//! fenced"), so RECLAIM of a Converting page fails.

use std::collections::HashMap;

use cvm_core::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::abi::{SbiError, PAGE_SIZE};
use crate::covh::HostMemError;

const PAGE: usize = PAGE_SIZE as usize;

/// Where pinned VMM (user) memory appears in the host physical address space (above RAM).
pub const USER_WINDOW_BASE: u64 = 0x100_0000_0000;

/// The state of one host RAM page (Salus `PageState`, reduced to what the model needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Host-owned and mapped in the host (`Mapped` with owner = host).
    Host,
    /// Converted at TLB version `v`; complete once a fence covering `v` has run everywhere.
    Converting(u64),
    /// Confidential, owned by the host, not assigned.
    Converted,
    /// TSM-internal state of TVM `owner` (TVM state, vCPU state, page-table pages).
    VmState(u64),
    /// Mapped into TVM `owner`'s confidential memory.
    Mapped(u64),
    /// Host-owned, shared with TVMs `n` times.
    Shared(u32),
}

/// The TSM TLB-version fence (Salus `MEMORY.md`: convert records version N, INITIATE_FENCE
/// bumps the global version to N+1, LOCAL_FENCE per hart; spec-2023 "Converting
/// non-confidential memory").
#[derive(Debug, Clone)]
pub struct Fence {
    version: u64,
    seen: Vec<u64>,
}

impl Fence {
    fn new(harts: usize) -> Self {
        Self {
            version: 0,
            seen: vec![0; harts.max(1)],
        }
    }

    /// Whether a fence has been initiated and not yet reached every hart.
    pub fn in_progress(&self) -> bool {
        self.seen.iter().any(|&s| s < self.version)
    }

    /// TSM_INITIATE_FENCE on `hart`: ALREADY_STARTED while one is in progress (spec-2023).
    pub fn initiate(&mut self, hart: usize) -> Result<(), SbiError> {
        if self.in_progress() {
            return Err(SbiError::AlreadyStarted);
        }
        self.version += 1;
        let s = self.seen.get_mut(hart).ok_or(SbiError::InvalidParam)?;
        *s = self.version;
        Ok(())
    }

    /// TSM_LOCAL_FENCE on `hart`.
    pub fn local(&mut self, hart: usize) -> Result<(), SbiError> {
        let v = self.version;
        let s = self.seen.get_mut(hart).ok_or(SbiError::InvalidParam)?;
        *s = v;
        Ok(())
    }

    /// The TLB version every hart has seen.
    fn completed(&self) -> u64 {
        self.seen.iter().copied().min().unwrap_or(self.version)
    }

    /// The current version (what a conversion now records).
    fn current(&self) -> u64 {
        self.version
    }
}

/// Pinned VMM memory (the RFC's `pin_user_pages`) at a host physical window.
#[derive(Debug)]
struct Window {
    pa: u64,
    size: u64,
    mem: GuestMemoryMmap,
    gpa: u64,
    shared: Vec<u32>,
}

/// The machine's physical memory.
#[derive(Debug)]
pub struct PhysMem {
    base: u64,
    states: Vec<PageState>,
    data: HashMap<u64, Box<[u8; PAGE]>>,
    windows: Vec<Window>,
    next_window: u64,
    /// The TSM fence.
    pub fence: Fence,
}

impl PhysMem {
    /// `pages` pages of host RAM from `base`, all host-owned, `harts` harts.
    pub fn new(base: u64, pages: usize, harts: usize) -> Self {
        Self {
            base,
            states: vec![PageState::Host; pages],
            data: HashMap::new(),
            windows: Vec::new(),
            next_window: USER_WINDOW_BASE,
            fence: Fence::new(harts),
        }
    }

    /// Host RAM `(base, size)`.
    pub fn ram(&self) -> (u64, u64) {
        (self.base, self.states.len() as u64 * PAGE_SIZE)
    }

    fn index(&self, pa: u64) -> Option<usize> {
        if pa % PAGE_SIZE != 0 || pa < self.base {
            return None;
        }
        let i = usize::try_from((pa - self.base) / PAGE_SIZE).ok()?;
        (i < self.states.len()).then_some(i)
    }

    /// The state of RAM page `pa`, with completed conversions resolved.
    pub fn state(&self, pa: u64) -> Option<PageState> {
        let s = *self.states.get(self.index(pa)?)?;
        Some(match s {
            PageState::Converting(v) if self.fence.completed() > v => PageState::Converted,
            other => other,
        })
    }

    fn set(&mut self, pa: u64, s: PageState) {
        if let Some(i) = self.index(pa) {
            if let Some(slot) = self.states.get_mut(i) {
                *slot = s;
            }
        }
    }

    fn zero(&mut self, pa: u64) {
        self.data.remove(&pa);
    }

    /// The `n` page addresses from `pa` (checked for overflow and alignment).
    pub fn range(pa: u64, n: u64) -> Result<impl Iterator<Item = u64>, SbiError> {
        if n == 0 || pa % PAGE_SIZE != 0 {
            return Err(SbiError::InvalidParam);
        }
        n.checked_mul(PAGE_SIZE)
            .and_then(|len| pa.checked_add(len))
            .ok_or(SbiError::InvalidAddress)?;
        Ok((0..n).map(move |i| pa + i * PAGE_SIZE))
    }

    /// TSM_CONVERT_PAGES: every page must be host RAM not shared and not excluded (NACL
    /// memory); all-or-nothing.
    pub fn convert(&mut self, pa: u64, n: u64, excluded: &[(u64, u64)]) -> Result<u64, SbiError> {
        for p in Self::range(pa, n)? {
            if self.state(p) != Some(PageState::Host)
                || excluded.iter().any(|&(b, len)| p >= b && p < b + len)
            {
                return Err(SbiError::InvalidAddress);
            }
        }
        let v = self.fence.current();
        for p in Self::range(pa, n)? {
            self.set(p, PageState::Converting(v));
        }
        Ok(n)
    }

    /// TSM_RECLAIM_PAGES: every page fenced-converted and unassigned → host, zeroed.
    pub fn reclaim(&mut self, pa: u64, n: u64) -> Result<u64, SbiError> {
        for p in Self::range(pa, n)? {
            if self.state(p) != Some(PageState::Converted) {
                return Err(SbiError::InvalidAddress);
            }
        }
        for p in Self::range(pa, n)? {
            self.zero(p);
            self.set(p, PageState::Host);
        }
        Ok(n)
    }

    /// Checks that `n` pages from `pa` are fenced-converted and unassigned.
    pub fn check_converted(&self, pa: u64, n: u64) -> Result<(), SbiError> {
        for p in Self::range(pa, n)? {
            if self.state(p) != Some(PageState::Converted) {
                return Err(SbiError::InvalidAddress);
            }
        }
        Ok(())
    }

    /// Assigns checked converted pages to TVM state / a mapping, zeroing them ("pages cleaned
    /// first", spec/cove.md §2.2).
    pub fn assign(&mut self, pa: u64, n: u64, to: PageState) -> Result<(), SbiError> {
        self.check_converted(pa, n)?;
        for p in Self::range(pa, n)? {
            self.zero(p);
            self.set(p, to);
        }
        Ok(())
    }

    /// Returns a TVM page to the host, still confidential (DESTROY_TVM, REMOVE_PAGES).
    pub fn release(&mut self, pa: u64) {
        if matches!(
            self.state(pa),
            Some(PageState::VmState(_) | PageState::Mapped(_))
        ) {
            self.set(pa, PageState::Converted);
        }
    }

    /// Whether `pa` is a host page the TVM may share (host RAM or pinned user memory).
    pub fn share(&mut self, pa: u64) -> Result<(), SbiError> {
        if let Some(s) = self.state(pa) {
            let n = match s {
                PageState::Host => 0,
                PageState::Shared(n) => n,
                _ => return Err(SbiError::InvalidAddress),
            };
            self.set(pa, PageState::Shared(n.saturating_add(1)));
            return Ok(());
        }
        let (w, off) = self.window_mut(pa).ok_or(SbiError::InvalidAddress)?;
        let slot = w
            .shared
            .get_mut((off / PAGE_SIZE) as usize)
            .ok_or(SbiError::InvalidAddress)?;
        *slot = slot.saturating_add(1);
        Ok(())
    }

    /// Checks, without changing anything, that each of the `n` pages from `pa` may be
    /// shared ([`PhysMem::share`]). Stops at the first page that may not, so the work is
    /// bounded by the host memory that exists (RAM or one pinned window), whatever `n` is.
    pub fn check_shareable(&self, pa: u64, n: u64) -> Result<(), SbiError> {
        for p in Self::range(pa, n)? {
            let ok = match self.state(p) {
                Some(PageState::Host | PageState::Shared(_)) => true,
                Some(_) => false,
                None => self.window(p).is_some(),
            };
            if !ok {
                return Err(SbiError::InvalidAddress);
            }
        }
        Ok(())
    }

    /// Drops one share reference of `pa`.
    pub fn unshare(&mut self, pa: u64) {
        if let Some(PageState::Shared(n)) = self.state(pa) {
            self.set(
                pa,
                if n <= 1 {
                    PageState::Host
                } else {
                    PageState::Shared(n - 1)
                },
            );
        } else if let Some((w, off)) = self.window_mut(pa) {
            if let Some(s) = w.shared.get_mut((off / PAGE_SIZE) as usize) {
                *s = s.saturating_sub(1);
            }
        }
    }

    /// Pages not in the host state (converting, converted, TVM state, mapped): after a
    /// complete teardown this is 0.
    pub fn confidential_pages(&self) -> usize {
        self.states
            .iter()
            .filter(|s| !matches!(s, PageState::Host | PageState::Shared(_)))
            .count()
    }

    /// Pages currently shared with TVMs (RAM and pinned user memory).
    pub fn shared_pages(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, PageState::Shared(_)))
            .count()
            + self
                .windows
                .iter()
                .map(|w| w.shared.iter().filter(|&&n| n > 0).count())
                .sum::<usize>()
    }

    /// Ranges of VMM memory currently pinned.
    pub fn pinned_ranges(&self) -> usize {
        self.windows.len()
    }

    fn window_mut(&mut self, pa: u64) -> Option<(&mut Window, u64)> {
        self.windows
            .iter_mut()
            .find(|w| pa >= w.pa && pa - w.pa < w.size)
            .map(|w| {
                let off = pa - w.pa;
                (w, off)
            })
    }

    fn window(&self, pa: u64) -> Option<(&Window, u64)> {
        self.windows
            .iter()
            .find(|w| pa >= w.pa && pa - w.pa < w.size)
            .map(|w| (w, pa - w.pa))
    }

    /// Pins VMM memory; returns its host physical address.
    pub fn pin(&mut self, mem: &GuestMemoryMmap, gpa: u64, size: u64) -> Result<u64, HostMemError> {
        let bad = |reason| HostMemError::Pin { gpa, size, reason };
        if size == 0 || gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(bad("not a non-empty 4 KiB-aligned range"));
        }
        let last = gpa.checked_add(size - 1).ok_or(bad("overflows"))?;
        if !mem.address_in_range(GuestAddress(gpa)) || !mem.address_in_range(GuestAddress(last)) {
            return Err(bad("not inside the memory object"));
        }
        let pa = self.next_window;
        self.next_window = pa
            .checked_add(size.next_multiple_of(1 << 30))
            .ok_or(bad("out of window space"))?;
        self.windows.push(Window {
            pa,
            size,
            mem: mem.clone(),
            gpa,
            shared: vec![0; (size / PAGE_SIZE) as usize],
        });
        Ok(pa)
    }

    /// Unpins a window.
    pub fn unpin(&mut self, pa: u64) -> Result<(), HostMemError> {
        let i = self
            .windows
            .iter()
            .position(|w| w.pa == pa)
            .ok_or(HostMemError::Unbacked(pa))?;
        self.windows.remove(i);
        Ok(())
    }

    /// Reads physical memory for the TSM or a TVM (any state).
    pub fn read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.access(pa, buf.len(), false, |mem, off, range| match mem {
            Backing::Ram(page) => {
                match page {
                    Some(p) => buf[range.clone()].copy_from_slice(&p[off..off + range.len()]),
                    None => buf[range].fill(0),
                }
                Ok(())
            }
            Backing::User(m, a) => m
                .read_slice(&mut buf[range], GuestAddress(a))
                .map_err(|_| HostMemError::Unbacked(pa)),
        })
    }

    /// Writes physical memory for the TSM or a TVM (any state).
    pub fn write(&mut self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        let mut pos = 0usize;
        while pos < data.len() {
            let addr = pa
                .checked_add(pos as u64)
                .ok_or(HostMemError::Unbacked(pa))?;
            let off = (addr % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(data.len() - pos);
            let page = addr - off as u64;
            if self.index(page).is_some() {
                let p = self.data.entry(page).or_insert_with(|| Box::new([0; PAGE]));
                p[off..off + n].copy_from_slice(&data[pos..pos + n]);
            } else if let Some((w, woff)) = self.window(addr) {
                w.mem
                    .write_slice(&data[pos..pos + n], GuestAddress(w.gpa + woff))
                    .map_err(|_| HostMemError::Unbacked(addr))?;
            } else {
                return Err(HostMemError::Unbacked(addr));
            }
            pos += n;
        }
        Ok(())
    }

    fn access(
        &self,
        pa: u64,
        len: usize,
        _write: bool,
        mut f: impl FnMut(Backing<'_>, usize, std::ops::Range<usize>) -> Result<(), HostMemError>,
    ) -> Result<(), HostMemError> {
        let mut pos = 0usize;
        while pos < len {
            let addr = pa
                .checked_add(pos as u64)
                .ok_or(HostMemError::Unbacked(pa))?;
            let off = (addr % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(len - pos);
            let page = addr - off as u64;
            if self.index(page).is_some() {
                f(
                    Backing::Ram(self.data.get(&page).map(|b| &**b)),
                    off,
                    pos..pos + n,
                )?;
            } else if let Some((w, woff)) = self.window(addr) {
                f(Backing::User(&w.mem, w.gpa + woff), off, pos..pos + n)?;
            } else {
                return Err(HostMemError::Unbacked(addr));
            }
            pos += n;
        }
        Ok(())
    }

    /// Every RAM page with its state (completed conversions resolved), for invariant checks.
    pub fn pages(&self) -> impl Iterator<Item = (u64, PageState)> + '_ {
        (0..self.states.len() as u64).filter_map(move |i| {
            let pa = self.base + i * PAGE_SIZE;
            self.state(pa).map(|s| (pa, s))
        })
    }

    /// The number of host RAM pages.
    pub fn page_count(&self) -> usize {
        self.states.len()
    }

    /// The index of RAM page `pa` (page-aligned, inside RAM).
    pub fn page_index(&self, pa: u64) -> Option<usize> {
        self.index(pa)
    }

    /// The fence's current TLB version (what a conversion now records).
    pub fn fence_version(&self) -> u64 {
        self.fence.current()
    }

    /// Checks the share counts of pinned VMM memory against `refs` (shared mappings by host
    /// page, counted from the TVMs): every window page's count equals its mappings.
    pub fn check_window_shares(
        &self,
        refs: &std::collections::HashMap<u64, u32>,
    ) -> Result<(), String> {
        for w in &self.windows {
            for (i, &n) in w.shared.iter().enumerate() {
                let pa = w.pa + i as u64 * PAGE_SIZE;
                let want = refs.get(&pa).copied().unwrap_or(0);
                if n != want {
                    return Err(format!(
                        "pinned page {pa:#x} shared {n} times but mapped {want} times"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `pa` is a page of pinned VMM memory.
    pub fn is_pinned(&self, pa: u64) -> bool {
        self.window(pa).is_some()
    }

    /// Checks that the host may touch `[pa, pa + len)`: host or shared RAM, or pinned memory.
    pub fn check_host_access(&self, pa: u64, len: usize) -> Result<(), HostMemError> {
        let mut pos = 0u64;
        while pos < len as u64 {
            let addr = pa.checked_add(pos).ok_or(HostMemError::Unbacked(pa))?;
            let page = addr & !(PAGE_SIZE - 1);
            match self.state(page) {
                Some(PageState::Host | PageState::Shared(_)) => {}
                Some(_) => return Err(HostMemError::Confidential(page)),
                None if self.window(addr).is_some() => {}
                None => return Err(HostMemError::Unbacked(addr)),
            }
            pos = page + PAGE_SIZE - pa;
        }
        Ok(())
    }
}

enum Backing<'a> {
    Ram(Option<&'a [u8; PAGE]>),
    User(&'a GuestMemoryMmap, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_fence_reclaim_cycle_over_three_harts() {
        let mut m = PhysMem::new(0x8000_0000, 16, 3);
        let pa = 0x8000_1000;
        assert_eq!(m.convert(pa, 2, &[]), Ok(2));
        assert_eq!(m.state(pa), Some(PageState::Converting(0)));
        // Not fenced yet: neither assignable nor reclaimable.
        assert_eq!(m.reclaim(pa, 2), Err(SbiError::InvalidAddress));
        m.fence.initiate(0).unwrap();
        assert_eq!(m.fence.initiate(1), Err(SbiError::AlreadyStarted));
        m.fence.local(1).unwrap();
        assert_eq!(m.state(pa), Some(PageState::Converting(0)));
        m.fence.local(2).unwrap();
        assert_eq!(m.state(pa), Some(PageState::Converted));
        assert!(m.check_host_access(pa, 8).is_err());
        assert_eq!(m.confidential_pages(), 2);
        assert_eq!(m.reclaim(pa, 2), Ok(2));
        assert_eq!(m.confidential_pages(), 0);
        // Double convert of a page is refused, all-or-nothing.
        m.convert(pa, 1, &[]).unwrap();
        assert_eq!(
            m.convert(pa - 0x1000, 2, &[]),
            Err(SbiError::InvalidAddress)
        );
        assert_eq!(m.state(pa - 0x1000), Some(PageState::Host));
    }

    #[test]
    fn read_write_across_pages_and_windows() {
        let mut m = PhysMem::new(0x8000_0000, 4, 1);
        m.write(0x8000_0ffc, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let mut b = [0u8; 8];
        m.read(0x8000_0ffc, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(m.read(0x9000_0000, &mut b).is_err());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x1000_0000), 0x2000)]).unwrap();
        let w = m.pin(&mem, 0x1000_0000, 0x2000).unwrap();
        m.write(w + 0x1000, &[9; 4]).unwrap();
        let v: u32 = mem.read_obj(GuestAddress(0x1000_1000)).unwrap();
        assert_eq!(v, 0x0909_0909);
        m.unpin(w).unwrap();
        assert!(m.read(w, &mut b).is_err());
    }
}
