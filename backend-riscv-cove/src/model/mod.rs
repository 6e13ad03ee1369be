//! The in-process TSM model and the RV64 guest CPU it runs TVMs on.
//!
//! There is no CoVE hardware on the build machines, so [`TsmModel`] stands in for the TSM
//! (Salus-faithful: spec/cove.md) and [`cpu::Rv64Cpu`] for the harts running TVMs.
//!
//! * [`tsm`] — the machine and the ECALL dispatcher ([`crate::covh::Covh`]).
//! * [`pages`] — physical page states, conversion and the TSM fence over N harts.
//! * [`tvm`] — TVM state machine, regions, G-stage mappings, COVH TVM calls.
//! * [`vcpu`] — TVM_VCPU_RUN: pending-op completion, guest SBI, exits.
//! * [`nacl`], [`covg`], [`atst`], [`covi`] — the NACL, COVG, ATST and COVI extensions.

pub mod atst;
pub mod covg;
pub mod covi;
pub mod cpu;
pub mod nacl;
pub mod pages;
pub mod tsm;
pub mod tvm;
pub mod vcpu;

pub use tsm::{ModelConfig, TsmModel};
