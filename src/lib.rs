//! # cvm: one API for confidential VMs on Arm CCA, RISC-V CoVE and plain KVM
//!
//! This facade re-exports the contract ([`cvm_core`], also glob-re-exported at the crate root)
//! and the three backends, and holds the library side of the `cvm` command line: the backend
//! registry ([`backends`], [`backend`]), `cvm info` ([`info`]) and `cvm compare` ([`compare`]).
//!
//! ```no_run
//! use cvm::{Confidentiality, VmConfig};
//!
//! // Pick a backend at run time; selection fails closed.
//! let backend = cvm::backend("arm-cca")?;
//! let vm = backend.create_vm(&VmConfig::new(Confidentiality::ArmCca))?;
//! # Ok::<(), cvm::Error>(())
//! ```

pub mod compare;
pub mod info;
pub mod run;
pub mod spec;

pub use cvm_core::*;

/// The plain KVM backend.
pub use backend_kvm_plain as kvm;

/// The Arm CCA backend (realm host flow over an RMM).
pub use backend_arm_cca as cca;

/// The RISC-V CoVE backend (TVM host flow over a TSM).
pub use backend_riscv_cove as cove;

/// A backend that cannot be used on this host: reports its probe and refuses VMs.
pub struct UnavailableBackend {
    info: BackendInfo,
}

impl UnavailableBackend {
    /// Wraps a probe result whose `available` is false.
    pub fn new(info: BackendInfo) -> Self {
        Self { info }
    }
}

impl Backend for UnavailableBackend {
    fn info(&self) -> BackendInfo {
        self.info.clone()
    }

    fn create_vm(&self, _config: &VmConfig) -> Result<Box<dyn Vm>> {
        Err(Error::Unavailable {
            backend: self.info.name.clone(),
            reason: self
                .info
                .unavailable_reason
                .clone()
                .unwrap_or_else(|| "not available on this host".into()),
        })
    }
}

/// The names [`backend`] accepts, in the order [`backends`] lists them.
pub const BACKEND_NAMES: [&str; 3] = ["kvm", "arm-cca", "riscv-cove"];

/// Every compiled-in backend, including those unavailable on this host (their `info()` says
/// why and `create_vm` refuses).
pub fn backends() -> Vec<Box<dyn Backend>> {
    BACKEND_NAMES
        .iter()
        .filter_map(|name| backend_or_unavailable(name))
        .collect()
}

fn backend_or_unavailable(name: &str) -> Option<Box<dyn Backend>> {
    Some(match name {
        "kvm" => match kvm::KvmBackend::open() {
            Ok(b) => Box::new(b),
            Err(_) => Box::new(UnavailableBackend::new(kvm::KvmBackend::probe())),
        },
        "arm-cca" => Box::new(cca::CcaBackend::model()),
        "riscv-cove" => Box::new(cove::CoveBackend::model()),
        _ => return None,
    })
}

/// The backend called `name` (`kvm`, `arm-cca`, `riscv-cove`; `cca` and `cove` also work).
/// Fails if the name is unknown or the backend is unavailable here.
pub fn backend(name: &str) -> Result<Box<dyn Backend>> {
    let canonical = match name {
        "cca" => "arm-cca",
        "cove" => "riscv-cove",
        other => other,
    };
    let b = backend_or_unavailable(canonical).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown backend {name:?}; known: {}",
            BACKEND_NAMES.join(", ")
        ))
    })?;
    let info = b.info();
    if !info.available {
        return Err(Error::Unavailable {
            backend: info.name,
            reason: info.unavailable_reason.unwrap_or_default(),
        });
    }
    Ok(b)
}
