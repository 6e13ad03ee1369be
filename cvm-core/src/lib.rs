//! # cvm-core: the contract every cvm backend implements
//!
//! One API to build, launch, run and measure confidential VMs on Arm CCA (realms), RISC-V CoVE
//! (TVMs) and plain KVM:
//!
//! ```text
//! Backend ──create_vm(&VmConfig)──▶ Vm ──create_vcpu(VcpuInit)──▶ Vcpu ──run(Resume)──▶ VmExit
//!    info() -> BackendInfo          add_memory / load / finalize / measurement / convert / features
//! ```
//!
//! * [`Backend`], [`Vm`] and [`Vcpu`] are object safe: a VMM picks a backend at run time.
//! * Every backend wraps its [`VmOps`] in [`ManagedVm`], which enforces the launch
//!   [`lifecycle`] (`Building` → `Finalized` → `Off`), region validation, the
//!   [`validate_resume`] rule and the feature-register freeze in one place.
//! * [`guest`] holds portable guest programs and their lowering to machine code.
//!
//! Nothing here knows a backend; backends depend on this crate, never the reverse.

pub mod config;
pub mod error;
pub mod exit;
pub mod features;
pub mod guest;
pub mod lifecycle;
pub mod measure;
pub mod memory;
pub mod stats;
pub mod vm;

pub use config::{
    Arch, BackendInfo, Capability, CcaConfig, Confidentiality, CoveConfig, EntropyPolicy,
    Implementation, Measure, VcpuInit, VmConfig,
};
pub use error::{Error, FirmwareError, Result};
pub use exit::{
    mask_to_size, sign_extend, validate_resume, ExitDetail, ExitKind, Resume, ResumeKind, VmExit,
};
pub use features::{FeatureDef, FeatureRegisters, FeatureValue};
pub use lifecycle::{LaunchState, Lifecycle, Op};
pub use measure::{
    Content, HashAlgorithm, LogError, Measurement, MeasurementEvent, MeasurementLog,
    MeasurementRegister, RealmParamsLog,
};
pub use memory::{MemoryKind, MemoryRegion, RegionError, RegionSet, PAGE_SIZE};
pub use stats::{Stats, StatsRecorder};
pub use vm::{Backend, ManagedVcpu, ManagedVm, Vcpu, VcpuOps, Vm, VmOps, VmShared};

/// Re-exported so backends and VMMs name one vm-memory version.
pub use vm_memory;
