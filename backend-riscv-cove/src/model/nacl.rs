//! NACL, the nested-acceleration shared memory the TSM uses to pass exit information to the
//! host (riscv-sbi-doc `src/ext-nested-acceleration.adoc`; sbi-rs `src/nacl.rs`; spec/cove.md
//! §4.1, §5).
//!
//! Salus implements only PROBE_FEATURE (reporting no feature) and SET_SHMEM; SYNC_* are
//! NOT_SUPPORTED. Host writes to the CSR area are ignored. The shared memory is per physical
//! hart, 3 pages of non-confidential host memory.

use super::pages::{PageState, PhysMem};
use super::vcpu::{ExitReport, HostAnswer};
use crate::abi::{
    csr, nacl, nacl_csr_offset, nacl_gpr_offset, reg, SbiError, NACL_MODEL_INJECT_FAULT_OFFSET,
    NACL_SHMEM_PAGES, PAGE_SIZE,
};

/// Handles NACL FID `fid` from host hart `hart`; `shmem` is that hart's registration.
pub fn call(
    mem: &PhysMem,
    shmem: &mut Option<u64>,
    fid: u32,
    a: [u64; 6],
) -> Result<u64, SbiError> {
    match fid {
        // Salus reports no NACL feature; the error is always SUCCESS.
        nacl::PROBE_FEATURE => Ok(0),
        nacl::SET_SHMEM => {
            let (lo, hi, flags) = (a[0], a[1], a[2]);
            if lo == u64::MAX && hi == u64::MAX {
                *shmem = None;
                return Ok(0);
            }
            if flags != 0 || lo % PAGE_SIZE != 0 {
                return Err(SbiError::InvalidParam);
            }
            if hi != 0 {
                return Err(SbiError::InvalidAddress);
            }
            for p in PhysMem::range(lo, NACL_SHMEM_PAGES)? {
                if mem.state(p) != Some(PageState::Host) {
                    return Err(SbiError::InvalidAddress);
                }
            }
            *shmem = Some(lo);
            Ok(0)
        }
        _ => Err(SbiError::NotSupported),
    }
}

fn read_u64(mem: &PhysMem, pa: u64) -> u64 {
    let mut b = [0u8; 8];
    // The registration was checked; a failure reads as 0.
    let _ = mem.read(pa, &mut b);
    u64::from_le_bytes(b)
}

/// Reads the host's answer (scratch a0/a1 and the model inject flag).
pub fn read_answer(mem: &PhysMem, shmem: u64) -> HostAnswer {
    HostAnswer {
        a0: read_u64(mem, shmem + nacl_gpr_offset(reg::A0) as u64),
        a1: read_u64(mem, shmem + nacl_gpr_offset(reg::A1) as u64),
        inject_fault: read_u64(mem, shmem + NACL_MODEL_INJECT_FAULT_OFFSET as u64) != 0,
    }
}

/// Writes an exit into the NACL shared memory: htval and htinst on every exit (0 when not
/// applicable), vstimecmp, vsie and htimedelta always, and the scratch GPRs the exit names
/// (spec/cove.md §4.1). Clears the consumed scratch a0 and the inject flag first.
pub fn write_exit(
    mem: &mut PhysMem,
    shmem: u64,
    r: &ExitReport,
    vsie: u64,
) -> Result<(), SbiError> {
    let mut put = |off: usize, v: u64| {
        mem.write(shmem + off as u64, &v.to_le_bytes())
            .map_err(|_| SbiError::Failed)
    };
    put(NACL_MODEL_INJECT_FAULT_OFFSET, 0)?;
    put(nacl_gpr_offset(reg::A0), 0)?;
    put(nacl_csr_offset(csr::HTVAL), r.htval)?;
    put(nacl_csr_offset(csr::HTINST), r.htinst)?;
    put(nacl_csr_offset(csr::VSTIMECMP), u64::MAX)?;
    put(nacl_csr_offset(csr::VSIE), vsie)?;
    put(nacl_csr_offset(csr::HTIMEDELTA), 0)?;
    for &(g, v) in &r.gprs {
        put(nacl_gpr_offset(g), v)?;
    }
    Ok(())
}
