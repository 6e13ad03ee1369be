//! RISC-V CoVE backend for cvm: the TVM host flow over a TSM.
//!
//! There is no CoVE hardware on the build machines, so the TSM is the in-process model in
//! [`model`], faithful to Salus and the CoVE RFC.

pub mod abi;
pub mod covh;
pub mod measure;
pub mod model;
pub mod features;
pub mod host;
pub mod platform;

pub use covh::Covh;
pub use host::{CoveBackend, CoveVm};
pub use measure::{measure_log_cli, replay, MeasureCliError, MeasureError, TvmMeasurement};
pub use model::{ModelConfig, TsmModel};
pub use platform::CovePlatform;
