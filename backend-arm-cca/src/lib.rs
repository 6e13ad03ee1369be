//! # Arm CCA backend for cvm
//!
//! Realms over an RMM through the RMI ([`Rmi`]). There is no CCA hardware on the build
//! machines, so the RMM is the in-process [`model`], held to RMM 1.0-rel0 as TF-RMM implements
//! it, running realms on an AArch64 interpreter. Modules:
//!
//! * [`abi`]: RMI/RSI FIDs, status codes, enumerations and the `#[repr(C)]` structures with
//!   compile-time layout checks;
//! * [`measure`]: the pure RIM/REM calculator and [`replay`] of a measurement log (the model
//!   runs the same code); [`cli`]: `cvm measure cca`;
//! * [`rmi`]: the [`Rmi`] trait, the typed [`RmiClient`] and the failure injector [`FailNth`];
//! * [`host`]: the host flow (realm creation, RTT policy, loads, RECs, the run loop, teardown);
//!   [`backend`]: [`CcaBackend`]; [`platform`]: [`CcaPlatform`]; [`features`]: ID registers;
//! * [`model`]: the RMM model and the guest CPU.
//!
//! ## Exit mapping (RecExit → VmExit, Resume → RecEnter)
//!
//! | RecExit | condition | VmExit |
//! |---|---|---|
//! | SYNC, EC 0x24 (DABT) | unprotected IPA, ISV = 1 | `Mmio { gpa: (HPFAR IPA & !unprotected bit) \| (far & 0xFFF), size: 1 << SAS, write: WnR.then(gprs[0]) }` |
//! | SYNC, EC 0x24 | unprotected IPA, ISV = 0 | none: re-entered with INJECT_SEA (as KVM) |
//! | SYNC, EC 0x24 / 0x20 | protected private RAM not yet populated | none: RMI_DATA_CREATE_UNKNOWN, re-entered |
//! | SYNC, EC 0x24 / 0x20 | protected, not private RAM / DFSC SEA | `Fault` |
//! | SYNC, EC 0x01 (WFx) | WFI (TRAP_WFI is always set) | `Halt` |
//! | SYNC, EC 0x01 | WFE | none: re-entered |
//! | SYNC, EC 0x18 (sysreg) | ID-register read | none: answered from the VM's feature registers via gprs\[0\] |
//! | IRQ / FIQ | model budget spent | none: re-entered; `Interrupted` after 64 in a row |
//! | PSCI | SYSTEM_OFF / SYSTEM_RESET | `SystemOff` / `Reset` |
//! | PSCI | CPU_ON / AFFINITY_INFO | none: RMI_PSCI_COMPLETE(SUCCESS), target marked runnable |
//! | PSCI | CPU_OFF / CPU_SUSPEND | `Halt` |
//! | RIPAS_CHANGE | | `ConvertMemory { gpa: ripas_base, size: top − base, to_private: ripas_value == RAM }` |
//! | HOST_CALL | | `HostCall { nr: imm, args: gprs[0..6] }` |
//! | SERROR / other | | `Fault` |
//!
//! | pending exit | Resume | RecEnter |
//! |---|---|---|
//! | `Mmio` write | `Done` | flags EMULATED_MMIO (the RMM advances PC) |
//! | `Mmio` read | `MmioRead(v)` | gprs\[0\] = v, flags EMULATED_MMIO (the RMM masks, sign-extends, writes Rt, PC += 4) |
//! | `Mmio` | `InjectAbort` | flags INJECT_SEA |
//! | `ConvertMemory` | `Conversion(true)` | RMI_RTT_SET_RIPAS until done, then flags RIPAS_RESPONSE = 0 |
//! | `ConvertMemory` | `Conversion(false)` | flags RIPAS_RESPONSE = 1 |
//! | `HostCall` | `HostCall([r0, r1])` | gprs = the exit's gprs with gprs\[0\] = r0, gprs\[1\] = r1 |
//! | any other | `Done` | flags TRAP_WFI only |
//!
//! Addresses in exits are the device view: the unprotected bit `1 << (s2sz − 1)` is stripped,
//! as KVM does. A vCPU that is not runnable (a secondary before PSCI CPU_ON, or after CPU_OFF)
//! returns `Halt` without entering.
//!
//! `Vcpu::exit_detail()` gives the RecExit behind the last exit (built on demand from the raw
//! fields the run loop keeps; `None` before the first entry and after a `Halt` that did not
//! enter):
//!
//! | RecExit | `reason` | `registers` | `channel` |
//! |---|---|---|---|
//! | SYNC, data abort | `RMI_EXIT_SYNC (data abort)` | `esr`, `far`, `hpfar` as in RecExit; `gprs[0]` for an MMIO write | MMIO write `RecExit.gprs[0]`; MMIO read `RecEntry.gprs[0] + EMULATED_MMIO` |
//! | SYNC, other | `RMI_EXIT_SYNC (instruction abort \| WFI \| WFE \| system register \| EC n)` | `esr` (+ `far`, `hpfar` for aborts) | sysreg: `RecEntry.gprs[0]` |
//! | PSCI | `RMI_EXIT_PSCI` | `gprs[0..3]` (function id, arguments) | `RecExit.gprs[0..3]; RMI_PSCI_COMPLETE` |
//! | RIPAS_CHANGE | `RMI_EXIT_RIPAS_CHANGE` | `ripas_base`, `ripas_top`, `ripas_value` | `RMI_RTT_SET_RIPAS + RecEntry.flags.RIPAS_RESPONSE` |
//! | HOST_CALL | `RMI_EXIT_HOST_CALL` | `imm` | `RsiHostCall.gprs via RecExit.gprs / RecEntry.gprs` |
//! | IRQ / FIQ / SERROR | `RMI_EXIT_IRQ` / `RMI_EXIT_FIQ` / `RMI_EXIT_SERROR` | (SERROR: syndromes) | |
//!
//! The launch order (measured loads sorted by IPA before the RECs, as CRM's reference order),
//! the RTT policy and the shared backing behind guest conversions are described in [`host`].

pub mod abi;
pub mod backend;
pub mod cli;
pub mod features;
pub mod host;
pub mod measure;
pub mod model;
pub mod platform;
pub mod rmi;

pub use backend::CcaBackend;
pub use cli::{measure_log_cli, MeasureCliError};
pub use host::{CcaVm, LoadOverlap, RealmSetup};
pub use measure::{replay, CcaMeasurement};
pub use model::{Rmm, RmmConfig};
pub use platform::CcaPlatform;
pub use rmi::{FailNth, HostMemError, Rmi, RmiClient, RmiError};
