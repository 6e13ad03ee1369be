//! RISC-V CoVE backend for cvm: the TVM host flow over a TSM.
//!
//! There is no CoVE hardware on the build machines, so the TSM is the in-process model in
//! [`model`], faithful to Salus and the CoVE RFC.

pub mod model;
