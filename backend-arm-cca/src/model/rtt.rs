//! Realm Translation Tables: levels 0–3 with the 4 KiB granule, 512 entries per table
//! (TF-RMM `lib/s2tt`, `runtime/rmi/rtt.c`; spec/cca.md §1.1, §2.3, §4).
//!
//! Entries keep the TF-RMM s2tte states: UNASSIGNED / ASSIGNED with a RIPAS (EMPTY, RAM,
//! DESTROYED) in the protected half, UNASSIGNED_NS / ASSIGNED_NS in the unprotected half, and
//! TABLE. An RTT is "live" while it holds an ASSIGNED, ASSIGNED_NS or TABLE entry (TF-RMM's
//! RTT refcount).

use crate::abi::{GranuleState, Ripas, RmiStatus, RttEntryState, GRANULE_SIZE};
use crate::model::realm::Realm;
use crate::model::rmm::{err, ok, ret1, Ret, RmmState};

/// Entries per RTT.
pub const ENTRIES: usize = 512;
/// The deepest level (4 KiB pages).
pub const PAGE_LEVEL: i8 = 3;
/// Smallest level at which block mappings are allowed for map commands (TF-RMM
/// `RTT_MIN_BLOCK_LEVEL`).
pub const MIN_BLOCK_LEVEL: i8 = 2;

/// Bits of an NS descriptor the host may set for RMI_RTT_MAP_UNPROTECTED besides the output
/// address: MemAttr \[5:2\], S2AP \[7:6\], SH \[9:8\] (TF-RMM `s2tt` `S2TTE_NS_ATTR_HOST_MASK`).
pub const NS_DESC_ATTR_MASK: u64 = 0x3FC;
/// Output address bits of a descriptor (48-bit PA).
pub const DESC_OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;

/// Bytes mapped by one entry at `level`.
pub const fn map_size(level: i8) -> u64 {
    1u64 << (12 + 9 * (3 - level as u32))
}

/// Index of `ipa` in a table at `level`.
pub const fn index_at(ipa: u64, level: i8) -> usize {
    ((ipa >> (12 + 9 * (3 - level as u32))) & 0x1FF) as usize
}

/// One stage-2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rtte {
    /// UNASSIGNED with a RIPAS.
    Unassigned(Ripas),
    /// ASSIGNED to the DATA granule (or block) at `pa`, with a RIPAS.
    Assigned {
        /// Output address.
        pa: u64,
        /// RIPAS.
        ripas: Ripas,
    },
    /// Unprotected, not mapped.
    UnassignedNs,
    /// Unprotected, mapped to host memory by the descriptor.
    AssignedNs {
        /// The host's descriptor (PA | attributes).
        desc: u64,
    },
    /// Next-level table at `pa`.
    Table {
        /// The RTT granule.
        pa: u64,
    },
}

/// A translation table held in an RTT granule.
#[derive(Debug, Clone)]
pub(crate) struct Rtt {
    /// Its entries.
    pub entries: Box<[Rtte; ENTRIES]>,
}

impl Rtt {
    /// A table with every entry `e`.
    pub fn filled(e: Rtte) -> Self {
        Self {
            entries: Box::new([e; ENTRIES]),
        }
    }

    /// Live entries (TF-RMM refcount): ASSIGNED, ASSIGNED_NS and TABLE.
    pub fn live(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Rtte::Assigned { .. } | Rtte::AssignedNs { .. } | Rtte::Table { .. }
                )
            })
            .count()
    }
}

/// Where a walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Level of the last table visited.
    pub level: i8,
    /// PA of that table.
    pub table: u64,
    /// Index of the entry for the IPA.
    pub index: usize,
    /// The entry.
    pub entry: Rtte,
}

/// The starting level and number of concatenated root tables for an IPA width, as KVM chooses
/// them (stage-2 levels = ARM64_HW_PGTABLE_LEVELS(s2sz − 4), concatenating at the start level).
pub fn start_level(s2sz: u8) -> (i8, u32) {
    let levels = (i32::from(s2sz) - 8) / 9;
    let sl = (4 - levels).clamp(0, 3) as i8;
    (sl, root_tables(s2sz, sl).unwrap_or(1))
}

/// Number of concatenated root tables for `s2sz` at start level `sl`, if that is a valid
/// combination (1..=16 tables; TF-RMM `realm.c validate_realm_params` / `s2tt` root checks).
pub fn root_tables(s2sz: u8, sl: i8) -> Option<u32> {
    if !(0..=3).contains(&sl) {
        return None;
    }
    let shift = 12 + 9 * (3 - sl as u32);
    // The starting level must resolve at least one address bit and at most 16 concatenated
    // tables (9 + 4 bits).
    let bits = u32::from(s2sz)
        .checked_sub(shift)
        .filter(|b| (1..=13).contains(b))?;
    Some(1 << bits.saturating_sub(9))
}

/// Walks `realm`'s RTTs held in `rtts` for `ipa` down to level `target`, stopping early at a
/// non-table entry (TF-RMM `s2tt_walk_lock_unlock`). `None` if `ipa` is outside the IPA space.
pub(crate) fn walk_in(
    rtts: &std::collections::BTreeMap<u64, Rtt>,
    realm: &Realm,
    ipa: u64,
    target: i8,
) -> Option<Walk> {
    if ipa >= realm.ipa_size() {
        return None;
    }
    let sl = realm.sl;
    let total = ipa >> (12 + 9 * (3 - sl as u32));
    let table = *realm.root.get((total / ENTRIES as u64) as usize)?;
    let index = (total % ENTRIES as u64) as usize;
    let mut w = Walk {
        level: sl,
        table,
        index,
        entry: rtts.get(&table)?.entries[index],
    };
    while w.level < target {
        let Rtte::Table { pa } = w.entry else {
            break;
        };
        let level = w.level + 1;
        let index = index_at(ipa, level);
        let entry = rtts.get(&pa)?.entries[index];
        w = Walk {
            level,
            table: pa,
            index,
            entry,
        };
    }
    Some(w)
}

impl RmmState {
    /// Walks `realm`'s RTT for `ipa` down to `target` (or until a non-table entry).
    pub(crate) fn walk(&self, realm: &Realm, ipa: u64, target: i8) -> Option<Walk> {
        walk_in(&self.rtts, realm, ipa, target)
    }

    fn set_entry(&mut self, table: u64, index: usize, e: Rtte) {
        if let Some(t) = self.rtts.get_mut(&table) {
            t.entries[index] = e;
        }
    }

    /// RMI_RTT_CREATE(rd, rtt, ipa, level) — TF-RMM `rtt.c smc_rtt_create`.
    pub(crate) fn rtt_create(&mut self, rd: u64, rtt: u64, ipa: u64, level: u64) -> Ret {
        if !self.mem.is(rtt, GranuleState::Delegated) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let level = level as i64;
        // validate_rtt_structure_cmds: sl + 1 <= level <= 3, ipa < IPA size and aligned to
        // the range the new table covers.
        if level < i64::from(realm.sl) + 1 || level > 3 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let level = level as i8;
        if ipa >= realm.ipa_size() || ipa % map_size(level - 1) != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(w) = self.walk(realm, ipa, level - 1) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if w.level != level - 1 {
            return err(RmiStatus::ErrorRtt, w.level as u8);
        }
        let size = map_size(level);
        // The new table inherits the parent entry (s2tt_init_*): unassigned states are copied,
        // assigned blocks are split into contiguous pages.
        let table = match w.entry {
            Rtte::Table { .. } => return err(RmiStatus::ErrorRtt, (level - 1) as u8),
            e @ (Rtte::Unassigned(_) | Rtte::UnassignedNs) => Rtt::filled(e),
            Rtte::Assigned { pa, ripas } => {
                let mut t = Rtt::filled(Rtte::Unassigned(Ripas::Empty));
                for (i, e) in t.entries.iter_mut().enumerate() {
                    *e = Rtte::Assigned {
                        pa: pa + i as u64 * size,
                        ripas,
                    };
                }
                t
            }
            Rtte::AssignedNs { desc } => {
                let mut t = Rtt::filled(Rtte::UnassignedNs);
                for (i, e) in t.entries.iter_mut().enumerate() {
                    *e = Rtte::AssignedNs {
                        desc: desc + i as u64 * size,
                    };
                }
                t
            }
        };
        self.rtts.insert(rtt, table);
        self.mem.set_state(rtt, GranuleState::Rtt);
        self.set_entry(w.table, w.index, Rtte::Table { pa: rtt });
        ok()
    }

    /// RMI_RTT_DESTROY(rd, ipa, level) → X1 RTT PA, X2 top of the non-live region — TF-RMM
    /// `rtt.c smc_rtt_destroy`.
    pub(crate) fn rtt_destroy(&mut self, rd: u64, ipa: u64, level: u64) -> Ret {
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let level = level as i64;
        if level < i64::from(realm.sl) + 1 || level > 3 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let level = level as i8;
        if ipa >= realm.ipa_size() || ipa % map_size(level - 1) != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let in_par = realm.in_par(ipa);
        let Some(w) = self.walk(realm, ipa, level - 1) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let top = ipa + map_size(level - 1);
        let Rtte::Table { pa } = w.entry else {
            return [
                RmiStatus::ErrorRtt as u64 | (w.level as u64) << 8,
                0,
                top,
                0,
                0,
            ];
        };
        if w.level != level - 1 {
            return [
                RmiStatus::ErrorRtt as u64 | (w.level as u64) << 8,
                0,
                top,
                0,
                0,
            ];
        }
        if self.rtts.get(&pa).is_none_or(|t| t.live() != 0) {
            return [
                RmiStatus::ErrorRtt as u64 | (level as u64) << 8,
                0,
                ipa,
                0,
                0,
            ];
        }
        // The parent entry becomes UNASSIGNED_DESTROYED inside the PAR, UNASSIGNED_NS outside.
        let parent = if in_par {
            Rtte::Unassigned(Ripas::Destroyed)
        } else {
            Rtte::UnassignedNs
        };
        self.set_entry(w.table, w.index, parent);
        self.rtts.remove(&pa);
        self.mem.set_state(pa, GranuleState::Delegated);
        [0, pa, top, 0, 0]
    }

    /// RMI_RTT_FOLD(rd, ipa, level) → X1 RTT PA. The model folds tables whose 512 entries are
    /// the same unassigned state (TF-RMM `rtt.c smc_rtt_fold`, refcount-0 case); tables of
    /// assigned entries are reported as not foldable (ERROR_RTT(level)).
    pub(crate) fn rtt_fold(&mut self, rd: u64, ipa: u64, level: u64) -> Ret {
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let level = level as i64;
        if level < i64::from(realm.sl) + 1 || level > 3 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let level = level as i8;
        if ipa >= realm.ipa_size() || ipa % map_size(level - 1) != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(w) = self.walk(realm, ipa, level - 1) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if w.level != level - 1 {
            return err(RmiStatus::ErrorRtt, w.level as u8);
        }
        let Rtte::Table { pa } = w.entry else {
            return err(RmiStatus::ErrorRtt, (level - 1) as u8);
        };
        let Some(t) = self.rtts.get(&pa) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let first = t.entries[0];
        let homogeneous = matches!(first, Rtte::Unassigned(_) | Rtte::UnassignedNs)
            && t.entries.iter().all(|e| *e == first);
        if !homogeneous {
            return err(RmiStatus::ErrorRtt, level as u8);
        }
        self.set_entry(w.table, w.index, first);
        self.rtts.remove(&pa);
        self.mem.set_state(pa, GranuleState::Delegated);
        ret1(pa)
    }

    /// RMI_RTT_READ_ENTRY(rd, ipa, level) → X1 walk level, X2 state, X3 desc, X4 ripas —
    /// TF-RMM `rtt.c smc_rtt_read_entry`.
    pub(crate) fn rtt_read_entry(&self, rd: u64, ipa: u64, level: u64) -> Ret {
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let level = level as i64;
        if level < i64::from(realm.sl) || level > 3 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let level = level as i8;
        if ipa >= realm.ipa_size() || ipa % map_size(level) != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(w) = self.walk(realm, ipa, level) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let (state, desc, ripas) = match w.entry {
            Rtte::Unassigned(r) => (RttEntryState::Unassigned, 0, r),
            Rtte::Assigned { pa, ripas } => (RttEntryState::Assigned, pa, ripas),
            Rtte::UnassignedNs => (RttEntryState::Unassigned, 0, Ripas::Empty),
            Rtte::AssignedNs { desc } => (RttEntryState::Assigned, desc, Ripas::Empty),
            Rtte::Table { pa } => (RttEntryState::Table, pa, Ripas::Empty),
        };
        [0, w.level as u64, state as u64, desc, ripas as u64]
    }

    fn map_cmd_checks(&self, rd: u64, ipa: u64, level: u64) -> Result<(i8, Walk), Ret> {
        let realm = self.realms.get(&rd).ok_or(err(RmiStatus::ErrorInput, 0))?;
        // validate_rtt_map_cmds: RTT_MIN_BLOCK_LEVEL <= level <= 3, aligned, < IPA size; the
        // address must be unprotected.
        let level = level as i64;
        if level < i64::from(MIN_BLOCK_LEVEL) || level > 3 {
            return Err(err(RmiStatus::ErrorInput, 0));
        }
        let level = level as i8;
        if ipa >= realm.ipa_size() || ipa % map_size(level) != 0 || realm.in_par(ipa) {
            return Err(err(RmiStatus::ErrorInput, 0));
        }
        let w = self
            .walk(realm, ipa, level)
            .ok_or(err(RmiStatus::ErrorInput, 0))?;
        if w.level != level {
            return Err(err(RmiStatus::ErrorRtt, w.level as u8));
        }
        Ok((level, w))
    }

    /// RMI_RTT_MAP_UNPROTECTED(rd, ipa, level, desc) — TF-RMM `rtt.c map_unmap_ns`.
    pub(crate) fn rtt_map_unprotected(&mut self, rd: u64, ipa: u64, level: u64, desc: u64) -> Ret {
        let (level, w) = match self.map_cmd_checks(rd, ipa, level) {
            Ok(v) => v,
            Err(r) => return r,
        };
        // host_ns_s2tte_is_valid: only the output address (aligned to the level) and the
        // host-controlled attributes may be set.
        let oa = desc & DESC_OA_MASK;
        if desc & !(DESC_OA_MASK | NS_DESC_ATTR_MASK) != 0 || oa % map_size(level) != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        if w.entry != Rtte::UnassignedNs {
            return err(RmiStatus::ErrorRtt, level as u8);
        }
        self.set_entry(w.table, w.index, Rtte::AssignedNs { desc });
        ok()
    }

    /// RMI_RTT_UNMAP_UNPROTECTED(rd, ipa, level) → X1 top of the non-live region.
    pub(crate) fn rtt_unmap_unprotected(&mut self, rd: u64, ipa: u64, level: u64) -> Ret {
        let (level, w) = match self.map_cmd_checks(rd, ipa, level) {
            Ok(v) => v,
            Err(r) => return r,
        };
        if !matches!(w.entry, Rtte::AssignedNs { .. }) {
            return err(RmiStatus::ErrorRtt, level as u8);
        }
        self.set_entry(w.table, w.index, Rtte::UnassignedNs);
        ret1(ipa + map_size(level))
    }

    /// RMI_RTT_INIT_RIPAS(rd, base, top) → X1 top of the range updated — TF-RMM `rtt.c
    /// smc_rtt_init_ripas`: one RIPAS measurement descriptor per entry at the walk level,
    /// within one table, stopping at an entry that is neither UNASSIGNED_EMPTY nor
    /// UNASSIGNED_RAM or that crosses `top`.
    pub(crate) fn rtt_init_ripas(&mut self, rd: u64, base: u64, top: u64) -> Ret {
        if top <= base {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if base % GRANULE_SIZE != 0
            || top % GRANULE_SIZE != 0
            || top >= realm.ipa_size()
            || !realm.in_par(base)
            || !realm.in_par(top - GRANULE_SIZE)
        {
            return err(RmiStatus::ErrorInput, 0);
        }
        if realm.state != crate::abi::RealmState::New {
            return err(RmiStatus::ErrorRealm, 0);
        }
        let Some(w) = self.walk(realm, base, PAGE_LEVEL) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let size = map_size(w.level);
        if base % size != 0 {
            return err(RmiStatus::ErrorRtt, w.level as u8);
        }
        let mut addr = base;
        let mut measured = Vec::new();
        if let Some(t) = self.rtts.get_mut(&w.table) {
            for e in t.entries[w.index..].iter_mut() {
                let next = addr + size;
                if next > top {
                    break;
                }
                match *e {
                    Rtte::Unassigned(Ripas::Empty) => *e = Rtte::Unassigned(Ripas::Ram),
                    Rtte::Unassigned(Ripas::Ram) => {}
                    _ => break,
                }
                measured.push((addr, next));
                addr = next;
            }
        }
        if let Some(realm) = self.realms.get_mut(&rd) {
            for (b, t) in measured {
                realm.rim.extend_ripas(b, t);
            }
        }
        if addr > base {
            ret1(addr)
        } else {
            err(RmiStatus::ErrorRtt, w.level as u8)
        }
    }

    /// RMI_RTT_SET_RIPAS(rd, rec, base, top) → X1 top of the range updated — TF-RMM `rtt.c
    /// smc_rtt_set_ripas` / `update_ripas`.
    pub(crate) fn rtt_set_ripas(&mut self, rd: u64, rec_pa: u64, base: u64, top: u64) -> Ret {
        if top <= base {
            return err(RmiStatus::ErrorInput, 0);
        }
        if !self.mem.is(rd, GranuleState::Rd) || !self.mem.is(rec_pa, GranuleState::Rec) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(rec) = self.recs.get(&rec_pa) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if rec.rd != rd {
            return err(RmiStatus::ErrorRec, 0);
        }
        let req = rec.set_ripas;
        if base != req.addr || top > req.top || req.top == 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let Some(w) = self.walk(realm, base, PAGE_LEVEL) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let size = map_size(w.level);
        if base % size != 0 {
            return err(RmiStatus::ErrorRtt, w.level as u8);
        }
        let mut addr = base;
        if let Some(t) = self.rtts.get_mut(&w.table) {
            for e in t.entries[w.index..].iter_mut() {
                if addr + size > top {
                    break;
                }
                match update_ripas(*e, req.ripas, req.change_destroyed) {
                    Some(n) => *e = n,
                    None => break,
                }
                addr += size;
            }
        }
        if addr > base {
            if let Some(rec) = self.recs.get_mut(&rec_pa) {
                rec.set_ripas.addr = addr;
            }
            ret1(addr)
        } else {
            err(RmiStatus::ErrorRtt, w.level as u8)
        }
    }
}

/// The new entry when changing its RIPAS to `to`, or `None` to stop the walk (TF-RMM
/// `rtt.c update_ripas`): DESTROYED entries change only with CHANGE_DESTROYED; assigned pages
/// stay assigned; tables and NS entries stop the walk.
pub(crate) fn update_ripas(e: Rtte, to: Ripas, change_destroyed: bool) -> Option<Rtte> {
    match e {
        Rtte::Unassigned(Ripas::Destroyed)
        | Rtte::Assigned {
            ripas: Ripas::Destroyed,
            ..
        } if !change_destroyed => None,
        Rtte::Unassigned(_) => Some(Rtte::Unassigned(to)),
        Rtte::Assigned { pa, .. } => Some(Rtte::Assigned { pa, ripas: to }),
        Rtte::UnassignedNs | Rtte::AssignedNs { .. } | Rtte::Table { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_levels_follow_kvm() {
        assert_eq!(start_level(40), (1, 2));
        assert_eq!(start_level(48), (0, 1));
        assert_eq!(start_level(32), (2, 4));
        assert_eq!(start_level(36), (1, 1));
        assert_eq!(start_level(44), (0, 1));
        assert_eq!(map_size(3), 4096);
        assert_eq!(map_size(2), 2 << 20);
        assert_eq!(map_size(1), 1 << 30);
        assert_eq!(map_size(0), 1 << 39);
    }

    #[test]
    fn ripas_updates() {
        assert_eq!(
            update_ripas(Rtte::Unassigned(Ripas::Ram), Ripas::Empty, false),
            Some(Rtte::Unassigned(Ripas::Empty))
        );
        assert_eq!(
            update_ripas(Rtte::Unassigned(Ripas::Destroyed), Ripas::Ram, false),
            None
        );
        assert_eq!(
            update_ripas(Rtte::Unassigned(Ripas::Destroyed), Ripas::Ram, true),
            Some(Rtte::Unassigned(Ripas::Ram))
        );
        assert_eq!(update_ripas(Rtte::Table { pa: 0 }, Ripas::Ram, true), None);
    }
}
