//! The in-process RMM model and the AArch64 guest CPU it runs realms on.

pub mod cpu;
