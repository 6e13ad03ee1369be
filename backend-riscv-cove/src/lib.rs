//! RISC-V CoVE backend for cvm: the TVM host flow over a TSM.
//!
//! There is no CoVE hardware on the build machines, so the TSM is the in-process model in
//! [`model`], faithful to Salus and the Linux "RISC-V CoVE support" RFC (facts and sources:
//! `spec/cove.md`). The host flow ([`host::CoveBackend`]) talks to it only through
//! [`covh::Covh`] — SBI ECALLs plus the host's own memory — exactly as the RFC's KVM does.
//!
//! * [`abi`] — EIDs, FIDs (RFC/Salus numbering, with the current-spec table), SBI errors,
//!   `TsmInfo`, `TvmCreateParams`, `TvmAiaParams`, the NACL shared memory.
//! * [`measure`] — Salus' SHA-384 TVM measurement as a pure replay of a log, and
//!   [`measure::measure_log_cli`] (`cvm measure cove`).
//! * [`model`] — the TSM model (pages, TVMs, vCPUs, COVG/ATST/COVI/NACL) and the RV64 CPU.
//! * [`host`] — [`CoveBackend`]: cvm-core's `Backend` over any [`Covh`].
//! * [`features`] — guest ISA extensions (Zkr, Smnpm ← Ssnpm, …) as feature registers.
//! * [`platform`] — [`CovePlatform`], the `GuestPlatform` for portable programs.
//!
//! # Exit mapping
//!
//! How each TVM exit (what TVM_VCPU_RUN leaves in the host `scause`/`stval` and the NACL
//! shared memory, spec/cove.md §4.1) becomes a cvm [`VmExit`](cvm_core::VmExit), and how the
//! answering [`Resume`](cvm_core::Resume) goes back:
//!
//! | TVM exit (scause; NACL) | cvm exit | resume → NACL before the next TVM_VCPU_RUN |
//! |---|---|---|
//! | 21 load guest-page fault, htinst = Salus load to a0 (MMIO region) | `Mmio { gpa: htval << 2 \| stval & 3, size, write: None }` | `MmioRead(v)` → scratch GPR named by htinst's rd (a0, 0x50); the TSM sign/zero-extends per opcode, writes rd, advances sepc. `InjectAbort` → model inject flag (scratch 0x100): load access fault in the guest |
//! | 23 store guest-page fault, htinst = Salus store from a0 | `Mmio { write: Some(scratch a0) }` (value truncated to width by the TSM) | `Done` (TSM advances sepc) / `InjectAbort` (store access fault) |
//! | 20/21/23 with htinst = 0 in private RAM | — (host backs it with ADD_ZERO_PAGES from its page pool and re-enters) | — |
//! | 20/21/23 with htinst = 0 in a shared range | — (ADD_SHARED_PAGES of the pinned VMM page or a host page, re-enter) | — |
//! | 20/21/23 with htinst = 0 elsewhere | `Fault { syndrome: scause }` | `Done` |
//! | 10 ECALL, a7 = COVG, a6 = SHARE_MEMORY / UNSHARE_MEMORY | `ConvertMemory { gpa: a0, size: a1, to_private: a6 == UNSHARE }` | `Conversion(true)` → host INVALIDATE/fence/REMOVE/RECLAIM of pages mapped there, scratch a0 = 0; `Conversion(false)` → scratch a0 = SBI_ERR_DENIED |
//! | 10 ECALL, a7 = [`abi::EID_CVM_HOSTCALL`] | `HostCall { nr: a6, args: a0..a5 }` | `HostCall([r0, r1])` → scratch a0, a1 |
//! | 10 ECALL, a7 = HSM, a6 = HART_START | — (host marks the target vCPU started, scratch a0 = 0, re-enter) | — |
//! | 10 ECALL, other forwarded EIDs (e.g. DBCN) | — (scratch a0 = SBI_ERR_NOT_SUPPORTED, RFC 21/48; re-enter) | — |
//! | 10 ECALL SRST with TVM_VCPU_RUN ≠ 0 (vCPU terminated) | `SystemOff` (type 0) / `Reset` (types 1, 2) | `Done` |
//! | 22 virtual instruction, stval = WFI | `Halt` | `Done` |
//! | 22 virtual instruction, stval = CSR access to seed (0x015), forward policy | `SysReg { reg: 0x015, write: scratch a0 if the instruction writes, write_mask: scratch a1 }` | `SysReg(v)` → scratch a0 (TSM writes rd, zero-extended from 32 bits); `InjectAbort` → illegal instruction |
//! | interrupt (bit 63), e.g. the model's per-run instruction budget | — (re-enter up to [`host::MAX_REENTRIES`] times) then `Interrupted` | `Done` |
//! | any other exit with TVM_VCPU_RUN ≠ 0 (UnhandledTrap) | `Fault { syndrome: scause }` | `Done` (the vCPU stays terminated) |
//!
//! A secondary vCPU that the guest has not started with HSM HART_START runs to `Halt`.
//! SEED with the default firmware policy, BASE, COVG MMIO-region / interrupt calls, ATST and
//! FWFT never leave the TSM.

pub mod abi;
pub mod covh;
pub mod features;
pub mod host;
pub mod measure;
pub mod model;
pub mod platform;

pub use covh::Covh;
pub use host::{CoveBackend, CoveVm};
pub use measure::{measure_log_cli, replay, MeasureCliError, MeasureError, TvmMeasurement};
pub use model::{ModelConfig, TsmModel};
pub use platform::CovePlatform;
