//! Guest memory regions and their validation.
//!
//! Private memory is guest_memfd-style: an object the host does not map, whose bytes no cvm API
//! returns. Shared memory is handed to the VMM as vm-memory regions, so rust-vmm device crates
//! read and write it unchanged.

use serde::{Deserialize, Serialize};

/// The 4 KiB granule every region and conversion is aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// Who may access a region's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// Guest-private: the host has no mapping (realm RAM / TVM confidential memory / guest_memfd private).
    Private,
    /// Shared with the host (unprotected IPA / shared TVM pages / ordinary memslot).
    Shared,
}

/// A guest-physical memory region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemoryRegion {
    /// First guest-physical address, 4 KiB aligned.
    pub gpa: u64,
    /// Size in bytes, a non-zero multiple of 4 KiB.
    pub size: u64,
    /// Private or shared.
    pub kind: MemoryKind,
    /// Whether the guest may only read it (refused on confidential VMs).
    #[serde(default)]
    pub read_only: bool,
}

impl MemoryRegion {
    /// A private, writable region.
    pub fn private(gpa: u64, size: u64) -> Self {
        Self {
            gpa,
            size,
            kind: MemoryKind::Private,
            read_only: false,
        }
    }

    /// A shared, writable region.
    pub fn shared(gpa: u64, size: u64) -> Self {
        Self {
            gpa,
            size,
            kind: MemoryKind::Shared,
            read_only: false,
        }
    }

    /// One past the last address (saturating; validated regions never overflow).
    pub fn end(&self) -> u64 {
        self.gpa.saturating_add(self.size)
    }

    /// Whether `[gpa, gpa + len)` lies inside the region.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.gpa && gpa.checked_add(len).is_some_and(|e| e <= self.end())
    }
}

/// Why a region was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// Address or size not a multiple of 4 KiB.
    #[error("region {gpa:#x}+{size:#x} is not 4 KiB aligned")]
    Misaligned {
        /// Start.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// Size zero.
    #[error("region at {gpa:#x} has zero size")]
    Empty {
        /// Start.
        gpa: u64,
    },
    /// `gpa + size` overflows.
    #[error("region {gpa:#x}+{size:#x} overflows the address space")]
    Overflow {
        /// Start.
        gpa: u64,
        /// Size.
        size: u64,
    },
    /// The region ends above what the VM can address.
    #[error("region {gpa:#x}+{size:#x} ends beyond the VM's {bits}-bit address space")]
    BeyondAddressWidth {
        /// Start.
        gpa: u64,
        /// Size.
        size: u64,
        /// The usable guest-physical address width.
        bits: u8,
    },
    /// Overlaps an existing region.
    #[error("region {gpa:#x}+{size:#x} overlaps the region at {existing:#x}")]
    Overlap {
        /// Start.
        gpa: u64,
        /// Size.
        size: u64,
        /// Start of the region it overlaps.
        existing: u64,
    },
    /// No region starts at this address.
    #[error("no region starts at {gpa:#x}")]
    NotFound {
        /// The address asked for.
        gpa: u64,
    },
    /// Read-only regions cannot be given to a confidential VM.
    #[error("read-only regions are refused on confidential VMs")]
    ReadOnlyConfidential,
    /// The backend cannot back this kind of region on this host.
    #[error("{kind:?} memory is not supported: {reason}")]
    KindUnsupported {
        /// The refused kind.
        kind: MemoryKind,
        /// What is missing.
        reason: String,
    },
}

/// The validated, non-overlapping set of a VM's regions, sorted by address.
#[derive(Debug, Clone, Default)]
pub struct RegionSet {
    regions: Vec<MemoryRegion>,
}

impl RegionSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks `region` against alignment, size, overflow, the `addr_bits`-wide address space and
    /// the existing regions, without changing anything.
    pub fn validate(&self, region: &MemoryRegion, addr_bits: u8) -> Result<(), RegionError> {
        let MemoryRegion { gpa, size, .. } = *region;
        if size == 0 {
            return Err(RegionError::Empty { gpa });
        }
        if gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
            return Err(RegionError::Misaligned { gpa, size });
        }
        let end = gpa
            .checked_add(size)
            .ok_or(RegionError::Overflow { gpa, size })?;
        let limit = 1u128 << addr_bits.min(64);
        if u128::from(end) > limit {
            return Err(RegionError::BeyondAddressWidth {
                gpa,
                size,
                bits: addr_bits,
            });
        }
        if let Some(existing) = self.regions.iter().find(|r| gpa < r.end() && r.gpa < end) {
            return Err(RegionError::Overlap {
                gpa,
                size,
                existing: existing.gpa,
            });
        }
        Ok(())
    }

    /// Adds a region that [`RegionSet::validate`] accepted.
    pub fn insert(&mut self, region: MemoryRegion) {
        let at = self.regions.partition_point(|r| r.gpa < region.gpa);
        self.regions.insert(at, region);
    }

    /// Removes and returns the region starting at `gpa`.
    pub fn remove(&mut self, gpa: u64) -> Result<MemoryRegion, RegionError> {
        let at = self
            .regions
            .iter()
            .position(|r| r.gpa == gpa)
            .ok_or(RegionError::NotFound { gpa })?;
        Ok(self.regions.remove(at))
    }

    /// The region starting at `gpa`.
    pub fn get(&self, gpa: u64) -> Option<&MemoryRegion> {
        self.regions.iter().find(|r| r.gpa == gpa)
    }

    /// The region containing all of `[gpa, gpa + len)`.
    pub fn find(&self, gpa: u64, len: u64) -> Option<&MemoryRegion> {
        self.regions.iter().find(|r| r.contains(gpa, len))
    }

    /// All regions, ascending.
    pub fn iter(&self) -> impl Iterator<Item = &MemoryRegion> {
        self.regions.iter()
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

/// Checks that `[gpa, gpa + size)` is a non-empty, page-aligned, non-overflowing range.
pub fn check_range(gpa: u64, size: u64) -> Result<(), RegionError> {
    if size == 0 {
        return Err(RegionError::Empty { gpa });
    }
    if gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 {
        return Err(RegionError::Misaligned { gpa, size });
    }
    gpa.checked_add(size)
        .map(|_| ())
        .ok_or(RegionError::Overflow { gpa, size })
}
