//! The CoVE SBI ABI: extension ids, function ids, error codes and the shared structures.
//!
//! Source of every number: `spec/cove.md` §1 and §5, which cite the Linux "RISC-V CoVE support"
//! RFC (RFC 05/48, 26/48, 37/48, 40/48), Salus' `sbi-rs` (`src/consts.rs`, `src/cove_host.rs`,
//! `src/cove_guest.rs`, `src/cove_interrupt.rs`, `src/attestation.rs`, `src/nacl.rs`,
//! `src/error.rs`) and the SBI specification (riscv-sbi-doc `src/binary-encoding.adoc`,
//! `src/ext-nested-acceleration.adoc`, `src/ext-firmware-features.adoc`).
//!
//! **FID numbering.** Three incompatible COVH numberings exist (spec/cove.md "Versioning
//! warning"). This crate speaks numbering **(b)**: the Linux RFC + Salus + sbi-rs one, which
//! is what the RFC host code calls ([`covh`]). The current-spec numbering (c) (spec-now and
//! ACE, which insert `PROMOTE_TO_TVM` at FID 7) is kept as a documented table in
//! [`covh_spec_now`] and [`COVH_FIDS`]; nothing calls it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a 4 KiB page, the only page size this model maps.
pub const PAGE_SIZE: u64 = 4096;

// ---------------------------------------------------------------------------------------------
// Extension ids (spec/cove.md §1.1; SBI spec chapter per extension).
// ---------------------------------------------------------------------------------------------

/// SBI Base extension (SBI spec "Base Extension", EID 0x10).
pub const EID_BASE: u32 = 0x10;
/// COVH, the TSM host ABI: "COVH" (spec-2023 heading; RFC 05/48 `SBI_EXT_COVH`; sbi-rs `src/consts.rs`).
pub const EID_COVH: u32 = 0x434F_5648;
/// COVI, TVM interrupts / AIA: "COVI" (RFC 26/48; sbi-rs `src/consts.rs`).
pub const EID_COVI: u32 = 0x434F_5649;
/// COVG, the guest ABI: "COVG" (RFC 37/48; sbi-rs `src/consts.rs`).
pub const EID_COVG: u32 = 0x434F_5647;
/// NACL, nested acceleration (riscv-sbi-doc `src/ext-nested-acceleration.adoc`).
pub const EID_NACL: u32 = 0x4E41_434C;
/// ATST, Salus-only attestation (sbi-rs `src/consts.rs` `EXT_ATTESTATION`).
pub const EID_ATST: u32 = 0x4154_5354;
/// SUPD, supervisor-domain enumeration (spec-now only; not implemented by the model).
pub const EID_SUPD: u32 = 0x5355_5044;
/// FWFT, firmware features (riscv-sbi-doc `src/ext-firmware-features.adoc`).
pub const EID_FWFT: u32 = 0x4657_4654;
/// SRST, system reset (SBI spec "System Reset Extension").
pub const EID_SRST: u32 = 0x5352_5354;
/// HSM, hart state management (SBI spec "Hart State Management Extension").
pub const EID_HSM: u32 = 0x0048_534D;
/// The guest → VMM host-call extension used by cvm's portable programs.
///
/// Not part of any specification: an id in the SBI **experimental** range
/// `0x0800_0000..=0x08FF_FFFF` (SBI spec "Extension ID namespaces"), bytes `08 'C' 'V' 'M'`.
/// The TSM does not know it, so it forwards it to the host like every unknown extension
/// (RFC 21/48: the host answers forwarded ECALLs through NACL scratch a0/a1).
/// FID (a6) = the host-call number, a0..a5 = arguments; the host returns a0 (error/first
/// value) and a1.
pub const EID_CVM_HOSTCALL: u32 = 0x0843_564D;
/// Model-only host → TSM configuration extension (bytes `08 'C' 'V' 'C'`, SBI experimental
/// range). No CoVE spec lets the host configure a TVM's ISA (riscv-ap-tee#140 proposes a
/// `tvm_set_csr`); the model needs it to hide extensions (Zkr, Smnpm) and to choose the
/// SEED policy. See [`cvm_model`].
pub const EID_CVM_MODEL: u32 = 0x0843_5643;

/// COVH function ids, numbering (b): Linux RFC + Salus + sbi-rs (`src/cove_host.rs`).
///
/// | FID (b) | name | a0 | a1 | a2 | a3 | a4 | a5 | a1 on return |
/// |---|---|---|---|---|---|---|---|---|
/// | 0 | TSM_GET_INFO | dest pa | len | | | | | bytes written |
/// | 1 | TSM_CONVERT_PAGES | pa | n | | | | | n |
/// | 2 | TSM_RECLAIM_PAGES | pa | n | | | | | n |
/// | 3 | TSM_INITIATE_FENCE | | | | | | | |
/// | 4 | TSM_LOCAL_FENCE | | | | | | | |
/// | 5 | CREATE_TVM | params pa | len | | | | | guest id |
/// | 6 | FINALIZE_TVM | guest | entry_sepc | entry_arg | | | | |
/// | 7 | DESTROY_TVM | guest | | | | | | |
/// | 8 | TVM_ADD_MEMORY_REGION | guest | gpa | len | | | | |
/// | 9 | TVM_ADD_PGT_PAGES | guest | pa | n | | | | |
/// | 10 | TVM_ADD_MEASURED_PAGES | guest | src pa | dest pa | page_type | n | gpa | n |
/// | 11 | TVM_ADD_ZERO_PAGES | guest | pa | page_type | n | gpa | | n |
/// | 12 | TVM_ADD_SHARED_PAGES | guest | pa | page_type | n | gpa | | n |
/// | 13 | TVM_CREATE_VCPU | guest | vcpu id | state pa | | | | |
/// | 14 | TVM_VCPU_RUN | guest | vcpu id | | | | | 0 resumable / ≠0 terminated |
/// | 15 | TVM_INITIATE_FENCE | guest | | | | | | |
/// | 16 | TVM_INVALIDATE_PAGES | guest | gpa | len | | | | |
/// | 17 | TVM_VALIDATE_PAGES | guest | gpa | len | | | | |
/// | 18 | TVM_PROMOTE_PAGE | guest | gpa | page_type | | | | |
/// | 19 | TVM_DEMOTE_PAGE | guest | gpa | page_type | | | | |
/// | 20 | TVM_REMOVE_PAGES | guest | gpa | len | | | | |
///
/// Sources: RFC 05/48 (`enum sbi_ext_covh_fid` 0..15), RFC 40/48 (16..20), RFC 06/48
/// (`arch/riscv/kvm/cove_sbi.c` register use), sbi-rs `src/cove_host.rs`.
pub mod covh {
    /// TSM_GET_INFO.
    pub const TSM_GET_INFO: u32 = 0;
    /// TSM_CONVERT_PAGES.
    pub const TSM_CONVERT_PAGES: u32 = 1;
    /// TSM_RECLAIM_PAGES.
    pub const TSM_RECLAIM_PAGES: u32 = 2;
    /// TSM_INITIATE_FENCE (spec: "global fence").
    pub const TSM_INITIATE_FENCE: u32 = 3;
    /// TSM_LOCAL_FENCE.
    pub const TSM_LOCAL_FENCE: u32 = 4;
    /// CREATE_TVM.
    pub const CREATE_TVM: u32 = 5;
    /// FINALIZE_TVM.
    pub const FINALIZE_TVM: u32 = 6;
    /// DESTROY_TVM.
    pub const DESTROY_TVM: u32 = 7;
    /// TVM_ADD_MEMORY_REGION.
    pub const TVM_ADD_MEMORY_REGION: u32 = 8;
    /// TVM_ADD_PGT_PAGES.
    pub const TVM_ADD_PGT_PAGES: u32 = 9;
    /// TVM_ADD_MEASURED_PAGES.
    pub const TVM_ADD_MEASURED_PAGES: u32 = 10;
    /// TVM_ADD_ZERO_PAGES.
    pub const TVM_ADD_ZERO_PAGES: u32 = 11;
    /// TVM_ADD_SHARED_PAGES.
    pub const TVM_ADD_SHARED_PAGES: u32 = 12;
    /// TVM_CREATE_VCPU.
    pub const TVM_CREATE_VCPU: u32 = 13;
    /// TVM_VCPU_RUN.
    pub const TVM_VCPU_RUN: u32 = 14;
    /// TVM_INITIATE_FENCE.
    pub const TVM_INITIATE_FENCE: u32 = 15;
    /// TVM_INVALIDATE_PAGES (sbi-rs `TvmBlockPages`).
    pub const TVM_INVALIDATE_PAGES: u32 = 16;
    /// TVM_VALIDATE_PAGES (sbi-rs `TvmUnblockPages`).
    pub const TVM_VALIDATE_PAGES: u32 = 17;
    /// TVM_PROMOTE_PAGE.
    pub const TVM_PROMOTE_PAGE: u32 = 18;
    /// TVM_DEMOTE_PAGE.
    pub const TVM_DEMOTE_PAGE: u32 = 19;
    /// TVM_REMOVE_PAGES.
    pub const TVM_REMOVE_PAGES: u32 = 20;
}

/// COVH function ids of the **current** specification, numbering (c) (riscv-ap-tee
/// `src/sbi_cove.adoc` @ c71310c and IBM ACE `covh_extension.rs`). Documentation only: this
/// crate calls numbering (b) ([`covh`]).
///
/// | name | (a) spec-2023 | (b) RFC/Salus | (c) spec-now / ACE |
/// |---|---|---|---|
/// | TSM_GET_INFO | 0 | 0 | 0 |
/// | TSM_CONVERT_PAGES | 1 | 1 | 1 |
/// | TSM_RECLAIM_PAGES | 2 | 2 | 2 |
/// | TSM_INITIATE_FENCE | 3 | 3 | 3 |
/// | TSM_LOCAL_FENCE | 4 | 4 | 4 |
/// | CREATE_TVM | 5 | 5 | 5 |
/// | FINALIZE_TVM | 6 | 6 | 6 |
/// | PROMOTE_TO_TVM | – | – | 7 |
/// | DESTROY_TVM | 7 | 7 | 8 |
/// | TVM_ADD_MEMORY_REGION | 8 | 8 | 9 |
/// | TVM_ADD_PGT_PAGES | 9 | 9 | 10 |
/// | TVM_ADD_MEASURED_PAGES | 10 | 10 | 11 |
/// | TVM_ADD_ZERO_PAGES | 11 | 11 | 12 |
/// | TVM_ADD_SHARED_PAGES | 12 | 12 | 13 |
/// | TVM_CREATE_VCPU | 13 | 13 | 14 |
/// | TVM_VCPU_RUN | 14 | 14 | 15 |
/// | TVM_INITIATE_FENCE | 15 | 15 | 16 |
/// | TVM_INVALIDATE_PAGES | 16 | 16 | 17 |
/// | TVM_VALIDATE_PAGES | 17 | 17 | 18 |
/// | TVM_PROMOTE_PAGE | – | 18 | 19 (ACE const only) |
/// | TVM_DEMOTE_PAGE | – | 19 | 20 (ACE const only) |
/// | TVM_REMOVE_PAGES | 18 | 20 | 19 (spec-now) / 21 (ACE) |
pub mod covh_spec_now {
    /// TSM_GET_INFO.
    pub const TSM_GET_INFO: u32 = 0;
    /// TSM_CONVERT_PAGES.
    pub const TSM_CONVERT_PAGES: u32 = 1;
    /// TSM_RECLAIM_PAGES.
    pub const TSM_RECLAIM_PAGES: u32 = 2;
    /// TSM_INITIATE_FENCE.
    pub const TSM_INITIATE_FENCE: u32 = 3;
    /// TSM_LOCAL_FENCE.
    pub const TSM_LOCAL_FENCE: u32 = 4;
    /// CREATE_TVM.
    pub const CREATE_TVM: u32 = 5;
    /// FINALIZE_TVM.
    pub const FINALIZE_TVM: u32 = 6;
    /// PROMOTE_TO_TVM(fdt_addr, tap_addr, entry_sepc, tvm_identity_addr) (spec-now only).
    pub const PROMOTE_TO_TVM: u32 = 7;
    /// DESTROY_TVM.
    pub const DESTROY_TVM: u32 = 8;
    /// TVM_ADD_MEMORY_REGION.
    pub const TVM_ADD_MEMORY_REGION: u32 = 9;
    /// TVM_ADD_PGT_PAGES.
    pub const TVM_ADD_PGT_PAGES: u32 = 10;
    /// TVM_ADD_MEASURED_PAGES.
    pub const TVM_ADD_MEASURED_PAGES: u32 = 11;
    /// TVM_ADD_ZERO_PAGES.
    pub const TVM_ADD_ZERO_PAGES: u32 = 12;
    /// TVM_ADD_SHARED_PAGES.
    pub const TVM_ADD_SHARED_PAGES: u32 = 13;
    /// TVM_CREATE_VCPU.
    pub const TVM_CREATE_VCPU: u32 = 14;
    /// TVM_VCPU_RUN.
    pub const TVM_VCPU_RUN: u32 = 15;
    /// TVM_INITIATE_FENCE.
    pub const TVM_INITIATE_FENCE: u32 = 16;
    /// TVM_INVALIDATE_PAGES.
    pub const TVM_INVALIDATE_PAGES: u32 = 17;
    /// TVM_VALIDATE_PAGES.
    pub const TVM_VALIDATE_PAGES: u32 = 18;
    /// TVM_REMOVE_PAGES (spec-now text; ACE's constant is 21).
    pub const TVM_REMOVE_PAGES: u32 = 19;
}

/// One row of the COVH FID table: the call's name and its FID in the three numberings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CovhFid {
    /// Name used for statistics (`COVH_…`).
    pub name: &'static str,
    /// spec-2023 (a).
    pub spec_2023: Option<u32>,
    /// RFC/Salus (b) — what this crate calls.
    pub rfc_salus: Option<u32>,
    /// spec-now/ACE (c).
    pub spec_now: Option<u32>,
}

const fn fid(name: &'static str, a: Option<u32>, b: Option<u32>, c: Option<u32>) -> CovhFid {
    CovhFid {
        name,
        spec_2023: a,
        rfc_salus: b,
        spec_now: c,
    }
}

/// The COVH FID table of spec/cove.md §1.2 in all three numberings.
pub const COVH_FIDS: [CovhFid; 22] = [
    fid("COVH_TSM_GET_INFO", Some(0), Some(0), Some(0)),
    fid("COVH_TSM_CONVERT_PAGES", Some(1), Some(1), Some(1)),
    fid("COVH_TSM_RECLAIM_PAGES", Some(2), Some(2), Some(2)),
    fid("COVH_TSM_INITIATE_FENCE", Some(3), Some(3), Some(3)),
    fid("COVH_TSM_LOCAL_FENCE", Some(4), Some(4), Some(4)),
    fid("COVH_CREATE_TVM", Some(5), Some(5), Some(5)),
    fid("COVH_FINALIZE_TVM", Some(6), Some(6), Some(6)),
    fid("COVH_PROMOTE_TO_TVM", None, None, Some(7)),
    fid("COVH_DESTROY_TVM", Some(7), Some(7), Some(8)),
    fid("COVH_TVM_ADD_MEMORY_REGION", Some(8), Some(8), Some(9)),
    fid("COVH_TVM_ADD_PGT_PAGES", Some(9), Some(9), Some(10)),
    fid("COVH_TVM_ADD_MEASURED_PAGES", Some(10), Some(10), Some(11)),
    fid("COVH_TVM_ADD_ZERO_PAGES", Some(11), Some(11), Some(12)),
    fid("COVH_TVM_ADD_SHARED_PAGES", Some(12), Some(12), Some(13)),
    fid("COVH_TVM_CREATE_VCPU", Some(13), Some(13), Some(14)),
    fid("COVH_TVM_VCPU_RUN", Some(14), Some(14), Some(15)),
    fid("COVH_TVM_INITIATE_FENCE", Some(15), Some(15), Some(16)),
    fid("COVH_TVM_INVALIDATE_PAGES", Some(16), Some(16), Some(17)),
    fid("COVH_TVM_VALIDATE_PAGES", Some(17), Some(17), Some(18)),
    fid("COVH_TVM_PROMOTE_PAGE", None, Some(18), Some(19)),
    fid("COVH_TVM_DEMOTE_PAGE", None, Some(19), Some(20)),
    fid("COVH_TVM_REMOVE_PAGES", Some(18), Some(20), Some(19)),
];

/// The statistics name (`COVH_…`) of COVH FID `fid` in numbering (b).
pub fn covh_name(fid: u32) -> &'static str {
    COVH_FIDS
        .iter()
        .find(|f| f.rfc_salus == Some(fid))
        .map(|f| f.name)
        .unwrap_or("COVH_UNKNOWN")
}

/// COVI function ids (RFC 26/48; spec-2023 identical; sbi-rs `src/cove_interrupt.rs`).
pub mod covi {
    /// TVM_AIA_INIT(guest, params pa, len).
    pub const TVM_AIA_INIT: u32 = 0;
    /// TVM_CPU_SET_IMSIC_ADDR(guest, vcpu, imsic gpa).
    pub const TVM_CPU_SET_IMSIC_ADDR: u32 = 1;
    /// TVM_CONVERT_IMSIC(imsic pa).
    pub const TVM_CONVERT_IMSIC: u32 = 2;
    /// TVM_RECLAIM_IMSIC(imsic pa).
    pub const TVM_RECLAIM_IMSIC: u32 = 3;
    /// TVM_CPU_BIND_IMSIC(guest, vcpu, imsic_mask).
    pub const TVM_CPU_BIND_IMSIC: u32 = 4;
    /// TVM_CPU_UNBIND_IMSIC_BEGIN(guest, vcpu).
    pub const TVM_CPU_UNBIND_IMSIC_BEGIN: u32 = 5;
    /// TVM_CPU_UNBIND_IMSIC_END(guest, vcpu).
    pub const TVM_CPU_UNBIND_IMSIC_END: u32 = 6;
    /// TVM_CPU_INJECT_EXT_INTERRUPT(guest, vcpu, id).
    pub const TVM_CPU_INJECT_EXT_INTERRUPT: u32 = 7;
    /// TVM_REBIND_IMSIC_BEGIN(guest, vcpu, imsic_mask).
    pub const TVM_REBIND_IMSIC_BEGIN: u32 = 8;
    /// TVM_REBIND_IMSIC_CLONE(guest, vcpu).
    pub const TVM_REBIND_IMSIC_CLONE: u32 = 9;
    /// TVM_REBIND_IMSIC_END(guest, vcpu).
    pub const TVM_REBIND_IMSIC_END: u32 = 10;
}

/// COVG function ids (RFC 37/48 / Salus; spec-2023 and spec-now agree on 0..5).
pub mod covg {
    /// ADD_MMIO_REGION(gpa, len).
    pub const ADD_MMIO_REGION: u32 = 0;
    /// REMOVE_MMIO_REGION(gpa, len).
    pub const REMOVE_MMIO_REGION: u32 = 1;
    /// SHARE_MEMORY(gpa, len).
    pub const SHARE_MEMORY: u32 = 2;
    /// UNSHARE_MEMORY(gpa, len).
    pub const UNSHARE_MEMORY: u32 = 3;
    /// ALLOW_EXT_INTERRUPT(id, -1 = all).
    pub const ALLOW_EXT_INTERRUPT: u32 = 4;
    /// DENY_EXT_INTERRUPT(id, -1 = all).
    pub const DENY_EXT_INTERRUPT: u32 = 5;
    /// spec-2023/spec-now GET_ATTCAPS (Salus puts attestation in ATST instead; not implemented).
    pub const SPEC_GET_ATTCAPS: u32 = 6;
    /// spec-2023/spec-now EXTEND_MEASUREMENT (not implemented; see ATST).
    pub const SPEC_EXTEND_MEASUREMENT: u32 = 7;
    /// spec-2023/spec-now GET_EVIDENCE (not implemented).
    pub const SPEC_GET_EVIDENCE: u32 = 8;
    /// spec-2023 READ_MEASUREMENT (spec-now: RETRIEVE_SECRET; not implemented).
    pub const SPEC_2023_READ_MEASUREMENT: u32 = 9;
    /// spec-now READ_MEASUREMENT (not implemented).
    pub const SPEC_NOW_READ_MEASUREMENT: u32 = 10;
}

/// ATST function ids (Salus; sbi-rs `src/attestation.rs`).
pub mod atst {
    /// GetCapabilities(a0 caps gpa, a1 size).
    pub const GET_CAPABILITIES: u32 = 0;
    /// GetEvidence(CSR gpa, CSR len, data gpa, format, cert gpa, cert size) — not modelled.
    pub const GET_EVIDENCE: u32 = 1;
    /// ExtendMeasurement(a0 buf gpa, a1 len = 48, a2 TCG PCR index).
    pub const EXTEND_MEASUREMENT: u32 = 2;
    /// ReadMeasurement(a0 out gpa, a1 size ≥ 48, a2 TCG PCR index) → 48.
    pub const READ_MEASUREMENT: u32 = 3;
}

/// NACL function ids and features (riscv-sbi-doc `src/ext-nested-acceleration.adoc`).
pub mod nacl {
    /// PROBE_FEATURE(feature id) → 0/1.
    pub const PROBE_FEATURE: u32 = 0;
    /// SET_SHMEM(phys_lo, phys_hi, flags = 0).
    pub const SET_SHMEM: u32 = 1;
    /// SYNC_CSR(csr or -1).
    pub const SYNC_CSR: u32 = 2;
    /// SYNC_HFENCE(entry or -1).
    pub const SYNC_HFENCE: u32 = 3;
    /// SYNC_SRET().
    pub const SYNC_SRET: u32 = 4;
    /// Feature SYNC_CSR.
    pub const FEAT_SYNC_CSR: u64 = 0;
    /// Feature SYNC_HFENCE.
    pub const FEAT_SYNC_HFENCE: u64 = 1;
    /// Feature SYNC_SRET.
    pub const FEAT_SYNC_SRET: u64 = 2;
    /// Feature AUTOSWAP_CSR.
    pub const FEAT_AUTOSWAP_CSR: u64 = 3;
}

/// HSM function ids (SBI spec "Hart State Management Extension").
pub mod hsm {
    /// HART_START(hartid, start_addr, opaque).
    pub const HART_START: u32 = 0;
    /// HART_STOP().
    pub const HART_STOP: u32 = 1;
    /// HART_GET_STATUS(hartid).
    pub const HART_GET_STATUS: u32 = 2;
    /// HART_SUSPEND(type, resume_addr, opaque).
    pub const HART_SUSPEND: u32 = 3;
    /// Status STARTED.
    pub const STATUS_STARTED: u64 = 0;
    /// Status STOPPED.
    pub const STATUS_STOPPED: u64 = 1;
}

/// SRST function ids and reset types (SBI spec "System Reset Extension").
pub mod srst {
    /// SYSTEM_RESET(type, reason).
    pub const SYSTEM_RESET: u32 = 0;
    /// Shutdown.
    pub const TYPE_SHUTDOWN: u64 = 0;
    /// Cold reboot.
    pub const TYPE_COLD_REBOOT: u64 = 1;
    /// Warm reboot.
    pub const TYPE_WARM_REBOOT: u64 = 2;
}

/// FWFT function ids and features (riscv-sbi-doc `src/ext-firmware-features.adoc`).
pub mod fwft {
    /// SET(feature, value, flags).
    pub const SET: u32 = 0;
    /// GET(feature).
    pub const GET: u32 = 1;
    /// Feature POINTER_MASKING_PMLEN: value 0 = off, N = requested PMLEN.
    pub const POINTER_MASKING_PMLEN: u64 = 5;
}

/// BASE function ids (SBI spec "Base Extension").
pub mod base {
    /// sbi_get_spec_version.
    pub const GET_SPEC_VERSION: u32 = 0;
    /// sbi_get_impl_id.
    pub const GET_IMPL_ID: u32 = 1;
    /// sbi_get_impl_version.
    pub const GET_IMPL_VERSION: u32 = 2;
    /// sbi_probe_extension(eid).
    pub const PROBE_EXTENSION: u32 = 3;
}

/// Model-only configuration calls on [`EID_CVM_MODEL`].
pub mod cvm_model {
    /// TVM_SET_ISA(guest id, hidden_lo, hidden_hi, entropy_policy): the KVM ISA extension
    /// ids (spec/cove.md §7.3) set in the 128-bit mask are hidden from the TVM;
    /// entropy_policy 0 = the TSM answers SEED, 1 = forward SEED to the host. Allowed until
    /// the TVM's first VCPU_RUN, then `SBI_ERR_DENIED`.
    pub const TVM_SET_ISA: u32 = 0;
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// An SBI error code (riscv-sbi-doc `src/binary-encoding.adoc`, ratified values).
///
/// **The -9 conflict.** Ratified SBI -9 is `SBI_ERR_NO_SHMEM`; Salus' sbi-rs (`src/error.rs`)
/// maps -9 to `InsufficientBufferCapacity` and Salus returns it for attestation buffer-size
/// errors. The number is the same, so this model returns [`SbiError::NoShmem`] (-9) where
/// Salus returns InsufficientBufferCapacity (ATST) and documents it at each use; see
/// [`SBI_ERR_INSUFFICIENT_BUFFER_CAPACITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i64)]
pub enum SbiError {
    /// SBI_ERR_FAILED.
    Failed = -1,
    /// SBI_ERR_NOT_SUPPORTED.
    NotSupported = -2,
    /// SBI_ERR_INVALID_PARAM.
    InvalidParam = -3,
    /// SBI_ERR_DENIED.
    Denied = -4,
    /// SBI_ERR_INVALID_ADDRESS.
    InvalidAddress = -5,
    /// SBI_ERR_ALREADY_AVAILABLE.
    AlreadyAvailable = -6,
    /// SBI_ERR_ALREADY_STARTED.
    AlreadyStarted = -7,
    /// SBI_ERR_ALREADY_STOPPED.
    AlreadyStopped = -8,
    /// SBI_ERR_NO_SHMEM (sbi-rs: InsufficientBufferCapacity).
    NoShmem = -9,
    /// SBI_ERR_INVALID_STATE.
    InvalidState = -10,
    /// SBI_ERR_BAD_RANGE.
    BadRange = -11,
    /// SBI_ERR_TIMEOUT.
    Timeout = -12,
    /// SBI_ERR_IO.
    Io = -13,
    /// SBI_ERR_DENIED_LOCKED.
    DeniedLocked = -14,
}

/// Salus/sbi-rs' name for -9 (`src/error.rs` `InsufficientBufferCapacity`), which the ratified
/// SBI specification calls `SBI_ERR_NO_SHMEM`.
pub const SBI_ERR_INSUFFICIENT_BUFFER_CAPACITY: i64 = -9;

impl SbiError {
    /// The signed code in a0.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The ratified name.
    pub fn name(self) -> &'static str {
        match self {
            SbiError::Failed => "SBI_ERR_FAILED",
            SbiError::NotSupported => "SBI_ERR_NOT_SUPPORTED",
            SbiError::InvalidParam => "SBI_ERR_INVALID_PARAM",
            SbiError::Denied => "SBI_ERR_DENIED",
            SbiError::InvalidAddress => "SBI_ERR_INVALID_ADDRESS",
            SbiError::AlreadyAvailable => "SBI_ERR_ALREADY_AVAILABLE",
            SbiError::AlreadyStarted => "SBI_ERR_ALREADY_STARTED",
            SbiError::AlreadyStopped => "SBI_ERR_ALREADY_STOPPED",
            SbiError::NoShmem => "SBI_ERR_NO_SHMEM",
            SbiError::InvalidState => "SBI_ERR_INVALID_STATE",
            SbiError::BadRange => "SBI_ERR_BAD_RANGE",
            SbiError::Timeout => "SBI_ERR_TIMEOUT",
            SbiError::Io => "SBI_ERR_IO",
            SbiError::DeniedLocked => "SBI_ERR_DENIED_LOCKED",
        }
    }

    /// The error for a raw a0 value; `None` for 0 (success) and unknown codes.
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            -1 => SbiError::Failed,
            -2 => SbiError::NotSupported,
            -3 => SbiError::InvalidParam,
            -4 => SbiError::Denied,
            -5 => SbiError::InvalidAddress,
            -6 => SbiError::AlreadyAvailable,
            -7 => SbiError::AlreadyStarted,
            -8 => SbiError::AlreadyStopped,
            -9 => SbiError::NoShmem,
            -10 => SbiError::InvalidState,
            -11 => SbiError::BadRange,
            -12 => SbiError::Timeout,
            -13 => SbiError::Io,
            -14 => SbiError::DeniedLocked,
            _ => return None,
        })
    }
}

/// The name of a raw SBI status (`SBI_SUCCESS`, `SBI_ERR_…`, or `SBI_ERR_UNKNOWN`).
pub fn sbi_status_name(code: i64) -> &'static str {
    if code == 0 {
        "SBI_SUCCESS"
    } else {
        SbiError::from_code(code)
            .map(SbiError::name)
            .unwrap_or("SBI_ERR_UNKNOWN")
    }
}

/// What an SBI call returns: a0 = error, a1 = value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SbiRet {
    /// a0: 0 or a negative [`SbiError`] code.
    pub error: i64,
    /// a1.
    pub value: u64,
}

impl SbiRet {
    /// Success with `value`.
    pub fn ok(value: u64) -> Self {
        Self { error: 0, value }
    }

    /// Failure with `e`.
    pub fn err(e: SbiError) -> Self {
        Self {
            error: e.code(),
            value: 0,
        }
    }

    /// From a model result.
    pub fn from_result(r: Result<u64, SbiError>) -> Self {
        match r {
            Ok(v) => Self::ok(v),
            Err(e) => Self::err(e),
        }
    }

    /// As a result (unknown negative codes become [`SbiError::Failed`]).
    pub fn into_result(self) -> Result<u64, SbiError> {
        if self.error == 0 {
            Ok(self.value)
        } else {
            Err(SbiError::from_code(self.error).unwrap_or(SbiError::Failed))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structures.
// ---------------------------------------------------------------------------------------------

/// `tsm_state` values (spec-2023 §"Platform TSM detection"; RFC 05/48).
pub mod tsm_state {
    /// TSM_NOT_LOADED.
    pub const NOT_LOADED: u32 = 0;
    /// TSM_LOADED.
    pub const LOADED: u32 = 1;
    /// TSM_READY.
    pub const READY: u32 = 2;
}

/// `sbi_cove_tsm_info` (RFC 05/48; sbi-rs `TsmInfo`; spec-2023 `struct tsm_info`), 32 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TsmInfo {
    /// 0 NOT_LOADED, 1 LOADED, 2 READY.
    pub tsm_state: u32,
    /// TSM version (Salus: 0).
    pub tsm_version: u32,
    /// 4 KiB pages CREATE_TVM needs for TVM state.
    pub tvm_state_pages: u64,
    /// Maximum vCPUs per TVM.
    pub tvm_max_vcpus: u64,
    /// 4 KiB pages CREATE_VCPU needs per vCPU.
    pub tvm_vcpu_state_pages: u64,
}

/// `sbi_cove_tvm_create_params` (RFC 05/48; sbi-rs `TvmCreateParams`), 16 bytes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TvmCreateParams {
    /// 16 KiB-aligned, 4 contiguous converted pages (the Sv48x4 root).
    pub tvm_page_directory_addr: u64,
    /// `tvm_state_pages` contiguous converted pages.
    pub tvm_state_addr: u64,
}

/// `sbi_cove_tvm_aia_params` (RFC 26/48), 28 bytes of fields (32 with tail padding).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct TvmAiaParams {
    /// Guest-physical base of the IMSIC files.
    pub imsic_base_addr: u64,
    /// Group index bits.
    pub group_index_bits: u32,
    /// Group index shift (≥ 24).
    pub group_index_shift: u32,
    /// Hart index bits.
    pub hart_index_bits: u32,
    /// Guest index bits.
    pub guest_index_bits: u32,
    /// Guest interrupt files per hart.
    pub guests_per_hart: u32,
    /// Tail padding of the C struct.
    pub _pad: u32,
}

/// One `MeasurementRegisterDescriptor` of Salus' attestation capabilities (sbi-rs
/// `src/attestation.rs`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct MeasurementRegisterDescriptor {
    /// DICE TCB layer.
    pub tcb_layer: u8,
    /// FWID index in the TcbInfo.
    pub fwid_index: u8,
    /// TCG PCR index.
    pub tcg_pcr_index: u8,
    /// 1 for a runtime (guest-extensible) register.
    pub runtime: u8,
}

/// Salus `AttestationCapabilities` (sbi-rs `src/attestation.rs`, repr(C), 140 bytes).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C, packed)]
pub struct AttestationCapabilities {
    /// TCB security version (Salus `0xdeadbeef`).
    pub tcb_svn: u64,
    /// 1 = SHA-384, 2 = SHA-512.
    pub hash_algorithm: u8,
    /// Bit set: 1 DiceTcbInfo, 2 DiceMultiTcbInfo, 4 OpenDice.
    pub evidence_formats: u8,
    /// Static registers (4).
    pub static_measurements: u8,
    /// Runtime registers (4).
    pub runtime_measurements: u8,
    /// The 8 register descriptors followed by unused slots.
    pub msmt_regs: [MeasurementRegisterDescriptor; 32],
}

/// The NACL scratch area's CoVE use (spec-2023 `struct tsm_shmem_scratch`; sbi-rs `NaclShmem`):
/// `u64 guest_gprs[32]; u64 reserved[224];` = 2048 bytes.
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NaclScratch {
    /// TVM GPR transfer slots: `x<i>` at byte `i * 8` (a0 = x10 at 0x50).
    pub guest_gprs: [u64; 32],
    /// Reserved. The model uses word 0 ([`NACL_MODEL_INJECT_FAULT_OFFSET`]).
    pub reserved: [u64; 224],
}

/// The NACL shared memory (riscv-sbi-doc `src/ext-nested-acceleration.adoc`; sbi-rs
/// `src/nacl.rs NaclShmem`): `4096 + 1024 * 8` = 12 KiB on RV64.
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NaclShmem {
    /// 0x0000: scratch (CoVE: GPR transfer).
    pub scratch: NaclScratch,
    /// 0x0800: HFENCE entries in the SBI spec; unused by CoVE.
    pub hfence: [u64; 240],
    /// 0x0F80: CSR dirty bitmap (unused by the TSM).
    pub dirty_bitmap: [u64; 16],
    /// 0x1000: 1024 CSR slots, index [`nacl_csr_index`].
    pub csrs: [u64; 1024],
}

/// Size of [`NaclShmem`].
pub const NACL_SHMEM_SIZE: usize = 12288;
/// Pages of [`NaclShmem`].
pub const NACL_SHMEM_PAGES: u64 = 3;
/// Byte offset of the scratch area's GPR slots (`SBI_NACL_SHMEM_SRET_X(i) = i * 8`).
pub const NACL_SCRATCH_OFFSET: usize = 0;
/// Byte offset of the HFENCE area (`SBI_NACL_SHMEM_HFENCE_OFFSET`).
pub const NACL_HFENCE_OFFSET: usize = 0x800;
/// Byte offset of the dirty bitmap (`SBI_NACL_SHMEM_DBITMAP_OFFSET`).
pub const NACL_DBITMAP_OFFSET: usize = 0xF80;
/// Byte offset of the CSR area (`SBI_NACL_SHMEM_CSR_OFFSET`).
pub const NACL_CSR_OFFSET: usize = 0x1000;
/// Model extension: scratch reserved word 0 (byte 0x100). A host that wants the pending MMIO
/// access or forwarded CSR access to *fail* in the guest (cvm `Resume::InjectAbort`) writes a
/// non-zero value here before TVM_VCPU_RUN; the TSM then injects an access fault (MMIO; as
/// ACE does for unregistered MMIO, `mmio_load_request.rs`) or an illegal-instruction exception
/// (SEED) instead of completing the access, and clears the word. No CoVE ABI has this channel.
pub const NACL_MODEL_INJECT_FAULT_OFFSET: usize = 0x100;

/// The NACL CSR-area index of `csr`: `((csr & 0xc00) >> 2) | (csr & 0xff)`
/// (ext-nested-acceleration.adoc).
pub const fn nacl_csr_index(csr: u16) -> usize {
    (((csr & 0xc00) >> 2) | (csr & 0xff)) as usize
}

/// Byte offset of `csr` in the NACL shared memory.
pub const fn nacl_csr_offset(csr: u16) -> usize {
    NACL_CSR_OFFSET + 8 * nacl_csr_index(csr)
}

/// Byte offset of GPR `x<reg>` in the NACL scratch area.
pub const fn nacl_gpr_offset(reg: u8) -> usize {
    NACL_SCRATCH_OFFSET + 8 * reg as usize
}

/// CSR numbers the TSM writes in the NACL CSR area (Privileged spec CSR listing).
pub mod csr {
    /// vsstatus.
    pub const VSSTATUS: u16 = 0x200;
    /// vsie.
    pub const VSIE: u16 = 0x204;
    /// vstvec.
    pub const VSTVEC: u16 = 0x205;
    /// vsepc.
    pub const VSEPC: u16 = 0x241;
    /// vstimecmp (Sstc).
    pub const VSTIMECMP: u16 = 0x24D;
    /// vsatp.
    pub const VSATP: u16 = 0x280;
    /// hstatus.
    pub const HSTATUS: u16 = 0x600;
    /// htimedelta.
    pub const HTIMEDELTA: u16 = 0x605;
    /// htval.
    pub const HTVAL: u16 = 0x643;
    /// hvip.
    pub const HVIP: u16 = 0x645;
    /// htinst.
    pub const HTINST: u16 = 0x64A;
    /// hgatp.
    pub const HGATP: u16 = 0x680;
}

/// GPR numbers used by the SBI calling convention.
pub mod reg {
    /// a0.
    pub const A0: u8 = 10;
    /// a1.
    pub const A1: u8 = 11;
    /// a2.
    pub const A2: u8 = 12;
    /// a6 (FID).
    pub const A6: u8 = 16;
    /// a7 (EID).
    pub const A7: u8 = 17;
}

/// Salus' MMIO `htinst` values: `MATCH_<op> | (10 << 7)` for loads (rd = a0) and
/// `| (10 << 20)` for stores (rs2 = a0), rs1/offset 0 (Salus `mmio_op_to_htinst`,
/// `riscv-regs/src/inst.rs`; spec/cove.md §4.2).
pub mod htinst {
    /// LB a0.
    pub const LB: u64 = 0x503;
    /// LH a0.
    pub const LH: u64 = 0x1503;
    /// LW a0.
    pub const LW: u64 = 0x2503;
    /// LD a0.
    pub const LD: u64 = 0x3503;
    /// LBU a0.
    pub const LBU: u64 = 0x4503;
    /// LHU a0.
    pub const LHU: u64 = 0x5503;
    /// LWU a0.
    pub const LWU: u64 = 0x6503;
    /// SB a0.
    pub const SB: u64 = 0xa0_0023;
    /// SH a0.
    pub const SH: u64 = 0xa0_1023;
    /// SW a0.
    pub const SW: u64 = 0xa0_2023;
    /// SD a0.
    pub const SD: u64 = 0xa0_3023;

    /// The htinst for an access of `size` bytes (`signed` loads use LB/LH/LW/LD).
    pub fn for_access(is_store: bool, size: u8, signed: bool) -> Option<u64> {
        Some(match (is_store, size, signed) {
            (true, 1, _) => SB,
            (true, 2, _) => SH,
            (true, 4, _) => SW,
            (true, 8, _) => SD,
            (false, 1, true) => LB,
            (false, 2, true) => LH,
            (false, 4, true) => LW,
            (false, 8, _) => LD,
            (false, 1, false) => LBU,
            (false, 2, false) => LHU,
            (false, 4, false) => LWU,
            _ => return None,
        })
    }
}

/// SEED CSR number (Zkr; Crypto Extensions Vol. I §4.1).
pub const CSR_SEED: u16 = 0x015;
/// SEED OPST = ES16 (bits 31:30 = 0b10): 16 bits of entropy are valid.
pub const SEED_OPST_ES16: u64 = 0b10 << 30;

// Compile-time layout checks against the specification.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<TsmInfo>() == 32);
    assert!(offset_of!(TsmInfo, tsm_state) == 0);
    assert!(offset_of!(TsmInfo, tsm_version) == 4);
    assert!(offset_of!(TsmInfo, tvm_state_pages) == 8);
    assert!(offset_of!(TsmInfo, tvm_max_vcpus) == 16);
    assert!(offset_of!(TsmInfo, tvm_vcpu_state_pages) == 24);
    assert!(size_of::<TvmCreateParams>() == 16);
    assert!(offset_of!(TvmCreateParams, tvm_page_directory_addr) == 0);
    assert!(offset_of!(TvmCreateParams, tvm_state_addr) == 8);
    assert!(offset_of!(TvmAiaParams, imsic_base_addr) == 0);
    assert!(offset_of!(TvmAiaParams, group_index_bits) == 8);
    assert!(offset_of!(TvmAiaParams, group_index_shift) == 12);
    assert!(offset_of!(TvmAiaParams, hart_index_bits) == 16);
    assert!(offset_of!(TvmAiaParams, guest_index_bits) == 20);
    assert!(offset_of!(TvmAiaParams, guests_per_hart) == 24);
    assert!(size_of::<TvmAiaParams>() == 32);
    assert!(size_of::<AttestationCapabilities>() == 140);
    assert!(offset_of!(AttestationCapabilities, hash_algorithm) == 8);
    assert!(offset_of!(AttestationCapabilities, msmt_regs) == 12);
    assert!(size_of::<NaclScratch>() == 2048);
    assert!(size_of::<NaclShmem>() == NACL_SHMEM_SIZE);
    assert!(NACL_SHMEM_SIZE == 4096 + 1024 * 8);
    assert!(offset_of!(NaclShmem, hfence) == NACL_HFENCE_OFFSET);
    assert!(offset_of!(NaclShmem, dirty_bitmap) == NACL_DBITMAP_OFFSET);
    assert!(offset_of!(NaclShmem, csrs) == NACL_CSR_OFFSET);
    assert!(nacl_gpr_offset(reg::A0) == 0x50);
    assert!(nacl_gpr_offset(reg::A7) == 0x88);
    assert!(nacl_csr_offset(csr::HTVAL) == 0x1A18);
    assert!(nacl_csr_offset(csr::HTINST) == 0x1A50);
    assert!(nacl_csr_offset(csr::VSTIMECMP) == 0x1268);
    assert!(nacl_csr_offset(csr::HTIMEDELTA) == 0x1828);
    assert!(nacl_csr_offset(csr::VSIE) == 0x1020);
    assert!(nacl_csr_offset(csr::HSTATUS) == 0x1800);
    assert!(nacl_csr_offset(csr::HGATP) == 0x1C00);
    assert!(NACL_MODEL_INJECT_FAULT_OFFSET == 0x100);
};

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn nacl_offsets_match_spec_table() {
        // spec/cove.md §5 "Useful CSR-area offsets".
        let table: [(u16, usize); 22] = [
            (0x200, 0x1000),
            (0x204, 0x1020),
            (0x205, 0x1028),
            (0x240, 0x1200),
            (0x241, 0x1208),
            (0x242, 0x1210),
            (0x243, 0x1218),
            (0x244, 0x1220),
            (0x24D, 0x1268),
            (0x280, 0x1400),
            (0x600, 0x1800),
            (0x602, 0x1810),
            (0x603, 0x1818),
            (0x604, 0x1820),
            (0x605, 0x1828),
            (0x606, 0x1830),
            (0x607, 0x1838),
            (0x643, 0x1A18),
            (0x644, 0x1A20),
            (0x645, 0x1A28),
            (0x64A, 0x1A50),
            (0x680, 0x1C00),
        ];
        for (csr, off) in table {
            assert_eq!(nacl_csr_offset(csr), off, "csr {csr:#x}");
        }
        for (i, off) in [(10u8, 0x50), (11, 0x58), (12, 0x60), (17, 0x88)] {
            assert_eq!(nacl_gpr_offset(i), off);
        }
    }

    #[test]
    fn nacl_struct_round_trips_through_bytes() {
        let mut s = NaclShmem::new_zeroed();
        s.scratch.guest_gprs[10] = 0x1122;
        s.csrs[nacl_csr_index(csr::HTINST)] = htinst::SD;
        let bytes = s.as_bytes();
        assert_eq!(bytes.len(), 12288);
        assert_eq!(&bytes[0x50..0x58], &0x1122u64.to_le_bytes());
        assert_eq!(&bytes[0x1A50..0x1A58], &0xa03023u64.to_le_bytes());
    }

    #[test]
    fn structs_have_spec_sizes() {
        let info = TsmInfo {
            tsm_state: tsm_state::READY,
            tsm_version: 0,
            tvm_state_pages: 3,
            tvm_max_vcpus: 8,
            tvm_vcpu_state_pages: 1,
        };
        let b = info.as_bytes();
        assert_eq!(b.len(), 32);
        assert_eq!(b[0], 2);
        assert_eq!(&b[16..24], &8u64.to_le_bytes());
        assert_eq!(TvmCreateParams::default().as_bytes().len(), 16);
        assert_eq!(AttestationCapabilities::default().as_bytes().len(), 140);
    }

    #[test]
    fn fid_tables() {
        assert_eq!(covh::TVM_REMOVE_PAGES, 20);
        assert_eq!(covh_spec_now::DESTROY_TVM, 8);
        assert_eq!(
            covh_name(covh::TVM_ADD_MEASURED_PAGES),
            "COVH_TVM_ADD_MEASURED_PAGES"
        );
        for f in COVH_FIDS {
            if let Some(b) = f.rfc_salus {
                assert_eq!(covh_name(b), f.name);
            }
        }
        assert_eq!(
            SbiError::NoShmem.code(),
            SBI_ERR_INSUFFICIENT_BUFFER_CAPACITY
        );
        assert_eq!(sbi_status_name(-9), "SBI_ERR_NO_SHMEM");
        assert_eq!(htinst::for_access(false, 1, true), Some(0x503));
        assert_eq!(htinst::for_access(true, 8, false), Some(0xa03023));
    }
}
