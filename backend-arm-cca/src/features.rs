//! The realm's guest-visible ID registers.
//!
//! The model "host" is an Armv8/9 PE with FEAT_RME, FEAT_RNG, GICv3, EL0–EL3 AArch64 only and
//! neither FP/SIMD nor SVE in the guest CPU. Guest values are sanitised as KVM does
//! (`arch/arm64/kvm/sys_regs.c read_sanitised_id_aa64pfr0_el1`): RME and EL2 are hidden in
//! ID_AA64PFR0_EL1, the debug fields of ID_AA64DFR0_EL1 follow the realm's breakpoints,
//! watchpoints and PMU. A VMM may lower any 4-bit field before the first run and raise none
//! (KVM's "safe value" rule, simplified to unsigned fields); after the first run cvm-core
//! freezes them. A realm's reads of the ID space (Op0 3, Op1 0, CRn 0, CRm 1..7) reach the host
//! as sysreg exits, which the host flow answers from these registers (unknown ones read as 0).

use cvm_core::{CcaConfig, Error, FeatureDef, Result};

/// An ID register and its MRS encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdReg {
    /// Name.
    pub name: &'static str,
    /// (Op0, Op1, CRn, CRm, Op2).
    pub encoding: (u8, u8, u8, u8, u8),
}

const fn id(name: &'static str, crm: u8, op2: u8) -> IdReg {
    IdReg {
        name,
        encoding: (3, 0, 0, crm, op2),
    }
}

/// The ID registers the realm sees.
pub const ID_REGS: &[IdReg] = &[
    id("ID_AA64PFR0_EL1", 4, 0),
    id("ID_AA64PFR1_EL1", 4, 1),
    id("ID_AA64ZFR0_EL1", 4, 4),
    id("ID_AA64DFR0_EL1", 5, 0),
    id("ID_AA64DFR1_EL1", 5, 1),
    id("ID_AA64AFR0_EL1", 5, 4),
    id("ID_AA64AFR1_EL1", 5, 5),
    id("ID_AA64ISAR0_EL1", 6, 0),
    id("ID_AA64ISAR1_EL1", 6, 1),
    id("ID_AA64ISAR2_EL1", 6, 2),
    id("ID_AA64MMFR0_EL1", 7, 0),
    id("ID_AA64MMFR1_EL1", 7, 1),
    id("ID_AA64MMFR2_EL1", 7, 2),
];

/// ID_AA64PFR0_EL1 of the model host: EL0..EL3 AArch64 (1 each), FP/AdvSIMD not implemented
/// (0xF), GICv3 system registers (1), RME (1, bits \[55:52\]).
pub const HOST_ID_AA64PFR0: u64 = 0x0010_0000_01FF_1111;
/// RME field of ID_AA64PFR0_EL1.
pub const PFR0_RME_MASK: u64 = 0xF << 52;
/// EL2 field of ID_AA64PFR0_EL1.
pub const PFR0_EL2_MASK: u64 = 0xF << 8;
/// EL3 field of ID_AA64PFR0_EL1.
pub const PFR0_EL3_MASK: u64 = 0xF << 12;

/// The register named `name` with the given encoding, if it is one of [`ID_REGS`].
pub fn by_encoding(encoding: (u8, u8, u8, u8, u8)) -> Option<&'static IdReg> {
    ID_REGS.iter().find(|r| r.encoding == encoding)
}

/// The guest values for a realm built from `cca`.
pub fn guest_value(name: &str, cca: &CcaConfig) -> u64 {
    match name {
        // KVM hides RME, and EL2 without nested virtualisation; EL3 is not visible to guests.
        "ID_AA64PFR0_EL1" => HOST_ID_AA64PFR0 & !(PFR0_RME_MASK | PFR0_EL2_MASK | PFR0_EL3_MASK),
        // DebugVer 8.0 (6), BRPs/WRPs "minus one", PMUVer 3 (1) only with a PMU.
        "ID_AA64DFR0_EL1" => {
            let bps = u64::from(cca.num_bps.saturating_sub(1) & 0xF);
            let wps = u64::from(cca.num_wps.saturating_sub(1) & 0xF);
            let pmu = if cca.pmu_num_ctrs > 0 { 1 } else { 0 };
            6 | (pmu << 8) | (bps << 12) | (wps << 20)
        }
        // FEAT_RNG (RNDR = 1, bits [63:60]).
        "ID_AA64ISAR0_EL1" => 1 << 60,
        // PARange 48 bits (5), TGran4 supported (0), TGran64 / TGran16 not (0xF / 0).
        "ID_AA64MMFR0_EL1" => 0x0F00_0005,
        _ => 0,
    }
}

/// The feature table of a realm VM.
pub fn feature_defs(cca: &CcaConfig) -> Vec<FeatureDef> {
    ID_REGS
        .iter()
        .map(|r| FeatureDef {
            name: r.name.to_owned(),
            default: guest_value(r.name, cca),
            backed_by: Some(format!("host {}", r.name)),
            can_disable: true,
            can_enable: false,
        })
        .collect()
}

/// KVM's rule, simplified: every 4-bit field may only stay or go down.
pub fn check_id_write(def: &FeatureDef, value: u64) -> Result<()> {
    for shift in (0..64).step_by(4) {
        let (new, max) = ((value >> shift) & 0xF, (def.default >> shift) & 0xF);
        if new > max {
            return Err(Error::FeatureRejected {
                feature: def.name.clone(),
                value,
                reason: format!(
                    "field [{}:{shift}] = {new:#x} exceeds the host's {max:#x}",
                    shift + 3
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rme_is_hidden() {
        let v = guest_value("ID_AA64PFR0_EL1", &CcaConfig::default());
        assert_eq!(v & PFR0_RME_MASK, 0);
        assert_ne!(HOST_ID_AA64PFR0 & PFR0_RME_MASK, 0);
    }

    #[test]
    fn fields_only_go_down() {
        let defs = feature_defs(&CcaConfig::default());
        let isar0 = defs.iter().find(|d| d.name == "ID_AA64ISAR0_EL1").unwrap();
        assert!(check_id_write(isar0, 0).is_ok());
        assert!(check_id_write(isar0, 2 << 60).is_err());
        assert!(check_id_write(isar0, 1 << 4).is_err());
    }
}
