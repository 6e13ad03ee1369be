//! VM-wide feature registers (ID registers, ISA extensions) that freeze at the first run.
//!
//! Before any vCPU has run, writes are free (subject to the backend's rules). The first run
//! freezes the set: afterwards writing the value a register already has is accepted and any
//! other value is [`Error::Busy`], as KVM does for ID registers and ISA extensions. Writers are
//! serialised by a mutex; guest-side reads are a single atomic load and take no lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Describes one guest-visible feature register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureDef {
    /// Name, e.g. `ID_AA64PFR0_EL1` or `zkr`.
    pub name: String,
    /// The value the VM starts with (the host's sanitised value).
    pub default: u64,
    /// The host feature that backs it, e.g. `ssnpm` for guest `smnpm`.
    pub backed_by: Option<String>,
    /// Whether user space may lower/disable it.
    pub can_disable: bool,
    /// Whether user space may raise/enable it above the default.
    pub can_enable: bool,
}

/// One register's name and value, as reported by [`FeatureRegisters::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureValue {
    /// Name.
    pub name: String,
    /// Current value.
    pub value: u64,
}

/// The VM-wide register file.
#[derive(Debug)]
pub struct FeatureRegisters {
    defs: Vec<FeatureDef>,
    values: Box<[AtomicU64]>,
    frozen: AtomicBool,
    writer: Mutex<()>,
}

impl FeatureRegisters {
    /// A register file holding each definition's default.
    pub fn new(defs: Vec<FeatureDef>) -> Self {
        let values = defs.iter().map(|d| AtomicU64::new(d.default)).collect();
        Self {
            defs,
            values,
            frozen: AtomicBool::new(false),
            writer: Mutex::new(()),
        }
    }

    /// The definitions.
    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    /// Index of `name`, for repeated lock-free reads.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// Lock-free read by index (the guest side).
    pub fn read_index(&self, index: usize) -> Option<u64> {
        self.values.get(index).map(|v| v.load(Ordering::Acquire))
    }

    /// Lock-free read by name.
    pub fn read(&self, name: &str) -> Option<u64> {
        self.index(name).and_then(|i| self.read_index(i))
    }

    /// Whether the first run has happened.
    pub fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Acquire)
    }

    /// Writes `value` to `name`. `check` is the backend's rule (enable/disable allowed, host
    /// support); it runs only when the value would change something before the first run.
    pub fn write(
        &self,
        name: &str,
        value: u64,
        check: impl FnOnce(&FeatureDef, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let index = self
            .index(name)
            .ok_or_else(|| Error::UnknownFeature(name.to_owned()))?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &self.values[index];
        let current = slot.load(Ordering::Acquire);
        if current == value {
            return Ok(());
        }
        if self.frozen.load(Ordering::Acquire) {
            return Err(Error::Busy {
                feature: name.to_owned(),
                current,
                requested: value,
            });
        }
        check(&self.defs[index], current, value)?;
        slot.store(value, Ordering::Release);
        Ok(())
    }

    /// Freezes the registers (called on the first run; idempotent).
    pub fn freeze(&self) {
        if !self.frozen.load(Ordering::Acquire) {
            let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            self.frozen.store(true, Ordering::Release);
        }
    }

    /// Every register's current value.
    pub fn snapshot(&self) -> Vec<FeatureValue> {
        self.defs
            .iter()
            .zip(self.values.iter())
            .map(|(d, v)| FeatureValue {
                name: d.name.clone(),
                value: v.load(Ordering::Acquire),
            })
            .collect()
    }
}
