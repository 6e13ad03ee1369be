//! COVI, TVM interrupts over AIA (RFC 26/48; sbi-rs `src/cove_interrupt.rs`; spec/cove.md
//! §1.4).
//!
//! The model keeps the AIA parameters, per-vCPU IMSIC address and binding, and queues
//! injected external interrupts; an interrupt is injected only if the TVM allowed its id
//! (COVG ALLOW_EXT_INTERRUPT; all denied at start, spec-2023 FID 4) and is delivered into the
//! guest as a supervisor external interrupt on the next TVM_VCPU_RUN that finds it enabled.
//! IMSIC guest-interrupt files themselves are not modelled: CONVERT/RECLAIM_IMSIC move a host
//! page through the same states as TSM_CONVERT/RECLAIM_PAGES; REBIND is NOT_SUPPORTED.

use zerocopy::FromBytes;

use super::pages::PhysMem;
use super::tvm::{Tvm, TvmState};
use crate::abi::{covi, SbiError, TvmAiaParams, PAGE_SIZE};

/// Bytes of `sbi_cove_tvm_aia_params` the TSM reads (u64 + 5 × u32).
const AIA_PARAMS_LEN: u64 = 28;

/// Handles COVI calls that name a TVM (`a[0]` = guest id).
pub fn call(tvm: &mut Tvm, mem: &mut PhysMem, fid: u32, a: [u64; 6]) -> Result<u64, SbiError> {
    match fid {
        covi::TVM_AIA_INIT => {
            if tvm.state != TvmState::Initializing || tvm.aia.is_some() {
                return Err(SbiError::InvalidParam);
            }
            if a[2] < AIA_PARAMS_LEN {
                return Err(SbiError::InvalidParam);
            }
            let mut buf = [0u8; 32];
            mem.check_host_access(a[1], AIA_PARAMS_LEN as usize)
                .map_err(|_| SbiError::InvalidAddress)?;
            mem.read(a[1], &mut buf[..AIA_PARAMS_LEN as usize])
                .map_err(|_| SbiError::InvalidAddress)?;
            let p = TvmAiaParams::read_from_bytes(&buf).map_err(|_| SbiError::InvalidParam)?;
            // RFC 26/48: group_index_shift ≥ 24.
            if p.group_index_shift < 24 || p.imsic_base_addr % PAGE_SIZE != 0 {
                return Err(SbiError::InvalidParam);
            }
            tvm.aia = Some(p);
            Ok(0)
        }
        covi::TVM_CPU_SET_IMSIC_ADDR => {
            if tvm.aia.is_none() || a[2] % PAGE_SIZE != 0 {
                return Err(SbiError::InvalidParam);
            }
            let v = tvm.vcpus.get_mut(&a[1]).ok_or(SbiError::InvalidParam)?;
            v.imsic_gpa = Some(a[2]);
            Ok(0)
        }
        covi::TVM_CPU_BIND_IMSIC => {
            let v = tvm.vcpus.get_mut(&a[1]).ok_or(SbiError::InvalidParam)?;
            if v.imsic_gpa.is_none() {
                return Err(SbiError::InvalidParam);
            }
            v.bound = true;
            Ok(0)
        }
        covi::TVM_CPU_UNBIND_IMSIC_BEGIN | covi::TVM_CPU_UNBIND_IMSIC_END => {
            let v = tvm.vcpus.get_mut(&a[1]).ok_or(SbiError::InvalidParam)?;
            if fid == covi::TVM_CPU_UNBIND_IMSIC_END {
                v.bound = false;
            }
            Ok(0)
        }
        covi::TVM_CPU_INJECT_EXT_INTERRUPT => {
            if tvm.state != TvmState::Runnable {
                return Err(SbiError::InvalidParam);
            }
            let allowed = tvm.ext_irq.allows(a[2]);
            let v = tvm.vcpus.get_mut(&a[1]).ok_or(SbiError::InvalidParam)?;
            if !v.bound {
                return Err(SbiError::InvalidState);
            }
            // Model choice: an id the TVM has not allowed is refused with DENIED (the TSM
            // "only injects interrupts the TVM has allowed", spec-2023 COVG FID 4).
            if !allowed {
                return Err(SbiError::Denied);
            }
            v.ext_pending.insert(a[2]);
            Ok(0)
        }
        _ => Err(SbiError::NotSupported),
    }
}
