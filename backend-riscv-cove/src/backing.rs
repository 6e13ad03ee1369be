//! The VMM's host-side memory behind a private region: the memslot's user pages.
//!
//! In the RFC host a TVM memslot is ordinary VMM memory (a `userspace_addr` range). Pages the
//! guest keeps private never use it in this host flow (they come from the converted page
//! pool, see [`crate::host`]), but pages the guest **shares** are these user pages: on an
//! accepted COVG SHARE_MEMORY the host pins the user page and maps it into the TVM with
//! TVM_ADD_SHARED_PAGES on the next fault (RFC 41/48 `vcpu_sbi_covg.c`, spec/cove.md §4.3),
//! so guest and VMM see the same bytes.
//!
//! [`UserBacking`] is that memory: one anonymous file per region (a memfd on Linux) of the
//! region's size. [`UserBacking::whole`] maps all of it for pinning (the TSM's view);
//! [`UserBacking::view`] maps one guest-shared run of it again at its guest address, so the
//! VMM's `shared_memory()` shows exactly the pages that are shared, and a view the VMM keeps
//! after an UNSHARE still points at its own memory (the backing stays the VMM's), never at
//! confidential memory.

use std::fs::File;
use std::sync::Arc;

use cvm_core::vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};
use cvm_core::{Error, Result};

/// The user pages of one private region.
#[derive(Debug, Clone)]
pub(crate) struct UserBacking {
    file: Arc<File>,
    gpa: u64,
    size: u64,
}

impl UserBacking {
    /// A zero-filled backing for `[gpa, gpa + size)` (sparse: nothing is allocated until
    /// written).
    pub(crate) fn new(gpa: u64, size: u64) -> Result<Self> {
        let file = anon_file(size).map_err(|e| Error::os("memfd_create", e))?;
        Ok(Self {
            file: Arc::new(file),
            gpa,
            size,
        })
    }

    fn mapping(&self, gpa: u64, len: u64) -> Result<GuestRegionMmap> {
        let in_range = gpa >= self.gpa
            && gpa
                .checked_add(len)
                .is_some_and(|end| end <= self.gpa + self.size);
        if !in_range || len == 0 {
            return Err(Error::InvalidArgument(format!(
                "{gpa:#x}+{len:#x} is outside the backing {:#x}+{:#x}",
                self.gpa, self.size
            )));
        }
        let size = usize::try_from(len)
            .map_err(|_| Error::InvalidArgument(format!("{len:#x} bytes do not fit usize")))?;
        GuestRegionMmap::from_range(
            GuestAddress(gpa),
            size,
            Some(FileOffset::from_arc(Arc::clone(&self.file), gpa - self.gpa)),
        )
        .map_err(|e| Error::os("mmap", std::io::Error::other(e.to_string())))
    }

    /// The whole backing, mapped at the region's guest address (what the host pins).
    pub(crate) fn whole(&self) -> Result<GuestMemoryMmap> {
        let region = self.mapping(self.gpa, self.size)?;
        GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| Error::InvalidArgument(format!("backing mapping: {e}")))
    }

    /// A separate mapping of `[gpa, gpa + len)` of the backing, at that guest address.
    pub(crate) fn view(&self, gpa: u64, len: u64) -> Result<Arc<GuestRegionMmap>> {
        self.mapping(gpa, len).map(Arc::new)
    }
}

/// An anonymous, sized, shareable file: `memfd_create(MFD_CLOEXEC)` on Linux.
#[cfg(target_os = "linux")]
fn anon_file(size: u64) -> std::io::Result<File> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: the name is a NUL-terminated C string literal and the flags are valid;
    // memfd_create has no other preconditions.
    let raw = unsafe { libc::memfd_create(c"cvm-cove-user-pages".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.set_len(size)?;
    Ok(file)
}

/// An anonymous, sized, shareable file: an unlinked temporary file elsewhere.
#[cfg(not(target_os = "linux"))]
fn anon_file(size: u64) -> std::io::Result<File> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "cvm-cove-user-pages-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    file.set_len(size)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cvm_core::vm_memory::{Bytes, GuestMemoryRegion, MemoryRegionAddress};

    #[test]
    fn views_alias_the_whole_mapping() {
        let b = UserBacking::new(0x8000_0000, 0x4000).unwrap();
        let whole = b.whole().unwrap();
        whole
            .write_obj(0x1122_3344u32, GuestAddress(0x8000_2008))
            .unwrap();
        let v = b.view(0x8000_2000, 0x1000).unwrap();
        assert_eq!(v.start_addr(), GuestAddress(0x8000_2000));
        let x: u32 = v.read_obj(MemoryRegionAddress(8)).unwrap();
        assert_eq!(x, 0x1122_3344);
        v.write_obj(7u8, MemoryRegionAddress(0)).unwrap();
        let y: u8 = whole.read_obj(GuestAddress(0x8000_2000)).unwrap();
        assert_eq!(y, 7);
        assert!(b.view(0x8000_4000, 0x1000).is_err());
        assert!(b.view(0x7fff_f000, 0x1000).is_err());
    }
}
