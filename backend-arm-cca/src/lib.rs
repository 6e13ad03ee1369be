//! Arm CCA backend for cvm: the realm host flow over an RMM.
//!
//! There is no CCA hardware on the build machines, so the RMM is the in-process model in
//! [`model`], held to the RMM specification (DEN0137 1.0-rel0, as implemented by TF-RMM).

pub mod model;
