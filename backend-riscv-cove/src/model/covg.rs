//! COVG, the TVM's guest ABI (RFC 37/48; Salus `src/vm.rs`; sbi-rs `src/cove_guest.rs`;
//! spec/cove.md §1.5).
//!
//! * ADD/REMOVE_MMIO_REGION: only registered regions are emulated MMIO; other unmapped
//!   accesses are faults (Salus `MEMORY.md`, spec/cove.md §4.2).
//! * SHARE/UNSHARE_MEMORY: forwarded to the host, which accepts (scratch a0 = 0) or rejects
//!   on the next TVM_VCPU_RUN (Salus `complete_pending_ecall`).
//! * ALLOW/DENY_EXT_INTERRUPT: all external interrupts are denied at start (spec-2023 FID 4).

use super::tvm::{RegionKind, Tvm};
use super::vcpu::{Ecall, Pending, VcpuState};
use crate::abi::{covg, SbiError, PAGE_SIZE};

/// Handles COVG FID `fid` with arguments `a`.
pub(crate) fn handle(tvm: &mut Tvm, _v: &mut VcpuState, fid: u32, a: [u64; 6]) -> Ecall {
    match fid {
        covg::ADD_MMIO_REGION => {
            Ecall::Ret(tvm.add_region(a[0], a[1], RegionKind::Mmio).map(|_| 0))
        }
        covg::REMOVE_MMIO_REGION => {
            Ecall::Ret(tvm.remove_region(a[0], a[1], RegionKind::Mmio).map(|_| 0))
        }
        covg::SHARE_MEMORY => match check_share(tvm, a[0], a[1], true) {
            Ok(()) => Ecall::Forward(Pending::Share {
                gpa: a[0],
                len: a[1],
                share: true,
            }),
            Err(e) => Ecall::Ret(Err(e)),
        },
        covg::UNSHARE_MEMORY => match check_share(tvm, a[0], a[1], false) {
            Ok(()) => Ecall::Forward(Pending::Share {
                gpa: a[0],
                len: a[1],
                share: false,
            }),
            Err(e) => Ecall::Ret(Err(e)),
        },
        covg::ALLOW_EXT_INTERRUPT => {
            tvm.ext_irq.allow(a[0]);
            Ecall::Ret(Ok(0))
        }
        covg::DENY_EXT_INTERRUPT => {
            tvm.ext_irq.deny(a[0]);
            Ecall::Ret(Ok(0))
        }
        // spec-2023/spec-now attestation FIDs 6..10: Salus implements attestation in ATST.
        _ => Ecall::Ret(Err(SbiError::NotSupported)),
    }
}

/// The run of `[pos, end)` that starts at `pos` and lies in one region (`Some(kind)`) or in
/// no region (`None`): `(run end, kind)`. Walking a guest range run by run instead of page by
/// page keeps the TSM's work proportional to the number of regions, not to the length the
/// guest asked for (a guest-chosen length of 2^49 bytes must not stall the TSM).
fn run_at(tvm: &Tvm, pos: u64, end: u64) -> (u64, Option<RegionKind>) {
    match tvm.region_of(pos, PAGE_SIZE) {
        Some(r) => ((r.gpa + r.len).min(end), Some(r.kind)),
        None => {
            let next = tvm
                .regions
                .iter()
                .map(|r| r.gpa)
                .filter(|&g| g > pos)
                .min()
                .unwrap_or(end);
            (next.min(end), None)
        }
    }
}

/// SHARE: every page confidential or outside any region (memory the host provides as shared,
/// which the TVM now declares shared); UNSHARE: every page in a shared region.
fn check_share(tvm: &Tvm, gpa: u64, len: u64, share: bool) -> Result<(), SbiError> {
    let end = Tvm::check_gpa_range(gpa, len)?;
    let mut p = gpa;
    while p < end {
        let (next, kind) = run_at(tvm, p, end);
        let ok = if share {
            matches!(kind, None | Some(RegionKind::Confidential))
        } else {
            kind == Some(RegionKind::Shared)
        };
        if !ok {
            return Err(SbiError::InvalidAddress);
        }
        p = next;
    }
    Ok(())
}

/// Applies an accepted SHARE/UNSHARE to the TVM's regions: all or nothing. The range is
/// checked again first, since another vCPU may have changed the regions (e.g. added an MMIO
/// region) between the forward and the host's answer; once it passes, every step below
/// succeeds.
pub(crate) fn apply_share(tvm: &mut Tvm, gpa: u64, len: u64, share: bool) -> Result<(), SbiError> {
    check_share(tvm, gpa, len, share)?;
    if share {
        let end = Tvm::check_gpa_range(gpa, len)?;
        // Confidential parts are retyped; unclaimed parts become new shared regions.
        let mut p = gpa;
        while p < end {
            let (next, kind) = run_at(tvm, p, end);
            if kind.is_some() {
                tvm.retype(p, next - p, RegionKind::Confidential, RegionKind::Shared)?;
            } else {
                tvm.add_region(p, next - p, RegionKind::Shared)?;
            }
            p = next;
        }
        Ok(())
    } else {
        tvm.retype(gpa, len, RegionKind::Shared, RegionKind::Confidential)
    }
}
