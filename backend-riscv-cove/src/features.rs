//! Guest ISA extensions as VM-wide feature registers (spec/cove.md §7.2–7.3).
//!
//! Each guest-visible extension has its KVM ISA extension id (`KVM_RISCV_ISA_EXT_*`, ONE_REG
//! id `0x8030_0000_0700_0000 | id`), the host extension that backs it (guest `smnpm` ← host
//! `ssnpm`, KVM `kvm_isa_ext_arr[SMNPM] = RISCV_ISA_EXT_SSNPM`), and KVM's rules
//! (`arch/riscv/kvm/isa.c`, `riscv_vcpu_set_isa_ext_single`): an extension the host lacks
//! cannot be enabled (-ENOENT); `zkr`, `ssnpm` and the base extensions cannot be disabled
//! (`kvm_riscv_isa_disable_allowed` → false); `smnpm` can (the guest then cannot turn pointer
//! masking on through SBI FWFT). Values are 1 (enabled) or 0. cvm-core fixes them at the
//! first run (`Error::Busy`, like KVM's -EBUSY).

use std::collections::BTreeSet;

use cvm_core::{Error, FeatureDef, FeatureValue, Result};

/// One guest-visible ISA extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsaExt {
    /// KVM name, lower case.
    pub name: &'static str,
    /// `KVM_RISCV_ISA_EXT_*` id.
    pub kvm_id: u32,
    /// The host extension that backs it.
    pub backed_by: &'static str,
    /// Whether user space may disable it (`kvm_riscv_isa_disable_allowed`).
    pub can_disable: bool,
}

const fn ext(
    name: &'static str,
    kvm_id: u32,
    backed_by: &'static str,
    can_disable: bool,
) -> IsaExt {
    IsaExt {
        name,
        kvm_id,
        backed_by,
        can_disable,
    }
}

/// The extensions a CoVE TVM of this model can see (what the RV64 CPU implements, plus Zkr
/// and pointer masking which the TSM provides).
pub const ISA_EXTENSIONS: [IsaExt; 9] = [
    ext("c", 1, "c", false),
    ext("i", 5, "i", false),
    ext("m", 6, "m", false),
    ext("zicntr", 19, "zicntr", false),
    ext("zicsr", 20, "zicsr", false),
    ext("zifencei", 21, "zifencei", false),
    ext("zkr", 32, "zkr", false),
    ext("smnpm", 62, "ssnpm", true),
    ext("ssnpm", 63, "ssnpm", false),
];

/// The ONE_REG id of ISA extension `kvm_id` (single register form): `KVM_REG_RISCV |
/// KVM_REG_SIZE_U64 | KVM_REG_RISCV_ISA_EXT | KVM_REG_RISCV_ISA_SINGLE | id`.
pub const fn isa_ext_reg_id(kvm_id: u32) -> u64 {
    0x8030_0000_0700_0000 | kvm_id as u64
}

/// The host's ISA extensions (names as in [`IsaExt::backed_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIsa {
    exts: BTreeSet<String>,
}

impl Default for HostIsa {
    /// A host with every backing extension.
    fn default() -> Self {
        Self {
            exts: ISA_EXTENSIONS
                .iter()
                .map(|e| e.backed_by.to_owned())
                .collect(),
        }
    }
}

impl HostIsa {
    /// A host lacking the named extensions.
    pub fn without(names: &[&str]) -> Self {
        let mut h = Self::default();
        for n in names {
            h.exts.remove(*n);
        }
        h
    }

    /// Whether the host has `name`.
    pub fn has(&self, name: &str) -> bool {
        self.exts.contains(name)
    }

    /// The names of the host's extensions.
    pub fn names(&self) -> Vec<String> {
        self.exts.iter().cloned().collect()
    }
}

/// Feature definitions for a VM on `host`: default 1 where the host backs the extension.
pub fn feature_defs(host: &HostIsa) -> Vec<FeatureDef> {
    ISA_EXTENSIONS
        .iter()
        .map(|e| {
            let present = host.has(e.backed_by);
            FeatureDef {
                name: e.name.to_owned(),
                default: u64::from(present),
                backed_by: Some(e.backed_by.to_owned()),
                can_disable: e.can_disable && present,
                can_enable: present,
            }
        })
        .collect()
}

/// KVM's enable/disable rule for a write of `value` to `def` (spec/cove.md §7.3).
pub fn check(def: &FeatureDef, current: u64, value: u64) -> Result<()> {
    let reject = |reason: String| {
        Err(Error::FeatureRejected {
            feature: def.name.clone(),
            value,
            reason,
        })
    };
    if value > 1 {
        return reject("ISA extension registers are 0 (disabled) or 1 (enabled)".into());
    }
    if value == current {
        return Ok(());
    }
    if value == 1 && !def.can_enable {
        return reject(format!(
            "the host lacks {} (KVM: -ENOENT)",
            def.backed_by.as_deref().unwrap_or("it")
        ));
    }
    if value == 0 && !def.can_disable {
        return reject(
            "KVM kvm_riscv_isa_disable_allowed() refuses to disable it (-EINVAL)".into(),
        );
    }
    Ok(())
}

/// The KVM ids of disabled extensions as a 128-bit mask (for the TSM's TVM_SET_ISA).
pub fn hidden_mask(values: &[FeatureValue]) -> u128 {
    values
        .iter()
        .filter(|v| v.value == 0)
        .filter_map(|v| ISA_EXTENSIONS.iter().find(|e| e.name == v.name))
        .fold(0u128, |m, e| m | (1u128 << e.kvm_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_and_rules() {
        assert_eq!(isa_ext_reg_id(32), 0x8030_0000_0700_0020);
        assert_eq!(isa_ext_reg_id(62), 0x8030_0000_0700_003e);
        assert_eq!(isa_ext_reg_id(63), 0x8030_0000_0700_003f);
        let defs = feature_defs(&HostIsa::default());
        let d = |n: &str| defs.iter().find(|d| d.name == n).unwrap().clone();
        assert_eq!(d("smnpm").backed_by.as_deref(), Some("ssnpm"));
        assert!(check(&d("smnpm"), 1, 0).is_ok());
        assert!(check(&d("smnpm"), 0, 1).is_ok());
        assert!(check(&d("zkr"), 1, 0).is_err());
        assert!(check(&d("ssnpm"), 1, 0).is_err());
        assert!(check(&d("zkr"), 1, 2).is_err());
        let no_zkr = feature_defs(&HostIsa::without(&["zkr", "ssnpm"]));
        let z = no_zkr.iter().find(|d| d.name == "zkr").unwrap();
        assert_eq!(z.default, 0);
        assert!(check(z, 0, 1).is_err());
        let s = no_zkr.iter().find(|d| d.name == "smnpm").unwrap();
        assert_eq!(s.default, 0);
        let m = hidden_mask(&[
            FeatureValue {
                name: "zkr".into(),
                value: 0,
            },
            FeatureValue {
                name: "smnpm".into(),
                value: 0,
            },
            FeatureValue {
                name: "i".into(),
                value: 1,
            },
        ]);
        assert_eq!(m, (1 << 32) | (1 << 62));
    }
}
