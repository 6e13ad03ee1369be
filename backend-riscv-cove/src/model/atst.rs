//! ATST, Salus' attestation extension (sbi-rs `src/attestation.rs`; spec/cove.md §1.5, §3.2).
//!
//! GetCapabilities, ExtendMeasurement (48-byte value into a runtime PCR 17..20) and
//! ReadMeasurement (48 bytes of a TCG PCR into a guest buffer). GetEvidence (an X.509
//! certificate signed with a DICE-derived key) is not modelled: NOT_SUPPORTED.
//!
//! A guest buffer that is not mapped yet (private RAM populated on demand) makes the TSM
//! report a guest page fault for it; the host maps it and the ECALL is executed again.

use cvm_core::{Content, MeasurementEvent};
use zerocopy::IntoBytes;

use super::pages::PhysMem;
use super::tvm::{RegionKind, Tvm};
use super::vcpu::Ecall;
use crate::abi::{atst, AttestationCapabilities, MeasurementRegisterDescriptor, SbiError};
use crate::measure::{is_runtime_pcr, record, MEASUREMENT_LEN, PCR_INDICES};

/// How many runtime extensions (ATST ExtendMeasurement) a TVM's inspection log records; later
/// ones still extend the registers but are only counted (`Tvm::runtime_extends`).
pub const MAX_LOGGED_RUNTIME_EXTENDS: u64 = 1024;

/// Salus' capabilities: tcb_svn 0xdeadbeef, SHA-384, DiceTcbInfo, 4 static + 4 runtime
/// registers in `TVM_MSMT_REGISTERS` order.
pub fn capabilities() -> AttestationCapabilities {
    let mut regs = [MeasurementRegisterDescriptor::default(); 32];
    for (i, (slot, pcr)) in regs.iter_mut().zip(PCR_INDICES).enumerate() {
        *slot = MeasurementRegisterDescriptor {
            tcb_layer: 1,
            fwid_index: i as u8,
            tcg_pcr_index: pcr,
            runtime: u8::from(is_runtime_pcr(pcr)),
        };
    }
    AttestationCapabilities {
        tcb_svn: 0xdead_beef,
        hash_algorithm: 1,
        evidence_formats: 1,
        static_measurements: 4,
        runtime_measurements: 4,
        msmt_regs: regs,
    }
}

fn fault(tvm: &Tvm, page: u64, store: bool) -> Ecall {
    match tvm.region_of(page, 1).map(|r| r.kind) {
        Some(RegionKind::Confidential | RegionKind::Shared) => {
            Ecall::PageFault { gpa: page, store }
        }
        _ => Ecall::Ret(Err(SbiError::InvalidAddress)),
    }
}

/// Handles ATST FID `fid`.
pub(crate) fn handle(tvm: &mut Tvm, mem: &mut PhysMem, fid: u32, a: [u64; 6]) -> Ecall {
    match fid {
        atst::GET_CAPABILITIES => {
            let caps = capabilities();
            let bytes = caps.as_bytes();
            if a[1] < bytes.len() as u64 {
                // sbi-rs InsufficientBufferCapacity (-9; ratified SBI_ERR_NO_SHMEM).
                return Ecall::Ret(Err(SbiError::NoShmem));
            }
            match tvm.guest_write(mem, a[0], bytes) {
                Ok(()) => Ecall::Ret(Ok(bytes.len() as u64)),
                Err(page) => fault(tvm, page, true),
            }
        }
        atst::EXTEND_MEASUREMENT => {
            let Ok(pcr) = u8::try_from(a[2]) else {
                return Ecall::Ret(Err(SbiError::InvalidParam));
            };
            if a[1] != MEASUREMENT_LEN as u64 || !is_runtime_pcr(pcr) {
                return Ecall::Ret(Err(SbiError::InvalidParam));
            }
            let mut value = [0u8; MEASUREMENT_LEN];
            if let Err(page) = tvm.guest_read(mem, a[0], &mut value) {
                return fault(tvm, page, false);
            }
            let event = MeasurementEvent::Extend {
                index: pcr,
                content: Content::bytes(value.to_vec()),
            };
            // The registers are always exact. The inspection log keeps the first
            // MAX_LOGGED_RUNTIME_EXTENDS runtime extensions only, so a guest extending in a
            // loop cannot grow host memory without bound (Salus keeps just the registers).
            let logged = if tvm.runtime_extends < MAX_LOGGED_RUNTIME_EXTENDS {
                record(&mut tvm.log, &mut tvm.measurement, event)
            } else {
                tvm.measurement.apply(tvm.log.events.len(), &event)
            };
            if logged.is_ok() {
                tvm.runtime_extends = tvm.runtime_extends.saturating_add(1);
            }
            Ecall::Ret(logged.map(|_| 0).map_err(|_| SbiError::InvalidParam))
        }
        atst::READ_MEASUREMENT => {
            if a[1] < MEASUREMENT_LEN as u64 {
                // sbi-rs InsufficientBufferCapacity (-9).
                return Ecall::Ret(Err(SbiError::NoShmem));
            }
            let Some(value) = u8::try_from(a[2])
                .ok()
                .and_then(|p| tvm.measurement.register(p))
                .copied()
            else {
                return Ecall::Ret(Err(SbiError::InvalidParam));
            };
            match tvm.guest_write(mem, a[0], &value) {
                Ok(()) => Ecall::Ret(Ok(MEASUREMENT_LEN as u64)),
                Err(page) => fault(tvm, page, true),
            }
        }
        _ => Ecall::Ret(Err(SbiError::NotSupported)),
    }
}
