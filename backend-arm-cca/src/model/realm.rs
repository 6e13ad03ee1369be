//! Realm Descriptors: RMI_REALM_CREATE (with `validate_realm_params`), RMI_REALM_ACTIVATE,
//! RMI_REALM_DESTROY and RMI_FEATURES — TF-RMM `runtime/rmi/realm.c`, `runtime/rmi/feature.c`,
//! `runtime/include/realm.h`; spec/cca.md §1.3–§1.4, §2.2.

use cvm_core::{HashAlgorithm, RealmParamsLog};
use zerocopy::FromBytes;

use crate::abi::{
    feature0, realm_flags, GranuleState, RealmParams, RealmState, RmiStatus, GRANULE_SIZE, RPV_SIZE,
};
use crate::measure::{algorithm_from_rmi, Rems, Rim};
use crate::model::rmm::{err, ok, ret1, Ret, RmmState};
use crate::model::rtt::{map_size, root_tables, Rtt, Rtte, ENTRIES};

/// A realm, held in its RD granule.
#[derive(Debug, Clone)]
pub(crate) struct Realm {
    /// REALM_NEW / ACTIVE / SYSTEM_OFF.
    pub state: RealmState,
    /// IPA width.
    pub s2sz: u8,
    /// RTT starting level.
    pub sl: i8,
    /// Root RTT granules.
    pub root: Vec<u64>,
    /// The measurement algorithm.
    pub algorithm: HashAlgorithm,
    /// The RIM.
    pub rim: Rim,
    /// REM1..REM4.
    pub rems: Rems,
    /// Realm Personalization Value.
    pub rpv: [u8; RPV_SIZE],
    /// VMID.
    pub vmid: u16,
    /// RECs created so far (the next REC's index; TF-RMM `rd->rec_count`).
    pub rec_count: u64,
    /// RECs alive (RD refcount).
    pub recs_alive: u64,
    /// Model DRBG counter for RNDR.
    pub rng_counter: u64,
}

impl Realm {
    /// Bytes of IPA space (2^s2sz).
    pub fn ipa_size(&self) -> u64 {
        1u64 << self.s2sz
    }

    /// Bytes of the Protected Address Range (the lower half).
    pub fn par_size(&self) -> u64 {
        1u64 << (self.s2sz - 1)
    }

    /// Whether `ipa` is protected (TF-RMM `addr_in_par`).
    pub fn in_par(&self, ipa: u64) -> bool {
        ipa < self.par_size()
    }
}

/// What the model's "hardware" supports (reported by RMI_FEATURES index 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmmConfig {
    /// Largest IPA width.
    pub max_s2sz: u8,
    /// SVE supported, and its largest vector length (encoded VQ − 1).
    pub sve: Option<u8>,
    /// Breakpoints ("minus one" encoding).
    pub num_bps: u8,
    /// Watchpoints ("minus one" encoding).
    pub num_wps: u8,
    /// PMU supported, and its counters.
    pub pmu: Option<u8>,
    /// log2 of the largest number of RECs per realm.
    pub max_recs_order: u8,
    /// Instructions a REC runs per RMI_REC_ENTER before the model returns with an IRQ exit (a
    /// host timer tick).
    pub budget: u64,
}

impl Default for RmmConfig {
    fn default() -> Self {
        Self {
            max_s2sz: 48,
            sve: Some(15),
            num_bps: 15,
            num_wps: 15,
            pmu: Some(31),
            max_recs_order: 10,
            budget: 200_000,
        }
    }
}

impl RmmConfig {
    /// RmiFeatureRegister0 (spec/cca.md §1.3).
    pub fn feature_register0(&self) -> u64 {
        use feature0::*;
        let mut r = u64::from(self.max_s2sz) << S2SZ_SHIFT;
        if let Some(vl) = self.sve {
            r |= SVE_EN | (u64::from(vl & 0xF) << SVE_VL_SHIFT);
        }
        r |= u64::from(self.num_bps & 0x3F) << NUM_BPS_SHIFT;
        r |= u64::from(self.num_wps & 0x3F) << NUM_WPS_SHIFT;
        if let Some(n) = self.pmu {
            r |= PMU_EN | (u64::from(n & 0x1F) << PMU_NUM_CTRS_SHIFT);
        }
        r |= HASH_SHA_256 | HASH_SHA_512;
        r |= 15 << GICV3_NUM_LRS_SHIFT;
        r |= u64::from(self.max_recs_order & 0xF) << MAX_RECS_ORDER_SHIFT;
        r
    }
}

/// Smallest IPA width the model accepts (TF-RMM `MIN_IPA_BITS`).
pub const MIN_IPA_BITS: u8 = 32;

impl RmmState {
    /// RMI_FEATURES(index) — TF-RMM `feature.c`: index 0 is RmiFeatureRegister0, others 0.
    pub(crate) fn features(&self, index: u64) -> Ret {
        ret1(if index == 0 {
            self.cfg.feature_register0()
        } else {
            0
        })
    }

    /// `validate_realm_params` (TF-RMM `realm.c`).
    fn validate_realm_params(&self, p: &RealmParams) -> bool {
        let c = &self.cfg;
        if p.flags & !realm_flags::ALL != 0 || p.flags & realm_flags::LPA2 != 0 {
            return false; // LPA2 not supported by the model
        }
        if p.s2sz < MIN_IPA_BITS || p.s2sz > c.max_s2sz {
            return false;
        }
        if p.flags & realm_flags::SVE != 0 {
            match c.sve {
                Some(max) if p.sve_vl <= max => {}
                _ => return false,
            }
        } else if p.sve_vl != 0 {
            return false;
        }
        if p.num_bps == 0 || p.num_bps > c.num_bps || p.num_wps == 0 || p.num_wps > c.num_wps {
            return false;
        }
        if p.flags & realm_flags::PMU != 0 {
            match c.pmu {
                Some(max) if p.pmu_num_ctrs <= max => {}
                _ => return false,
            }
        } else if p.pmu_num_ctrs != 0 {
            return false;
        }
        if algorithm_from_rmi(p.hash_algo).is_none() {
            return false;
        }
        let sl = p.rtt_level_start;
        if !(0..=3).contains(&sl) {
            return false;
        }
        root_tables(p.s2sz, sl as i8) == Some(p.rtt_num_start)
    }

    /// RMI_REALM_CREATE(rd, params_ptr) — TF-RMM `realm.c smc_realm_create`; RIM0 per
    /// `rim.c measurement_realm_params_measure` (spec/cca.md §2.2).
    pub(crate) fn realm_create(&mut self, rd: u64, params_ptr: u64) -> Ret {
        let mut page = [0u8; GRANULE_SIZE as usize];
        if params_ptr % GRANULE_SIZE != 0 || self.mem.ns_read(params_ptr, &mut page).is_err() {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Ok(p) = RealmParams::read_from_bytes(&page) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if !self.mem.is(rd, GranuleState::Delegated) || !self.validate_realm_params(&p) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let n = p.rtt_num_start as u64;
        // The root RTTs are `rtt_num_start` consecutive granules from `rtt_base`; a run that
        // wraps the address space names granules that do not exist (TF-RMM `realm.c`
        // `find_lock_rd_granules`: each root must be a DELEGATED granule) → RMI_ERROR_INPUT.
        let Some(roots) = (0..n)
            .map(|i| p.rtt_base.checked_add(i * GRANULE_SIZE))
            .collect::<Option<Vec<u64>>>()
        else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if p.rtt_base % GRANULE_SIZE != 0
            || roots
                .iter()
                .any(|&r| r == rd || !self.mem.is(r, GranuleState::Delegated))
        {
            return err(RmiStatus::ErrorInput, 0);
        }
        // VMID must be unused (TF-RMM `vmid_reserve`).
        if self.vmids.contains(&p.vmid) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(algorithm) = algorithm_from_rmi(p.hash_algo) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let log = RealmParamsLog {
            flags: p.flags,
            s2sz: p.s2sz,
            sve_vl: p.sve_vl,
            num_bps: p.num_bps,
            num_wps: p.num_wps,
            pmu_num_ctrs: p.pmu_num_ctrs,
        };
        let Some(rim) = Rim::new(algorithm, &log) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let sl = p.rtt_level_start as i8;
        let par = 1u64 << (p.s2sz - 1);
        // Root RTTs: protected entries UNASSIGNED_EMPTY, unprotected UNASSIGNED_NS.
        for (t, &pa) in roots.iter().enumerate() {
            let mut rtt = Rtt::filled(Rtte::Unassigned(crate::abi::Ripas::Empty));
            for (i, e) in rtt.entries.iter_mut().enumerate() {
                let ipa = (t as u64 * ENTRIES as u64 + i as u64) * map_size(sl);
                if ipa >= par {
                    *e = Rtte::UnassignedNs;
                }
            }
            self.rtts.insert(pa, rtt);
            self.mem.set_state(pa, GranuleState::Rtt);
        }
        self.mem.set_state(rd, GranuleState::Rd);
        self.vmids.insert(p.vmid);
        self.realms.insert(
            rd,
            Realm {
                state: RealmState::New,
                s2sz: p.s2sz,
                sl,
                root: roots,
                algorithm,
                rim,
                rems: Rems::new(algorithm),
                rpv: p.rpv,
                vmid: p.vmid,
                rec_count: 0,
                recs_alive: 0,
                rng_counter: 0,
            },
        );
        ok()
    }

    /// RMI_REALM_ACTIVATE(rd) — TF-RMM `activate.c`: NEW → ACTIVE, else ERROR_REALM.
    pub(crate) fn realm_activate(&mut self, rd: u64) -> Ret {
        match self.realms.get_mut(&rd) {
            None => err(RmiStatus::ErrorInput, 0),
            Some(r) if r.state != RealmState::New => err(RmiStatus::ErrorRealm, 0),
            Some(r) => {
                r.state = RealmState::Active;
                ok()
            }
        }
    }

    /// RMI_REALM_DESTROY(rd) — TF-RMM `realm.c smc_realm_destroy`: refused (ERROR_REALM)
    /// while RECs exist or a root RTT is live.
    pub(crate) fn realm_destroy(&mut self, rd: u64) -> Ret {
        let Some(r) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if r.recs_alive != 0
            || r.root
                .iter()
                .any(|pa| self.rtts.get(pa).is_some_and(|t| t.live() != 0))
        {
            return err(RmiStatus::ErrorRealm, 0);
        }
        let roots = r.root.clone();
        let vmid = r.vmid;
        for pa in roots {
            self.rtts.remove(&pa);
            self.mem.set_state(pa, GranuleState::Delegated);
        }
        self.vmids.remove(&vmid);
        self.realms.remove(&rd);
        self.mem.set_state(rd, GranuleState::Delegated);
        ok()
    }
}
