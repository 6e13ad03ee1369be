//! Portable guest programs: one description of guest behaviour, lowered to real x86-64, AArch64
//! and RV64 machine code, whose results come back through a ucall-style MMIO doorbell.
//!
//! Follow an MMIO read end to end:
//!
//! 1. [`Program::mmio_read`] records [`Op::MmioRead`] and hands out a [`Slot`];
//! 2. [`lower`] (in `lower.rs`) applies [`GuestPlatform::device_address`] and asks the ISA
//!    emitter (`x86_64.rs`, `aarch64.rs`, `riscv64.rs`) for one load instruction of the right
//!    width and extension, stored to the slot's cell in the data page; [`Op::Report`] then
//!    writes the cell to the [`doorbell`];
//! 3. the backend turns the load into [`VmExit::Mmio`](crate::VmExit::Mmio), which the
//!    [`Runner`] (in `runner.rs`) answers from its [`TestDevice`], and decodes the doorbell
//!    writes into [`Report::Value`].
//!
//! [`launch`] builds a finalized VM running a program on any backend.

mod aarch64;
pub mod doorbell;
#[cfg(test)]
mod golden;
mod lower;
mod platform;
mod program;
mod riscv64;
mod runner;
mod x86_64;

pub use doorbell::{PlatformOp, Report};
pub use lower::{
    lower, GuestImage, LowerError, DATA_EXCEPTION_FLAG, DATA_PLATFORM_SCRATCH, DATA_RESULTS,
    DATA_SLOTS, MAX_HOST_CALL_ARGS, MAX_REPEAT_DEPTH, RESULT_WORDS,
};
pub use platform::{
    x86_reg, Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep,
};
pub use program::{Op, Program, Slot};
pub use runner::{
    launch, ConversionRecord, DeviceWrite, HostCallRecord, LaunchError, Launched, RunError,
    RunOutcome, Runner, TestDevice, DEFAULT_EXIT_BUDGET,
};
