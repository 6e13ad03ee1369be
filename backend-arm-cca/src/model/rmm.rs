//! The RMM model: the RMI dispatcher (TF-RMM `runtime/core/handler.c`) over one lock-protected
//! machine state, implementing [`Rmi`].
//!
//! Determinism: state lives in ordered maps, the allocator is a bump allocator with a LIFO
//! free list, and REC runs are bounded by an instruction budget; the same calls give the same
//! results. Every command is counted by its specification name ([`Rmm::stats`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use cvm_core::vm_memory::MmapRegion;
use cvm_core::{Stats, StatsRecorder};

use crate::abi::{self, pack_return, rmi as fid, GranuleState, RmiStatus, RMI_ABI_VERSION};
use crate::measure::CcaMeasurement;
use crate::model::granule::PhysMem;
use crate::model::realm::{Realm, RmmConfig};
use crate::model::rec::Rec;
use crate::model::rtt::Rtt;
use crate::rmi::{HostMemError, Rmi};

/// X0..X4 of an RMI return.
pub(crate) type Ret = [u64; 5];

/// RMI_SUCCESS with no results.
pub(crate) fn ok() -> Ret {
    [0; 5]
}

/// RMI_SUCCESS with X1.
pub(crate) fn ret1(x1: u64) -> Ret {
    [0, x1, 0, 0, 0]
}

/// An error status with its index.
pub(crate) fn err(status: RmiStatus, index: u8) -> Ret {
    [pack_return(status, index), 0, 0, 0, 0]
}

/// Everything behind the RMM lock.
pub(crate) struct RmmState {
    pub cfg: RmmConfig,
    pub mem: PhysMem,
    pub realms: BTreeMap<u64, Realm>,
    pub recs: BTreeMap<u64, Rec>,
    pub rtts: BTreeMap<u64, Rtt>,
    pub vmids: BTreeSet<u16>,
}

/// The in-process RMM (RMM 1.0-rel0 as TF-RMM implements it) with the machine's physical
/// memory.
pub struct Rmm {
    state: Mutex<RmmState>,
    stats: StatsRecorder,
}

impl Default for Rmm {
    fn default() -> Self {
        Self::new(RmmConfig::default())
    }
}

impl std::fmt::Debug for Rmm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rmm").finish_non_exhaustive()
    }
}

impl Rmm {
    /// A machine with `cfg`'s capabilities and no realms.
    pub fn new(cfg: RmmConfig) -> Self {
        Self {
            state: Mutex::new(RmmState {
                cfg,
                mem: PhysMem::default(),
                realms: BTreeMap::new(),
                recs: BTreeMap::new(),
                rtts: BTreeMap::new(),
                vmids: BTreeSet::new(),
            }),
            stats: StatsRecorder::new(),
        }
    }

    /// A shareable default machine.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, RmmState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Granules currently delegated or in realm use (zero after every realm is torn down).
    pub fn delegated_granules(&self) -> usize {
        self.lock().mem.delegated()
    }

    /// NS granules the host allocated and has not freed.
    pub fn host_granules(&self) -> usize {
        self.lock().mem.allocated()
    }

    /// VMM memory windows attached as host RAM.
    pub fn host_windows(&self) -> usize {
        self.lock().mem.windows()
    }

    /// Realms that exist.
    pub fn realms(&self) -> usize {
        self.lock().realms.len()
    }

    /// The machine-wide counters (RMI calls by name).
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Model introspection: the RDs of the realms that exist, ascending.
    pub fn realm_rds(&self) -> Vec<u64> {
        self.lock().realms.keys().copied().collect()
    }

    /// Model introspection (not an RMI command): the RIM and REMs of the realm at `rd`, as
    /// an attestation token would report them.
    pub fn realm_measurement(&self, rd: u64) -> Option<CcaMeasurement> {
        let st = self.lock();
        let r = st.realms.get(&rd)?;
        let len = r.algorithm.len();
        let rem = |i: usize| r.rems.value(i).map(<[u8]>::to_vec).unwrap_or(vec![0; len]);
        Some(CcaMeasurement {
            algorithm: r.algorithm,
            rim: r.rim.value().to_vec(),
            rems: [rem(1), rem(2), rem(3), rem(4)],
        })
    }
}

impl RmmState {
    fn granule_delegate(&mut self, pa: u64) -> Ret {
        // TF-RMM `granule.c smc_granule_delegate`: an NS granule of DRAM the RMM knows.
        if pa % abi::GRANULE_SIZE != 0 || !self.mem.is(pa, GranuleState::Undelegated) {
            return err(RmiStatus::ErrorInput, 0);
        }
        self.mem.set_state(pa, GranuleState::Delegated);
        ok()
    }

    fn granule_undelegate(&mut self, pa: u64) -> Ret {
        if pa % abi::GRANULE_SIZE != 0 || !self.mem.is(pa, GranuleState::Delegated) {
            return err(RmiStatus::ErrorInput, 0);
        }
        self.mem.set_state(pa, GranuleState::Undelegated);
        ok()
    }

    fn dispatch(&mut self, f: u64, a: [u64; 6]) -> Ret {
        match f {
            fid::VERSION => {
                // `system.c`: SUCCESS iff the requested version is 1.0; X1 = X2 = 1.0.
                let status = if a[0] == RMI_ABI_VERSION {
                    0
                } else {
                    pack_return(RmiStatus::ErrorInput, 0)
                };
                [status, RMI_ABI_VERSION, RMI_ABI_VERSION, 0, 0]
            }
            fid::FEATURES => self.features(a[0]),
            fid::GRANULE_DELEGATE => self.granule_delegate(a[0]),
            fid::GRANULE_UNDELEGATE => self.granule_undelegate(a[0]),
            fid::DATA_CREATE => self.data_create(a[0], a[1], a[2], Some((a[3], a[4]))),
            fid::DATA_CREATE_UNKNOWN => self.data_create(a[0], a[1], a[2], None),
            fid::DATA_DESTROY => self.data_destroy(a[0], a[1]),
            fid::REALM_ACTIVATE => self.realm_activate(a[0]),
            fid::REALM_CREATE => self.realm_create(a[0], a[1]),
            fid::REALM_DESTROY => self.realm_destroy(a[0]),
            fid::REC_CREATE => self.rec_create(a[0], a[1], a[2]),
            fid::REC_DESTROY => self.rec_destroy(a[0]),
            fid::REC_ENTER => self.rec_enter(a[0], a[1]),
            fid::RTT_CREATE => self.rtt_create(a[0], a[1], a[2], a[3]),
            fid::RTT_DESTROY => self.rtt_destroy(a[0], a[1], a[2]),
            fid::RTT_MAP_UNPROTECTED => self.rtt_map_unprotected(a[0], a[1], a[2], a[3]),
            fid::RTT_READ_ENTRY => self.rtt_read_entry(a[0], a[1], a[2]),
            fid::RTT_UNMAP_UNPROTECTED => self.rtt_unmap_unprotected(a[0], a[1], a[2]),
            fid::PSCI_COMPLETE => self.psci_complete(a[0], a[1], a[2]),
            fid::RTT_FOLD => self.rtt_fold(a[0], a[1], a[2]),
            fid::REC_AUX_COUNT => self.rec_aux_count(a[0]),
            fid::RTT_INIT_RIPAS => self.rtt_init_ripas(a[0], a[1], a[2]),
            fid::RTT_SET_RIPAS => self.rtt_set_ripas(a[0], a[1], a[2], a[3]),
            _ => [abi::SMC_UNKNOWN, 0, 0, 0, 0],
        }
    }
}

impl Rmi for Rmm {
    fn smc(&self, f: u64, args: &[u64]) -> [u64; 5] {
        let mut a = [0u64; 6];
        for (d, s) in a.iter_mut().zip(args) {
            *d = *s;
        }
        self.stats.call(fid::name(f));
        let r = self.lock().dispatch(f, a);
        tracing::trace!(call = fid::name(f), ?args, x0 = r[0], "rmm");
        r
    }

    fn alloc_ns_granules(&self, count: u64) -> Result<u64, HostMemError> {
        self.lock().mem.alloc(count)
    }

    fn free_ns_granule(&self, pa: u64) -> Result<(), HostMemError> {
        self.lock().mem.free(pa)
    }

    fn write_ns(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        let mut st = self.lock();
        // Split at granule boundaries.
        let mut off = 0usize;
        while off < data.len() {
            let a = pa + off as u64;
            let n = ((abi::GRANULE_SIZE - a % abi::GRANULE_SIZE) as usize).min(data.len() - off);
            st.mem.ns_write(a, &data[off..off + n])?;
            off += n;
        }
        Ok(())
    }

    fn read_ns(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let st = self.lock();
        let mut off = 0usize;
        let len = buf.len();
        while off < len {
            let a = pa + off as u64;
            let n = ((abi::GRANULE_SIZE - a % abi::GRANULE_SIZE) as usize).min(len - off);
            st.mem.ns_read(a, &mut buf[off..off + n])?;
            off += n;
        }
        Ok(())
    }

    fn attach_ns_memory(
        &self,
        mapping: Arc<MmapRegion>,
        align_to: u64,
    ) -> Result<u64, HostMemError> {
        self.lock().mem.attach(mapping, align_to)
    }

    fn detach_ns_memory(&self, pa: u64) -> Result<(), HostMemError> {
        self.lock().mem.detach(pa)
    }
}

impl Rmm {
    /// Model introspection (not an RMI command): checks that the model's bookkeeping is
    /// consistent, as the RMM's granule state machine requires (TF-RMM `granule_types.h`: a
    /// granule is in exactly one state, and each realm-world object owns its granule):
    ///
    /// * every RD, REC, REC aux, RTT and DATA granule is in the state of the one object that
    ///   holds it, and every granule in such a state is held by exactly one object;
    /// * every RTT is reachable exactly once from its realm's roots, and the RMM's tables hold
    ///   protected states only below the PAR boundary and NS states only above it;
    /// * the VMIDs and REC counts agree with the realms and RECs that exist.
    ///
    /// Returns the first inconsistency found. Meant for tests that drive the model with
    /// arbitrary RMI sequences.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.lock().check_invariants()
    }
}

impl RmmState {
    fn check_invariants(&self) -> Result<(), String> {
        use crate::model::rtt::{map_size, Rtte, ENTRIES};
        use GranuleState as G;
        // Who holds each non-NS granule, by PA.
        let mut owner: BTreeMap<u64, (G, String)> = BTreeMap::new();
        let mut claim = |pa: u64, state: G, who: String| -> Result<(), String> {
            match owner.insert(pa, (state, who.clone())) {
                Some((_, other)) => Err(format!("granule {pa:#x} held by {other} and {who}")),
                None => Ok(()),
            }
        };
        let mut vmids = BTreeSet::new();
        for (&rd, r) in &self.realms {
            claim(rd, G::Rd, format!("realm {rd:#x}"))?;
            if !vmids.insert(r.vmid) {
                return Err(format!("VMID {} used twice", r.vmid));
            }
            let alive = self.recs.values().filter(|c| c.rd == rd).count() as u64;
            if alive != r.recs_alive {
                return Err(format!(
                    "realm {rd:#x} counts {} RECs, {alive} exist",
                    r.recs_alive
                ));
            }
            // Walk the realm's tables from its roots.
            let par = r.par_size();
            let mut stack: Vec<(u64, i8, u64)> = Vec::new();
            for (i, &root) in r.root.iter().enumerate() {
                let base = i as u64 * ENTRIES as u64 * map_size(r.sl);
                stack.push((root, r.sl, base));
            }
            while let Some((pa, level, base)) = stack.pop() {
                claim(pa, G::Rtt, format!("realm {rd:#x} RTT L{level} @{base:#x}"))?;
                let Some(t) = self.rtts.get(&pa) else {
                    return Err(format!("RTT {pa:#x} of realm {rd:#x} does not exist"));
                };
                let size = map_size(level);
                for (i, e) in t.entries.iter().enumerate() {
                    let ipa = base + i as u64 * size;
                    let protected = ipa < par;
                    match *e {
                        Rtte::Table { pa: next } => {
                            if level >= 3 {
                                return Err(format!("table entry at level 3, IPA {ipa:#x}"));
                            }
                            stack.push((next, level + 1, ipa));
                        }
                        Rtte::Assigned { pa: data, .. } => {
                            if !protected || level != 3 {
                                return Err(format!(
                                    "ASSIGNED entry at L{level} IPA {ipa:#x} (PAR {par:#x})"
                                ));
                            }
                            claim(data, G::Data, format!("realm {rd:#x} IPA {ipa:#x}"))?;
                        }
                        Rtte::Unassigned(_) if !protected => {
                            return Err(format!("protected state at unprotected IPA {ipa:#x}"));
                        }
                        Rtte::UnassignedNs | Rtte::AssignedNs { .. } if protected => {
                            return Err(format!("NS state at protected IPA {ipa:#x}"));
                        }
                        _ => {}
                    }
                }
            }
        }
        if vmids != self.vmids {
            return Err(format!(
                "VMIDs in use {:?}, realms hold {vmids:?}",
                self.vmids
            ));
        }
        for (&pa, c) in &self.recs {
            claim(pa, G::Rec, format!("REC {pa:#x}"))?;
            if !self.realms.contains_key(&c.rd) {
                return Err(format!("REC {pa:#x} of missing realm {:#x}", c.rd));
            }
            for &a in &c.aux {
                claim(a, G::RecAux, format!("REC {pa:#x} aux"))?;
            }
        }
        for &pa in self.rtts.keys() {
            if !owner.contains_key(&pa) {
                return Err(format!("RTT {pa:#x} is not reachable from any realm"));
            }
        }
        for (pa, state) in self.mem.states() {
            match (state, owner.remove(&pa)) {
                (G::Undelegated | G::Delegated, None) => {}
                (s, Some((want, who))) if s == want => {
                    let _ = who;
                }
                (s, Some((want, who))) => {
                    return Err(format!(
                        "granule {pa:#x} is {s:?} but {who} holds it as {want:?}"
                    ));
                }
                (s, None) => return Err(format!("granule {pa:#x} is {s:?} but nothing holds it")),
            }
        }
        if let Some((pa, (state, who))) = owner.into_iter().next() {
            return Err(format!(
                "{who} holds {pa:#x} as {state:?}, which is not an allocated granule"
            ));
        }
        Ok(())
    }
}

impl Rmm {
    /// Model introspection: every allocated DRAM granule and its state, ascending PA.
    pub fn granule_states(&self) -> Vec<(u64, GranuleState)> {
        self.lock().mem.states().collect()
    }

    /// Model introspection: the RTT starting level and IPA width of the realm at `rd`.
    pub fn realm_shape(&self, rd: u64) -> Option<(i8, u8)> {
        self.lock().realms.get(&rd).map(|r| (r.sl, r.s2sz))
    }
}
