//! The in-process TSM model and the RV64 guest CPU it runs TVMs on.

pub mod cpu;
