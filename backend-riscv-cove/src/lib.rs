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
//! | 20/21/23 with htinst = 0 in a shared range | — (ADD_SHARED_PAGES of the VMM's page: the private region's user page, or the shared region's page; re-enter) | — |
//! | 20/21/23 with htinst = 0 elsewhere | `Fault { syndrome: scause }` | `Done` |
//! | 10 ECALL, a7 = COVG, a6 = SHARE_MEMORY / UNSHARE_MEMORY | `ConvertMemory { gpa: a0, size: a1, to_private: a6 == UNSHARE }` | `Conversion(true)` → host INVALIDATE/fence/REMOVE of pages mapped there (confidential ones reclaimed), scratch a0 = 0 (SBI_ERR_INVALID_ADDRESS outside the VM's memory, SBI_ERR_FAILED if a call failed); `Conversion(false)` → scratch a0 = SBI_ERR_DENIED |
//! | 10 ECALL, a7 = [`abi::EID_CVM_HOSTCALL`] | `HostCall { nr: a6, args: a0..a5 }` | `HostCall([r0, r1])` → scratch a0, a1 |
//! | 10 ECALL, a7 = HSM, a6 = HART_START | — (host claims the target vCPU, scratch a0 = 0, re-enter; the target runs once that re-entry has let the TSM power it on) | — |
//! | 10 ECALL, other forwarded EIDs (e.g. DBCN) | — (scratch a0 = SBI_ERR_NOT_SUPPORTED, RFC 21/48; re-enter) | — |
//! | 10 ECALL SRST with TVM_VCPU_RUN ≠ 0 (vCPU terminated) | `SystemOff` (type 0) / `Reset` (types 1, 2) | `Done` |
//! | 22 virtual instruction, stval = WFI | `Halt` | `Done` |
//! | 22 virtual instruction, stval = CSR access to seed (0x015), forward policy | `SysReg { reg: 0x015, write: scratch a0 if the instruction writes, write_mask: scratch a1 }` | `SysReg(v)` → scratch a0 (TSM writes rd, zero-extended from 32 bits); `InjectAbort` → illegal instruction |
//! | interrupt (bit 63), e.g. the model's per-run instruction budget | — (re-enter up to [`host::MAX_REENTRIES`] times) then `Interrupted` | `Done` |
//! | more than [`host::MAX_HANDLED_EXITS`] exits in one `run` that the host handled itself (rows with "—") | `Interrupted` (the guest is re-entered on the next `run`) | `Done` |
//! | any other exit with TVM_VCPU_RUN ≠ 0 (UnhandledTrap) | `Fault { syndrome: scause }` | `Done` (the vCPU stays terminated) |
//!
//! A secondary vCPU that the guest has not started with HSM HART_START runs to `Halt`.
//! SEED with the default firmware policy, BASE, COVG MMIO-region / interrupt calls, ATST and
//! FWFT never leave the TSM.
//!
//! `Vcpu::exit_detail` gives the native view of the last exit: `reason` `scause=<n> (<name>)`
//! (e.g. `scause=21 (load guest-page fault)`, `scause=10 (forwarded ecall)`), `registers`
//! host `scause`/`stval` and NACL `htval`/`htinst` as the TSM wrote them (plus `a6`/`a7` for
//! a forwarded ecall), and `channel`, the NACL scratch slot(s) values travel through
//! (`NACL scratch a0 (0x50)` for MMIO, `NACL scratch a0..a7` for forwarded ecalls). The run
//! path only copies the raw fields; the text is built when asked.
//!
//! # Memory the guest shares
//!
//! Each private region has the VMM's own memory behind it, as a KVM memslot has user pages
//! (an anonymous memfd per region, pinned for the TSM). Pages the guest keeps private never
//! use it: they are zero pages from the host's converted pool or measured pages. When the
//! guest shares a page (COVG SHARE_MEMORY, answered `Conversion(true)`), the host removes the
//! confidential page (INVALIDATE, TVM fence, REMOVE, RECLAIM) and, on the guest's next access
//! fault there, maps the user page at that GPA with TVM_ADD_SHARED_PAGES (RFC 41/48, 20/48).
//! Guest stores to it are ordinary memory stores (no MMIO exit), and `Vm::shared_memory()`
//! shows that page at its GPA for as long as it is shared, so guest and VMM read and write the
//! same bytes. UNSHARE invalidates, fences and removes the shared mapping; the user page stays
//! the VMM's, and the page leaves `shared_memory()`. A guest may also share pages of a VMM
//! shared region (then backed by that region), but only private-region pages can be unshared.
//!
//! # Measurement: what the host can know
//!
//! `Vm::measurement()` is the host's replay of its own measurement log (TVM_ADD_MEASURED_PAGES
//! pages and FINALIZE's entry point/argument), which equals the TSM's static registers by
//! construction. COVH has no call that reads a TVM's registers, and the runtime registers
//! (TCG PCR 17..20) change only through the guest's ATST ExtendMeasurement, so the host
//! cannot know them: the returned [`Measurement`](cvm_core::Measurement) holds only `PCR0`,
//! `PCR1`, `PCR2`, `PCR3` and `TCI` (`SHA384(PCR0 || PCR1 || PCR2 || PCR3)`), never zeros
//! standing in for unknown runtime values. The guest reads any register itself (ATST
//! ReadMeasurement); [`TsmModel::tvm_measurement`] shows all of them for model inspection.

pub mod abi;
/// The VMM's user pages behind private regions (see "Memory the guest shares").
mod backing;
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
