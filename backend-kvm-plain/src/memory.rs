//! Guest memory: one memslot and one backing object per region.
//!
//! | region | backing | registration |
//! |---|---|---|
//! | shared, writable, host has `GUEST_MEMFD_FLAG_MMAP \| INIT_SHARED` | a guest_memfd created with both flags, `mmap`ped `MAP_SHARED` | `KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`, `guest_memfd_offset = 0`, `userspace_addr` = that mapping |
//! | shared, otherwise, and every read-only region | a memfd, `mmap`ped `MAP_SHARED` | `KVM_SET_USER_MEMORY_REGION` (`KVM_MEM_READONLY` for read-only regions: the kernel refuses `KVM_MEM_READONLY` together with `KVM_MEM_GUEST_MEMFD`) |
//! | private (only where `KVM_CAP_MEMORY_ATTRIBUTES` has `PRIVATE`) | a guest_memfd without `MMAP` (never mapped) + an anonymous shared half | `KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`, then `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)` |
//!
//! Removal deletes the memslot (`memory_size = 0`), then drops the mapping (`munmap`) and the
//! fd (`close`); slot numbers are reused. Every failure path releases what it created: the
//! backing objects own their fds and mappings, so an early return drops them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use cvm_core::vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MemoryRegionAddress, MmapRegion,
};
use cvm_core::{Error, MemoryKind, MemoryRegion, RegionError, Result};
use kvm_bindings::{
    kvm_create_guest_memfd, kvm_userspace_memory_region, kvm_userspace_memory_region2,
    KVM_MEM_GUEST_MEMFD, KVM_MEM_READONLY,
};
use kvm_ioctls::VmFd;

use crate::probe::{HostCaps, GUEST_MEMFD_FLAG_INIT_SHARED, GUEST_MEMFD_FLAG_MMAP};

/// How a region is backed.
pub(crate) enum Backing {
    /// A guest_memfd created with `MMAP | INIT_SHARED`, mapped; the mapping's `FileOffset`
    /// owns the fd.
    GmemShared(Arc<GuestRegionMmap>),
    /// A memfd, mapped; the mapping owns the fd.
    Memfd(Arc<GuestRegionMmap>),
    /// A private guest_memfd (never mapped) and the anonymous shared half KVM uses for pages
    /// converted to shared.
    Private {
        /// The guest_memfd.
        gmem: File,
        /// The shared half: never read here, but KVM's `userspace_addr` points into it, so it
        /// lives as long as the memslot.
        #[allow(dead_code)]
        shared: Arc<GuestRegionMmap>,
    },
}

impl Backing {
    /// The host mapping the host may read and write (shared kinds only).
    pub(crate) fn host_mapping(&self) -> Option<&Arc<GuestRegionMmap>> {
        match self {
            Backing::GmemShared(m) | Backing::Memfd(m) => Some(m),
            Backing::Private { .. } => None,
        }
    }

    /// A short name for tracing and tests.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backing::GmemShared(_) => "guest_memfd(mmap,init_shared)",
            Backing::Memfd(_) => "memfd",
            Backing::Private { .. } => "guest_memfd(private)",
        }
    }
}

/// One registered memslot.
pub(crate) struct Slot {
    /// KVM slot number.
    pub slot: u32,
    /// The region it backs.
    pub region: MemoryRegion,
    /// The backing objects.
    pub backing: Backing,
}

impl Slot {
    /// Copies `bytes` to `gpa` (inside the slot) through the host mapping.
    pub(crate) fn write(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        let mem = self.backing.host_mapping().ok_or_else(|| {
            Error::Unsupported(
                "plain KVM cannot copy into private guest_memfd memory: the host has no mapping \
                 of it and KVM has no in-place populate ioctl for ordinary VMs"
                    .into(),
            )
        })?;
        mem.write_slice(bytes, MemoryRegionAddress(gpa - self.region.gpa))
            .map_err(|e| Error::InvalidArgument(format!("copy to {gpa:#x} failed: {e}")))
    }

    /// Reads `buf.len()` bytes at `gpa` (inside the slot) through the host mapping.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let mem = self
            .backing
            .host_mapping()
            .ok_or_else(|| Error::Unsupported("private memory has no host mapping".into()))?;
        mem.read_slice(buf, MemoryRegionAddress(gpa - self.region.gpa))
            .map_err(|e| Error::InvalidArgument(format!("read at {gpa:#x} failed: {e}")))
    }
}

/// The VM's memslots.
pub(crate) struct Memory {
    /// User regions by start address.
    slots: BTreeMap<u64, Slot>,
    /// The backend's hidden slot (x86 page tables, GDT, stacks), if any.
    hidden: Option<Slot>,
    /// Slot numbers in use.
    used: BTreeSet<u32>,
    /// `KVM_CAP_NR_MEMSLOTS`.
    max_slots: u32,
}

impl Memory {
    /// No slots yet.
    pub(crate) fn new(max_slots: u32) -> Self {
        Self {
            slots: BTreeMap::new(),
            hidden: None,
            used: BTreeSet::new(),
            max_slots: if max_slots == 0 { 32 } else { max_slots },
        }
    }

    fn alloc_slot(&self) -> Result<u32> {
        (0..self.max_slots)
            .find(|s| !self.used.contains(s))
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "all {} KVM memslots are in use (KVM_CAP_NR_MEMSLOTS)",
                    self.max_slots
                ))
            })
    }

    /// Backs and registers `region` (validated by the caller). Nothing is left behind on
    /// failure.
    pub(crate) fn add(&mut self, vm: &VmFd, caps: &HostCaps, region: &MemoryRegion) -> Result<()> {
        let slot = self.create(vm, caps, region)?;
        self.used.insert(slot.slot);
        tracing::debug!(
            slot = slot.slot,
            gpa = region.gpa,
            size = region.size,
            backing = slot.backing.name(),
            "memslot added"
        );
        self.slots.insert(region.gpa, slot);
        Ok(())
    }

    /// Backs and registers the hidden region at `gpa` (always shared and writable).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn add_hidden(
        &mut self,
        vm: &VmFd,
        caps: &HostCaps,
        gpa: u64,
        size: u64,
    ) -> Result<()> {
        let region = MemoryRegion::shared(gpa, size);
        let slot = self.create(vm, caps, &region)?;
        self.used.insert(slot.slot);
        self.hidden = Some(slot);
        Ok(())
    }

    /// The hidden slot.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn hidden(&self) -> Option<&Slot> {
        self.hidden.as_ref()
    }

    fn create(&self, vm: &VmFd, caps: &HostCaps, region: &MemoryRegion) -> Result<Slot> {
        let slot = self.alloc_slot()?;
        let size = usize::try_from(region.size).map_err(|_| {
            Error::InvalidArgument("region larger than the host address space".into())
        })?;
        match region.kind {
            MemoryKind::Private => {
                if !caps.private_memory() {
                    return Err(RegionError::KindUnsupported {
                        kind: MemoryKind::Private,
                        reason: caps.private_memory_missing(),
                    }
                    .into());
                }
                let gmem = create_gmem(vm, region.size, 0)?;
                let shared = Arc::new(anon_mapping(size, region.gpa)?);
                register2(vm, slot, region, shared.as_ptr() as u64, Some(&gmem))?;
                if let Err(e) = set_private(vm, region.gpa, region.size, true) {
                    // Undo the registration; the fd and mapping are dropped on return.
                    let _ = delete_slot(vm, slot);
                    return Err(e);
                }
                Ok(Slot {
                    slot,
                    region: *region,
                    backing: Backing::Private { gmem, shared },
                })
            }
            MemoryKind::Shared if caps.gmem_shared() && !region.read_only => {
                let gmem = create_gmem(
                    vm,
                    region.size,
                    GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED,
                )?;
                let mem = Arc::new(file_mapping(gmem, size, region.gpa)?);
                // The mapping's FileOffset owns the guest_memfd.
                let fd = mem.file_offset().map(|f| f.file().as_fd());
                register2_raw(vm, slot, region, mem.as_ptr() as u64, fd)?;
                Ok(Slot {
                    slot,
                    region: *region,
                    backing: Backing::GmemShared(mem),
                })
            }
            MemoryKind::Shared => {
                if region.read_only && !caps.readonly_mem {
                    return Err(Error::Unsupported(
                        "read-only regions need KVM_CAP_READONLY_MEM".into(),
                    ));
                }
                let fd = memfd(region.size)?;
                let mem = Arc::new(file_mapping(fd, size, region.gpa)?);
                let flags = if region.read_only {
                    KVM_MEM_READONLY
                } else {
                    0
                };
                let r = kvm_userspace_memory_region {
                    slot,
                    flags,
                    guest_phys_addr: region.gpa,
                    memory_size: region.size,
                    userspace_addr: mem.as_ptr() as u64,
                };
                // SAFETY: `userspace_addr` is a live MAP_SHARED mapping of `size` bytes owned by
                // `mem`, which the Slot keeps until the memslot is deleted.
                unsafe { vm.set_user_memory_region(r) }
                    .map_err(|e| Error::os("KVM_SET_USER_MEMORY_REGION", e))?;
                Ok(Slot {
                    slot,
                    region: *region,
                    backing: Backing::Memfd(mem),
                })
            }
        }
    }

    /// Deletes the slot of the region starting at `gpa`, then unmaps and closes its backing.
    /// On failure nothing changes.
    pub(crate) fn remove(&mut self, vm: &VmFd, gpa: u64) -> Result<MemoryRegion> {
        let slot = self.slots.get(&gpa).ok_or(RegionError::NotFound { gpa })?;
        delete_slot(vm, slot.slot)?;
        let number = slot.slot;
        self.used.remove(&number);
        let slot = self
            .slots
            .remove(&gpa)
            .ok_or(RegionError::NotFound { gpa })?;
        tracing::debug!(slot = number, gpa, "memslot removed");
        Ok(slot.region)
    }

    /// Deletes every slot (user and hidden) and releases the backings. Returns the first
    /// error but always drops everything.
    pub(crate) fn clear(&mut self, vm: &VmFd) -> Result<()> {
        let mut first = Ok(());
        let numbers: Vec<u32> = self
            .slots
            .values()
            .map(|s| s.slot)
            .chain(self.hidden.as_ref().map(|s| s.slot))
            .collect();
        for n in numbers {
            if let Err(e) = delete_slot(vm, n) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        // munmap after the slots are gone; KVM's MMU notifiers would cope either way.
        self.slots.clear();
        self.hidden = None;
        self.used.clear();
        first
    }

    /// The slot containing `[gpa, gpa + len)`.
    pub(crate) fn find(&self, gpa: u64, len: u64) -> Option<&Slot> {
        self.slots
            .range(..=gpa)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| s.region.contains(gpa, len))
    }

    /// User slots overlapping `[gpa, gpa + len)`.
    pub(crate) fn overlapping(&self, gpa: u64, len: u64) -> impl Iterator<Item = &Slot> {
        let end = gpa.saturating_add(len);
        self.slots
            .values()
            .filter(move |s| s.region.gpa < end && gpa < s.region.end())
    }

    /// The shared, host-mapped user regions as vm-memory (private and hidden never appear).
    pub(crate) fn shared_memory(&self) -> GuestMemoryMmap {
        let regions: Vec<Arc<GuestRegionMmap>> = self
            .slots
            .values()
            .filter_map(|s| s.backing.host_mapping().cloned())
            .collect();
        if regions.is_empty() {
            return GuestMemoryMmap::new();
        }
        GuestMemoryMmap::from_arc_regions(regions).unwrap_or_default()
    }
}

/// `KVM_CREATE_GUEST_MEMFD` of `size` bytes with `flags`; the fd is marked close-on-exec.
fn create_gmem(vm: &VmFd, size: u64, flags: u64) -> Result<File> {
    let raw = vm
        .create_guest_memfd(kvm_create_guest_memfd {
            size,
            flags,
            ..Default::default()
        })
        .map_err(|e| Error::os("KVM_CREATE_GUEST_MEMFD", e))?;
    // SAFETY: KVM_CREATE_GUEST_MEMFD returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fcntl on an fd we own; F_SETFD with FD_CLOEXEC touches no memory.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(File::from(fd))
}

/// `memfd_create` + `ftruncate(size)`.
fn memfd(size: u64) -> Result<File> {
    // SAFETY: the name is a NUL-terminated C string literal; flags are valid.
    let raw = unsafe { libc::memfd_create(c"cvm-kvm-plain".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::os("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.set_len(size).map_err(|e| Error::os("ftruncate", e))?;
    Ok(file)
}

/// `mmap(MAP_SHARED, PROT_READ | PROT_WRITE)` of `file` as a vm-memory region at `gpa`.
fn file_mapping(file: File, size: usize, gpa: u64) -> Result<GuestRegionMmap> {
    let mmap = MmapRegion::from_file(FileOffset::new(file, 0), size)
        .map_err(|e| Error::os("mmap", std::io::Error::other(e.to_string())))?;
    GuestRegionMmap::new(mmap, GuestAddress(gpa))
        .ok_or_else(|| Error::InvalidArgument(format!("region at {gpa:#x} overflows")))
}

/// An anonymous shared mapping of `size` bytes at `gpa`.
fn anon_mapping(size: usize, gpa: u64) -> Result<GuestRegionMmap> {
    let mmap = MmapRegion::new(size)
        .map_err(|e| Error::os("mmap", std::io::Error::other(e.to_string())))?;
    GuestRegionMmap::new(mmap, GuestAddress(gpa))
        .ok_or_else(|| Error::InvalidArgument(format!("region at {gpa:#x} overflows")))
}

fn register2(
    vm: &VmFd,
    slot: u32,
    region: &MemoryRegion,
    uaddr: u64,
    gmem: Option<&File>,
) -> Result<()> {
    register2_raw(vm, slot, region, uaddr, gmem.map(|f| f.as_fd()))
}

/// `KVM_SET_USER_MEMORY_REGION2` for `region` in `slot`, guest_memfd-backed when `gmem` is set.
fn register2_raw(
    vm: &VmFd,
    slot: u32,
    region: &MemoryRegion,
    uaddr: u64,
    gmem: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<()> {
    let (flags, fd) = match gmem {
        Some(fd) => (
            KVM_MEM_GUEST_MEMFD,
            u32::try_from(fd.as_raw_fd()).map_err(|_| Error::InvalidArgument("bad fd".into()))?,
        ),
        None => (0, 0),
    };
    let r = kvm_userspace_memory_region2 {
        slot,
        flags,
        guest_phys_addr: region.gpa,
        memory_size: region.size,
        userspace_addr: uaddr,
        guest_memfd_offset: 0,
        guest_memfd: fd,
        ..Default::default()
    };
    // SAFETY: `uaddr` is a live mapping of `region.size` bytes and `fd` a guest_memfd created on
    // this VM, both owned by the Slot that is kept until the memslot is deleted.
    unsafe { vm.set_user_memory_region2(r) }
        .map_err(|e| Error::os("KVM_SET_USER_MEMORY_REGION2", e))
}

/// Deletes memslot `slot` (`KVM_SET_USER_MEMORY_REGION` with `memory_size = 0`).
fn delete_slot(vm: &VmFd, slot: u32) -> Result<()> {
    let r = kvm_userspace_memory_region {
        slot,
        ..Default::default()
    };
    // SAFETY: deleting a slot passes no user memory to KVM.
    unsafe { vm.set_user_memory_region(r) }
        .map_err(|e| Error::os("KVM_SET_USER_MEMORY_REGION(delete)", e))
}

/// `KVM_SET_MEMORY_ATTRIBUTES`: PRIVATE on (`private`) or off over `[gpa, gpa + size)`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn set_private(vm: &VmFd, gpa: u64, size: u64, private: bool) -> Result<()> {
    let attributes = if private {
        u64::from(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE)
    } else {
        0
    };
    vm.set_memory_attributes(kvm_bindings::kvm_memory_attributes {
        address: gpa,
        size,
        attributes,
        flags: 0,
    })
    .map_err(|e| Error::os("KVM_SET_MEMORY_ATTRIBUTES", e))
}

/// `KVM_SET_MEMORY_ATTRIBUTES` does not exist on this architecture in kvm-ioctls.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn set_private(_vm: &VmFd, _gpa: u64, _size: u64, _private: bool) -> Result<()> {
    Err(Error::Unsupported(
        "KVM_SET_MEMORY_ATTRIBUTES is not available on this architecture".into(),
    ))
}

/// Frees the guest_memfd pages behind `[offset, offset + len)` of a private region
/// (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), after they became shared.
pub(crate) fn punch_hole(gmem: &File, offset: u64, len: u64) -> Result<()> {
    let (off, len) = match (i64::try_from(offset), i64::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(Error::InvalidArgument("range beyond off_t".into())),
    };
    // SAFETY: fallocate on an fd we own; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            gmem.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    if r != 0 {
        return Err(Error::os(
            "fallocate(PUNCH_HOLE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    #[test]
    fn slot_numbers_are_reused_and_failures_leave_nothing() {
        let kvm = match Kvm::new() {
            Ok(k) => k,
            Err(e) if std::env::var("CVM_REQUIRE_KVM").as_deref() != Ok("1") => {
                println!("skipped: {e}");
                return;
            }
            Err(e) => panic!("CVM_REQUIRE_KVM=1 but /dev/kvm: {e}"),
        };
        let vm = kvm.create_vm().unwrap();
        let caps = HostCaps::read(&kvm);
        let mut m = Memory::new(caps.nr_memslots);
        for i in 0..3u64 {
            m.add(&vm, &caps, &MemoryRegion::shared(i * 0x1000, 0x1000))
                .unwrap();
        }
        assert_eq!(m.slots[&0x1000].slot, 1);
        m.remove(&vm, 0x1000).unwrap();
        m.add(&vm, &caps, &MemoryRegion::shared(0x10_0000, 0x1000))
            .unwrap();
        assert_eq!(m.slots[&0x10_0000].slot, 1, "the freed slot is reused");
        // KVM refuses an overlapping memslot: the error leaves no slot number taken.
        let used = m.used.len();
        assert!(m
            .add(&vm, &caps, &MemoryRegion::shared(0x10_0000, 0x1000))
            .is_err());
        assert_eq!(m.used.len(), used);
        m.clear(&vm).unwrap();
        assert!(m.used.is_empty() && m.slots.is_empty());
    }
}
