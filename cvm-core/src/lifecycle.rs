//! The launch lifecycle shared by every backend: `Building` → `Finalized` → `Off`.
//!
//! [`Lifecycle`] is the one piece of code that decides whether an operation is allowed. The
//! generic [`crate::ManagedVm`] calls it before delegating to a backend, so no backend can
//! accept a call in the wrong state, and a refused call changes nothing.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a VM is in its launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaunchState {
    /// Memory, images and vCPUs are being added and measured; no vCPU may run.
    Building,
    /// The launch measurement is sealed; vCPUs may run.
    Finalized,
    /// The guest powered off or the VM was destroyed; only queries are allowed.
    Off,
}

impl LaunchState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => LaunchState::Building,
            1 => LaunchState::Finalized,
            _ => LaunchState::Off,
        }
    }
}

impl fmt::Display for LaunchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchState::Building => "building",
            LaunchState::Finalized => "finalized",
            LaunchState::Off => "off",
        })
    }
}

/// The operations the lifecycle knows, with the states each is allowed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add private memory (measured launch state only).
    AddPrivateMemory,
    /// Add shared memory.
    AddSharedMemory,
    /// Remove a region.
    RemoveMemory,
    /// Load bytes that are measured into the launch digest.
    LoadMeasured,
    /// Load bytes without measuring them.
    LoadUnmeasured,
    /// Create a vCPU.
    CreateVcpu,
    /// Seal the launch.
    Finalize,
    /// Enter a vCPU.
    Run,
    /// Convert memory between private and shared from the host.
    Convert,
    /// Write a VM-wide feature register.
    SetFeature,
    /// Tear the VM down.
    Destroy,
}

impl Op {
    /// The operation's name as used in errors.
    pub fn name(self) -> &'static str {
        match self {
            Op::AddPrivateMemory => "add_memory(private)",
            Op::AddSharedMemory => "add_memory(shared)",
            Op::RemoveMemory => "remove_memory",
            Op::LoadMeasured => "load(measured)",
            Op::LoadUnmeasured => "load(unmeasured)",
            Op::CreateVcpu => "create_vcpu",
            Op::Finalize => "finalize",
            Op::Run => "run",
            Op::Convert => "convert",
            Op::SetFeature => "set_feature",
            Op::Destroy => "destroy",
        }
    }

    /// Whether the operation is allowed in `state`.
    pub fn allowed_in(self, state: LaunchState) -> bool {
        use LaunchState::*;
        match self {
            Op::AddPrivateMemory | Op::LoadMeasured | Op::CreateVcpu | Op::Finalize => {
                state == Building
            }
            Op::AddSharedMemory | Op::RemoveMemory | Op::LoadUnmeasured | Op::SetFeature => {
                state != Off
            }
            Op::Run | Op::Convert => state == Finalized,
            Op::Destroy => true,
        }
    }
}

/// The shared state machine. Reads are lock-free (a vCPU checks it on every run); state-changing
/// operations hold a mutex so that, e.g., `finalize` and `add_memory` never interleave.
#[derive(Debug, Default)]
pub struct Lifecycle {
    state: AtomicU8,
    transition: Mutex<()>,
}

/// Proof that an operation was allowed; holds the transition lock until dropped.
pub struct Permit<'a> {
    lifecycle: &'a Lifecycle,
    _guard: MutexGuard<'a, ()>,
}

impl Permit<'_> {
    /// Moves the VM to `to`. Call it only after the operation succeeded.
    pub fn commit(self, to: LaunchState) {
        self.lifecycle.state.store(to as u8, Ordering::Release);
    }
}

impl Lifecycle {
    /// A lifecycle in `Building`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state.
    pub fn state(&self) -> LaunchState {
        LaunchState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Lock-free check for hot paths (vCPU entry).
    pub fn check(&self, op: Op) -> Result<()> {
        let state = self.state();
        if op.allowed_in(state) {
            Ok(())
        } else {
            Err(Error::InvalidState {
                op: op.name(),
                state,
            })
        }
    }

    /// Serialises a state-dependent operation: returns a permit if `op` is allowed now.
    pub fn begin(&self, op: Op) -> Result<Permit<'_>> {
        let guard = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        self.check(op)?;
        Ok(Permit {
            lifecycle: self,
            _guard: guard,
        })
    }

    /// Moves to `Off` from any state (guest power-off observed by a vCPU).
    pub fn power_off(&self) {
        let _guard = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        self.state.store(LaunchState::Off as u8, Ordering::Release);
    }
}
