//! The one error type of the cvm contract.
//!
//! Every failure a caller, a file or a guest can cause is a typed value here; backends wrap their
//! own typed errors (errno, firmware status codes) instead of flattening them into strings.

use crate::exit::{ExitKind, ResumeKind};
use crate::lifecycle::LaunchState;
use crate::memory::RegionError;

/// Result alias used throughout cvm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A firmware call (RMI, COVH, …) returned a status other than success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} returned {status_name} (code {code}, index {index})")]
pub struct FirmwareError {
    /// The call's name as in its specification, e.g. `RMI_DATA_CREATE`.
    pub call: &'static str,
    /// The raw status code (RMI: the low byte of X0; SBI: the signed error in a0).
    pub code: i64,
    /// The status' name in its specification, e.g. `RMI_ERROR_RTT`.
    pub status_name: &'static str,
    /// Extra index carried with the status (RMI: X0 bits 15:8, e.g. the RTT level); 0 if none.
    pub index: u64,
}

/// Errors of the cvm contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The call is not allowed in the VM's current launch state; nothing was changed.
    #[error("{op} is not allowed while the VM is {state}")]
    InvalidState {
        /// The refused operation.
        op: &'static str,
        /// The state the VM was in.
        state: LaunchState,
    },
    /// The `Resume` given to `run` does not answer the pending exit; the guest was not entered.
    #[error("resume {resume:?} does not answer the pending exit {pending:?}")]
    ResumeMismatch {
        /// The exit that is waiting for an answer, if any.
        pending: Option<ExitKind>,
        /// What the caller passed.
        resume: ResumeKind,
    },
    /// A memory region was refused.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A VM-wide feature register was written with a different value after the first run.
    #[error("feature {feature} is fixed after the first run (current {current:#x}, requested {requested:#x})")]
    Busy {
        /// The feature register.
        feature: String,
        /// Its fixed value.
        current: u64,
        /// The refused value.
        requested: u64,
    },
    /// The named feature register does not exist on this VM.
    #[error("unknown feature register {0}")]
    UnknownFeature(String),
    /// The backend refused a feature value (e.g. enabling what the host cannot back).
    #[error("feature {feature} cannot be set to {value:#x}: {reason}")]
    FeatureRejected {
        /// The feature register.
        feature: String,
        /// The refused value.
        value: u64,
        /// Why.
        reason: String,
    },
    /// The backend or host lacks a capability the request needs.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The backend cannot be used on this host.
    #[error("backend {backend} is unavailable: {reason}")]
    Unavailable {
        /// The backend's name.
        backend: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// A guest-physical range is not inside any region of the kind the call needs.
    #[error("guest range {gpa:#x}+{len:#x} is not backed by {what}")]
    NotMapped {
        /// Start of the range.
        gpa: u64,
        /// Length of the range.
        len: u64,
        /// What the call needed there (e.g. "private memory").
        what: &'static str,
    },
    /// An argument is out of its documented domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An operating-system call failed.
    #[error("{op} failed")]
    Os {
        /// The system call or ioctl, e.g. `KVM_SET_USER_MEMORY_REGION2`.
        op: &'static str,
        /// The errno, as an `io::Error`.
        #[source]
        source: std::io::Error,
    },
    /// A firmware call failed.
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    /// A backend-specific error, kept typed for downcasting.
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps an errno-style error from `op`.
    pub fn os(op: &'static str, source: impl Into<std::io::Error>) -> Self {
        Error::Os {
            op,
            source: source.into(),
        }
    }

    /// Wraps a backend's own error type.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Backend(Box::new(e))
    }

    /// The errno, if this is an operating-system error.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
