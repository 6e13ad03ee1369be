//! The boundary between the host flow ([`crate::host`]) and a TSM: trait [`Covh`].
//!
//! A host kernel talks to the TSM with SBI ECALLs from one of its harts (COVH, COVI, NACL —
//! spec/cove.md §1) and otherwise only touches its own physical memory. [`Covh`] is exactly
//! that: [`Covh::ecall`] plus the host's view of physical memory and of its own trap CSRs
//! (Salus writes the TVM exit's `scause`/`stval` into the host's CSRs, spec/cove.md §4.1).
//! The in-process model ([`crate::model::TsmModel`]) implements it; a wrapper can implement
//! it to inject failures (see the tests).

use cvm_core::vm_memory::GuestMemoryMmap;

use crate::abi::SbiRet;

/// The host's own trap CSRs after a TVM_VCPU_RUN returned on a hart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrapCsrs {
    /// scause of the TVM exit (interrupt exits have bit 63 set).
    pub scause: u64,
    /// stval of the TVM exit.
    pub stval: u64,
}

/// Why the host could not access a physical address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostMemError {
    /// The page is confidential (converting, converted or assigned to a TVM): the host's
    /// stage-2 mapping is gone (spec/cove.md §2.2 "page unmapped from host stage-2").
    #[error("host access to confidential page {0:#x}")]
    Confidential(u64),
    /// Nothing is at that address.
    #[error("no host memory at {0:#x}")]
    Unbacked(u64),
    /// The user memory to pin is not inside the given vm-memory object.
    #[error("cannot pin user memory {gpa:#x}+{size:#x}: {reason}")]
    Pin {
        /// Start (in the vm-memory object's address space).
        gpa: u64,
        /// Length.
        size: u64,
        /// Why.
        reason: &'static str,
    },
}

/// A TSM as seen from the host kernel.
pub trait Covh: Send + Sync {
    /// Number of physical harts (fences must reach every one).
    fn harts(&self) -> usize;
    /// The host RAM `(base, size)` the host's page allocator manages (4 KiB aligned).
    fn host_ram(&self) -> (u64, u64);
    /// One SBI ECALL from host hart `hart`: a7 = `eid`, a6 = `fid`, a0..a5 = `args`.
    fn ecall(&self, hart: usize, eid: u32, fid: u32, args: [u64; 6]) -> SbiRet;
    /// The host's `scause`/`stval` on `hart` (written by TVM_VCPU_RUN).
    fn trap_csrs(&self, hart: usize) -> TrapCsrs;
    /// A host load from its own physical memory.
    fn host_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError>;
    /// A host store to its own physical memory.
    fn host_write(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError>;
    /// Pins `size` bytes of VMM memory at `gpa` of `mem` (the RFC's `pin_user_pages`) and
    /// returns the host physical address they now have.
    fn pin_user_memory(
        &self,
        mem: &GuestMemoryMmap,
        gpa: u64,
        size: u64,
    ) -> Result<u64, HostMemError>;
    /// Unpins what [`Covh::pin_user_memory`] returned.
    fn unpin_user_memory(&self, pa: u64) -> Result<(), HostMemError>;
}
