//! Portable guest programs: one description of guest behaviour, lowered to real x86-64, AArch64
//! and RV64 machine code, whose results come back through a ucall-style MMIO doorbell.

mod platform;
mod program;

pub use platform::{
    x86_reg, Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep,
};
pub use program::{Op, Program, Slot};
