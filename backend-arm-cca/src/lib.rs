//! Arm CCA backend for cvm: the realm host flow over an RMM.
//!
//! There is no CCA hardware on the build machines, so the RMM is the in-process model in
//! [`model`], held to the RMM specification (DEN0137 1.0-rel0, as implemented by TF-RMM).

pub mod abi;
pub mod cli;
pub mod measure;
pub mod model;
pub mod rmi;

pub use cli::{measure_log_cli, MeasureCliError};
pub use measure::{replay, CcaMeasurement};
pub use model::{Rmm, RmmConfig};
pub use rmi::{FailNth, HostMemError, Rmi, RmiClient, RmiError};
