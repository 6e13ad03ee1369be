//! Realm data granules: RMI_DATA_CREATE, RMI_DATA_CREATE_UNKNOWN, RMI_DATA_DESTROY — TF-RMM
//! `runtime/rmi/rtt.c` (`data_create`, `smc_data_destroy`); spec/cca.md §2.3.

use crate::abi::{
    GranuleState, RealmState, Ripas, RmiStatus, GRANULE_SIZE, RMI_MEASURE_CONTENT,
    RMI_NO_MEASURE_CONTENT,
};
use crate::measure::granule_hash;
use crate::model::rmm::{err, ok, Ret, RmmState};
use crate::model::rtt::{Rtte, PAGE_LEVEL};

impl RmmState {
    /// DATA_CREATE (`src = Some((src_pa, flags))`) and DATA_CREATE_UNKNOWN (`None`).
    pub(crate) fn data_create(
        &mut self,
        rd: u64,
        data: u64,
        ipa: u64,
        src: Option<(u64, u64)>,
    ) -> Ret {
        if !self.mem.is(data, GranuleState::Delegated) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        // validate_map_addr at page level and inside the PAR.
        if ipa % GRANULE_SIZE != 0 || ipa >= realm.ipa_size() || !realm.in_par(ipa) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let mut content = [0u8; GRANULE_SIZE as usize];
        if let Some((src_pa, flags)) = src {
            if flags != RMI_MEASURE_CONTENT && flags != RMI_NO_MEASURE_CONTENT {
                return err(RmiStatus::ErrorInput, 0);
            }
            if src_pa % GRANULE_SIZE != 0 || self.mem.ns_read(src_pa, &mut content).is_err() {
                return err(RmiStatus::ErrorInput, 0);
            }
            // DATA_CREATE only while the realm is NEW (DATA_CREATE_UNKNOWN in any state).
            if realm.state != RealmState::New {
                return err(RmiStatus::ErrorRealm, 0);
            }
        }
        let Some(w) = self.walk(realm, ipa, PAGE_LEVEL) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if w.level != PAGE_LEVEL {
            return err(RmiStatus::ErrorRtt, w.level as u8);
        }
        let new = match (w.entry, src) {
            // DATA_CREATE: UNASSIGNED (EMPTY or RAM) → ASSIGNED_RAM.
            (Rtte::Unassigned(Ripas::Empty | Ripas::Ram), Some(_)) => Rtte::Assigned {
                pa: data,
                ripas: Ripas::Ram,
            },
            // DATA_CREATE_UNKNOWN keeps the entry's RIPAS.
            (Rtte::Unassigned(ripas), None) => Rtte::Assigned { pa: data, ripas },
            _ => return err(RmiStatus::ErrorRtt, PAGE_LEVEL as u8),
        };
        if let Some((_, flags)) = src {
            let algorithm = realm.algorithm;
            let h = granule_hash(algorithm, &content);
            if let Some(r) = self.realms.get_mut(&rd) {
                r.rim.extend_data_hashed(ipa, flags, &h);
            }
            if let Some(g) = self.mem.bytes_mut(data) {
                *g = content;
            }
        }
        if let Some(t) = self.rtts.get_mut(&w.table) {
            t.entries[w.index] = new;
        }
        self.mem.set_state(data, GranuleState::Data);
        ok()
    }

    /// RMI_DATA_DESTROY(rd, ipa) → X1 data PA, X2 top of the non-live region. ASSIGNED_RAM
    /// becomes UNASSIGNED_DESTROYED, ASSIGNED_EMPTY becomes UNASSIGNED_EMPTY (TF-RMM
    /// `smc_data_destroy`).
    pub(crate) fn data_destroy(&mut self, rd: u64, ipa: u64) -> Ret {
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if ipa % GRANULE_SIZE != 0 || ipa >= realm.ipa_size() || !realm.in_par(ipa) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(w) = self.walk(realm, ipa, PAGE_LEVEL) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if w.level != PAGE_LEVEL {
            return [
                crate::abi::pack_return(RmiStatus::ErrorRtt, w.level as u8),
                0,
                ipa,
                0,
                0,
            ];
        }
        let Rtte::Assigned { pa, ripas } = w.entry else {
            return [
                crate::abi::pack_return(RmiStatus::ErrorRtt, PAGE_LEVEL as u8),
                0,
                ipa + GRANULE_SIZE,
                0,
                0,
            ];
        };
        let new = match ripas {
            Ripas::Empty => Rtte::Unassigned(Ripas::Empty),
            Ripas::Ram | Ripas::Destroyed => Rtte::Unassigned(Ripas::Destroyed),
        };
        if let Some(t) = self.rtts.get_mut(&w.table) {
            t.entries[w.index] = new;
        }
        self.mem.set_state(pa, GranuleState::Delegated);
        [0, pa, ipa + GRANULE_SIZE, 0, 0]
    }
}
