//! The realm host flow: cvm-core's [`VmOps`] / [`VcpuOps`] over an [`Rmi`].
//!
//! What the host does, per portable call (see the crate docs for the exit mapping):
//!
//! * `create_vm`: RMI_VERSION, RMI_FEATURES; delegate the RD and the concatenated root RTTs;
//!   RMI_REALM_CREATE with s2sz, hash algorithm, SVE, PMU, breakpoints/watchpoints and RPV.
//! * `add_memory(Private)`: RTTs, then RMI_RTT_INIT_RIPAS over the region (RTT policy below),
//!   and a host-side shared backing of the region's size (a memfd: the memslot's userspace
//!   memory, in KVM terms), attached as NS host RAM but mapped nowhere until the realm shares
//!   a range.
//! * `add_memory(Shared)`: the VMM memory becomes host RAM; RMI_RTT_MAP_UNPROTECTED of it at the
//!   unprotected alias (`gpa | 1 << (s2sz − 1)`), largest blocks first.
//! * `load` into private memory is **validated and buffered**: the range must not overlap a
//!   buffered load or a populated page ([`LoadOverlap`] otherwise, at the call). Nothing is
//!   issued to the RMM until `finalize`.
//! * `create_vcpu` is recorded (entry, arguments, RUNNABLE for the boot vCPU only, MPIDR from
//!   the vCPU index); its REC is created at `finalize`.
//! * `finalize` issues the launch in **CRM's reference order** (spec/cca.md §2.3, CRM
//!   `docs/realm-vm.md`, `realm_config.rs compute_rim`; QEMU's rme-guest sorts its measured
//!   images the same way "to help a verifier independently calculate the RIM"):
//!   1. (RMI_REALM_CREATE and RMI_RTT_INIT_RIPAS over all RAM happened at `create_vm` /
//!      `add_memory`, so they precede everything below whatever the VMM's call order);
//!   2. measured loads, RMI_DATA_CREATE(MEASURE_CONTENT) per 4 KiB page in ascending IPA;
//!   3. the RECs in vCPU order: 16 aux granules (RMI_REC_AUX_COUNT), RMI_REC_CREATE, an NS run
//!      page;
//!   4. unmeasured loads, RMI_DATA_CREATE(NO_MEASURE_CONTENT) in ascending IPA (their IPA and
//!      flags still enter the RIM, content does not);
//!   5. RMI_REALM_ACTIVATE.
//!
//!   The measurement log records the events in the order they were issued, so `replay(log)`
//!   equals the RMM's RIM. A VMM's RIM therefore depends only on *what* it loads and creates,
//!   not on its call order. If `finalize` fails part-way, what was issued stays issued and
//!   logged (teardown releases it); what was not stays buffered, and a retried `finalize`
//!   continues from there. The host's [`measurement`](VmOps::measurement) before `finalize`
//!   covers only what has been issued.
//! * Private RAM the realm touches before it was loaded is populated on demand with
//!   RMI_DATA_CREATE_UNKNOWN (as KVM does from guest_memfd).
//! * Guest conversions (RSI_IPA_STATE_SET → RIPAS_CHANGE exit → `ConvertMemory`), when accepted:
//!   to shared (EMPTY): RMI_RTT_SET_RIPAS, RMI_DATA_DESTROY + undelegate of the pages, then
//!   RMI_RTT_MAP_UNPROTECTED of the region's shared backing at the unprotected alias (as KVM
//!   maps the memslot's shared pages), so the realm's accesses through the alias hit memory and
//!   the VMM sees the same bytes in [`shared_memory`](VmOps::shared_memory) at the device-view
//!   GPA (a `MAP_SHARED` view of the memfd per shared run, rebuilt at each conversion, so a
//!   private GPA never appears there); to private (RAM): RMI_RTT_UNMAP_UNPROTECTED of the
//!   alias first, then
//!   RMI_RTT_SET_RIPAS (the pages are populated again on first touch). A block mapping that a
//!   conversion cuts is split first (RMI_RTT_CREATE under it), so the rest stays mapped.
//! * `destroy`: RECs, data, unprotected mappings, RTTs (deepest first), the realm; every
//!   granule is undelegated and freed, every attached backing detached.
//!
//! **RTT policy** (KVM `find_map_level`, CRM `realm.rs find_block_size`): walk the range in
//! ascending IPA; at each address use the largest block (level ≥ the start level for RIPAS, ≥ 2
//! for unprotected mappings) that is aligned and fits and is not already split by a deeper
//! table, creating the tables above it. Data needs level-3 tables, created when the first page
//! of a block is loaded. The RIPAS descriptors, one per entry at the walk level, enter the log
//! as `ripas` events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

use cvm_core::vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    MmapRegion,
};
use cvm_core::{
    Content, Error, ExitDetail, FeatureDef, HashAlgorithm, Measure, Measurement, MeasurementEvent,
    MeasurementLog, MemoryKind, MemoryRegion, RealmParamsLog, Result, Resume, VcpuInit, VcpuOps,
    VmExit, VmOps, VmShared,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{
    self, enter_flags, esr, exit_reason, hpfar_to_ipa, psci, realm_flags, rec_idx_to_mpidr,
    RealmParams, RecEnter, RecExit, RecParams, Ripas, RmiStatus, RttEntryState, GRANULE_SIZE,
    REC_FLAG_RUNNABLE, RMI_MEASURE_CONTENT, RMI_NO_MEASURE_CONTENT,
};
use crate::features::{by_encoding, check_id_write};
use crate::measure::rmi_algorithm;
use crate::model::rtt::{map_size, start_level, MIN_BLOCK_LEVEL, NS_DESC_ATTR_MASK};
use crate::platform::CcaPlatform;
use crate::rmi::{Rmi, RmiClient, RmiError};

/// Consecutive IRQ exits (each one model budget of instructions) after which `run` returns
/// [`VmExit::Interrupted`] so the VMM regains control of a spinning realm.
pub const IRQ_EXITS_BEFORE_INTERRUPTED: u32 = 64;

/// Consecutive stage-2 faults on the same page, after the host populated it, that `run`
/// re-enters before it returns [`VmExit::Fault`] (one is a race with another vCPU populating it;
/// more mean the fault will not go away).
const POPULATE_RETRIES: u32 = 4;

/// The realm parameters derived from a [`cvm_core::VmConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmSetup {
    /// IPA width (`VmConfig::addr_bits`, default 40).
    pub s2sz: u8,
    /// Measurement algorithm (default SHA-256, as kvmtool).
    pub algorithm: HashAlgorithm,
    /// The measured parameters in RMI encodings.
    pub params: RealmParamsLog,
    /// Realm Personalization Value, zero-padded.
    pub rpv: [u8; abi::RPV_SIZE],
}

/// Default IPA width of a realm.
pub const DEFAULT_S2SZ: u8 = 40;

impl RealmSetup {
    /// Derives and checks the realm parameters (typed errors, nothing delegated yet).
    pub fn from_config(config: &cvm_core::VmConfig) -> Result<Self> {
        let s2sz = if config.addr_bits == 0 {
            DEFAULT_S2SZ
        } else {
            config.addr_bits
        };
        if !(crate::model::realm::MIN_IPA_BITS..=48).contains(&s2sz) {
            return Err(Error::InvalidArgument(format!(
                "a realm's IPA width (addr_bits) is 32..=48 bits, not {s2sz}"
            )));
        }
        let algorithm = config.measurement.unwrap_or(HashAlgorithm::Sha256);
        if rmi_algorithm(algorithm).is_none() {
            return Err(Error::Unsupported(format!(
                "CCA measures with sha256 or sha512, not {}",
                algorithm.name()
            )));
        }
        let cca = &config.cca;
        if cca.num_bps < 2 || cca.num_wps < 2 {
            return Err(Error::InvalidArgument(
                "a realm needs at least 2 breakpoints and 2 watchpoints".into(),
            ));
        }
        if cca.sve_vl_bits % 128 != 0 || cca.sve_vl_bits > 2048 {
            return Err(Error::InvalidArgument(format!(
                "SVE vector length {} is not a multiple of 128 up to 2048",
                cca.sve_vl_bits
            )));
        }
        if cca.pmu_num_ctrs > 31 {
            return Err(Error::InvalidArgument("at most 31 PMU counters".into()));
        }
        if cca.rpv.len() > abi::RPV_SIZE {
            return Err(Error::InvalidArgument("the RPV is at most 64 bytes".into()));
        }
        let mut flags = 0;
        let mut sve_vl = 0;
        if cca.sve_vl_bits > 0 {
            flags |= realm_flags::SVE;
            sve_vl = (cca.sve_vl_bits / 128 - 1) as u8;
        }
        if cca.pmu_num_ctrs > 0 {
            flags |= realm_flags::PMU;
        }
        let mut rpv = [0u8; abi::RPV_SIZE];
        rpv[..cca.rpv.len()].copy_from_slice(&cca.rpv);
        Ok(Self {
            s2sz,
            algorithm,
            params: RealmParamsLog {
                flags,
                s2sz,
                sve_vl,
                num_bps: cca.num_bps - 1,
                num_wps: cca.num_wps - 1,
                pmu_num_ctrs: cca.pmu_num_ctrs,
            },
            rpv,
        })
    }
}

/// The granules of a REC that RMI_REC_CREATE accepted.
#[derive(Debug, Clone)]
struct RecGranules {
    pa: u64,
    aux: Vec<u64>,
    run: u64,
}

/// One vCPU as the host tracks it: recorded at `create_vcpu`, its REC created at `finalize`.
#[derive(Debug)]
struct RecHandle {
    mpidr: u64,
    init: VcpuInit,
    /// `Some` from RMI_REC_CREATE until RMI_REC_DESTROY.
    granules: Mutex<Option<RecGranules>>,
    runnable: AtomicBool,
}

impl RecHandle {
    fn granules(&self) -> Option<RecGranules> {
        self.granules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// VMM memory attached as NS host RAM.
#[derive(Debug)]
struct SharedRegion {
    pa: u64,
    guest: Arc<GuestRegionMmap>,
}

/// A private RAM region and its host-side shared backing.
#[derive(Debug)]
struct PrivateRegion {
    region: MemoryRegion,
    /// The shared backing: a memfd of the region's size (KVM: the memslot's userspace memory),
    /// mapped whole as the RMM's NS window.
    file: File,
    /// The window's PA.
    pa: u64,
    /// VMM views (`MAP_SHARED` mappings of `file`) of exactly the ranges now shared, so
    /// private GPAs never appear in `shared_memory()`.
    views: Vec<Arc<GuestRegionMmap>>,
}

/// A private-memory load buffered until `finalize`.
#[derive(Debug)]
struct PendingLoad {
    /// From the first page's start: zeros up to the load's offset, then the bytes.
    image: Vec<u8>,
    measure: Measure,
}

impl PendingLoad {
    fn end(&self, first: u64) -> u64 {
        first + (self.image.len() as u64).next_multiple_of(GRANULE_SIZE)
    }
}

/// A private-memory load that overlaps another load or a populated page (refused at the call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "load of [{start:#x}, {end:#x}) overlaps {what} [{other_start:#x}, {other_end:#x}) \
     (loads are page granular; the realm owns a page once it is populated)"
)]
pub struct LoadOverlap {
    /// First page of the refused load.
    pub start: u64,
    /// End of its last page.
    pub end: u64,
    /// What it overlaps: `"a measured load"`, `"an unmeasured load"` or `"a populated page"`.
    pub what: &'static str,
    /// Start of the other range.
    pub other_start: u64,
    /// End of the other range.
    pub other_end: u64,
}

/// Host bookkeeping of one realm.
struct HostRealm {
    rd: u64,
    roots: Vec<u64>,
    vmid: u16,
    s2sz: u8,
    sl: i8,
    algorithm: HashAlgorithm,
    /// Non-root RTTs by (level, base IPA of the range they cover).
    rtts: BTreeMap<(i8, u64), u64>,
    /// DATA granules by IPA.
    data: BTreeMap<u64, u64>,
    /// Unprotected mappings: alias IPA → (level, output PA).
    ns_maps: BTreeMap<u64, (i8, u64)>,
    /// Shared regions by GPA.
    shared: BTreeMap<u64, SharedRegion>,
    /// Private regions by GPA.
    private: BTreeMap<u64, PrivateRegion>,
    /// Loads waiting for `finalize`, by first page IPA.
    pending: BTreeMap<u64, PendingLoad>,
    /// vCPUs in index order.
    recs: Vec<Arc<RecHandle>>,
    log: MeasurementLog,
    /// Delegated granules whose undelegation failed; retried by teardown.
    loose: Vec<u64>,
    /// RMI_REALM_DESTROY succeeded.
    realm_gone: bool,
    /// Teardown completed.
    destroyed: bool,
}

impl HostRealm {
    fn top_bit(&self) -> u64 {
        1u64 << (self.s2sz - 1)
    }

    /// Level of the deepest table covering `ipa` (the walk level of an RTT command).
    fn walk_level(&self, ipa: u64) -> i8 {
        let mut level = self.sl;
        while level < 3 {
            let key = (level + 1, ipa & !(map_size(level) - 1));
            if !self.rtts.contains_key(&key) {
                break;
            }
            level += 1;
        }
        level
    }
}

/// VMIDs in use by realms of this process (VMID 0 is left to the host).
static VMIDS: Mutex<std::collections::BTreeSet<u16>> =
    Mutex::new(std::collections::BTreeSet::new());

fn vmid_alloc() -> Option<u16> {
    let mut ids = VMIDS.lock().unwrap_or_else(|p| p.into_inner());
    let id = (1..=u16::MAX).find(|v| !ids.contains(v))?;
    ids.insert(id);
    Some(id)
}

fn vmid_free(id: u16) {
    VMIDS.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

/// KVM `find_map_level`: the shallowest level ≥ `min` whose block at `ipa` is aligned and ends
/// by `end`.
fn find_map_level(ipa: u64, end: u64, min: i8) -> i8 {
    let mut level = 3;
    while level > min {
        let size = map_size(level - 1);
        if ipa % size != 0 || ipa.checked_add(size).is_none_or(|e| e > end) {
            break;
        }
        level -= 1;
    }
    level
}

/// What realm creation has done so far (undone if it fails).
#[derive(Default)]
struct Partial {
    delegated: Vec<u64>,
    allocated: Vec<u64>,
    vmid: Option<u16>,
}

/// State shared by a realm VM and its vCPUs.
pub(crate) struct VmInner {
    shared: Arc<VmShared>,
    rmi: Arc<dyn Rmi>,
    st: Mutex<HostRealm>,
}

/// A realm VM (the [`VmOps`] wrapped by `ManagedVm`).
pub struct CcaVm {
    inner: Arc<VmInner>,
}

impl std::fmt::Debug for CcaVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CcaVm")
            .field("vm", &self.inner.shared.id)
            .finish_non_exhaustive()
    }
}

impl VmInner {
    fn client(&self) -> RmiClient<'_> {
        RmiClient::new(&*self.rmi, Some(&self.shared.stats))
    }

    fn lock(&self) -> MutexGuard<'_, HostRealm> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates and delegates one granule; nothing is left behind on failure.
    fn delegated(&self) -> Result<u64> {
        let pa = self.rmi.alloc_ns_granules(1)?;
        if let Err(e) = self.client().granule_delegate(pa) {
            let _ = self.rmi.free_ns_granule(pa);
            return Err(e.into());
        }
        Ok(pa)
    }

    /// Undelegates and frees a granule.
    fn release(&self, pa: u64) -> Result<()> {
        self.client().granule_undelegate(pa)?;
        self.rmi.free_ns_granule(pa)?;
        Ok(())
    }

    /// Releases a granule on an error path (the first error is the one reported); one that
    /// cannot be released is kept for teardown to retry.
    fn release_quietly(&self, st: &mut HostRealm, pa: u64) {
        if let Err(e) = self.release(pa) {
            tracing::warn!(vm = self.shared.id, pa, error = %e, "granule release failed");
            st.loose.push(pa);
        }
    }

    /// Releases a granule during teardown, keeping it for a retry if that fails.
    fn release_or_keep(&self, st: &mut HostRealm, pa: u64) -> Result<()> {
        let r = self.release(pa);
        if r.is_err() {
            st.loose.push(pa);
        }
        r
    }

    /// Creates the tables above `level` for `ipa` that do not exist yet.
    fn ensure_tables(&self, st: &mut HostRealm, ipa: u64, level: i8) -> Result<()> {
        for l in st.sl + 1..=level {
            let key = (l, ipa & !(map_size(l - 1) - 1));
            if st.rtts.contains_key(&key) {
                continue;
            }
            let rtt = self.delegated()?;
            if let Err(e) = self.client().rtt_create(st.rd, rtt, key.1, l) {
                self.release_quietly(st, rtt);
                return Err(e.into());
            }
            st.rtts.insert(key, rtt);
        }
        Ok(())
    }

    /// RMI_RTT_INIT_RIPAS over `[base, end)`, logging one descriptor per entry.
    fn init_ripas(&self, st: &mut HostRealm, base: u64, end: u64) -> Result<()> {
        let mut ipa = base;
        while ipa < end {
            let level = find_map_level(ipa, end, st.sl);
            self.ensure_tables(st, ipa, level)?;
            let walk = st.walk_level(ipa);
            let next = self.client().rtt_init_ripas(st.rd, ipa, end)?;
            let size = map_size(walk);
            let mut a = ipa;
            while a < next {
                st.log.events.push(MeasurementEvent::Ripas {
                    base: a,
                    top: a + size,
                });
                a += size;
            }
            self.shared
                .stats
                .add("ripas_descriptors", (next - ipa) / size);
            ipa = next;
        }
        Ok(())
    }

    /// Maps `[gpa, gpa + size)` (device view) unprotected to host memory at `pa`.
    fn map_shared(&self, st: &mut HostRealm, gpa: u64, size: u64, pa: u64) -> Result<()> {
        let top = st.top_bit();
        let (start, end) = (gpa | top, (gpa | top) + size);
        let mut ipa = start;
        while ipa < end {
            let level = find_map_level(ipa, end, MIN_BLOCK_LEVEL.max(st.sl + 1));
            // The block's host PA must be aligned like the IPA (windows are 2 MiB congruent).
            let out = pa + (ipa - start);
            let level = if out % map_size(level) != 0 { 3 } else { level };
            // A range an earlier conversion split keeps its deeper table: map at that level.
            let level = level.max(st.walk_level(ipa));
            self.ensure_tables(st, ipa, level)?;
            self.client()
                .rtt_map_unprotected(st.rd, ipa, level, out | NS_DESC_ATTR_MASK)?;
            st.ns_maps.insert(ipa, (level, out));
            ipa += map_size(level);
        }
        Ok(())
    }

    /// The unprotected mappings overlapping alias IPAs `[a, b)`, ascending: (IPA, level, PA).
    fn ns_overlapping(st: &HostRealm, a: u64, b: u64) -> Vec<(u64, i8, u64)> {
        let mut hits = Vec::new();
        // Mappings never overlap each other: walk down from `b` until one ends at or before `a`.
        for (&ipa, &(level, pa)) in st.ns_maps.range(..b).rev() {
            if ipa + map_size(level) <= a {
                break;
            }
            hits.push((ipa, level, pa));
        }
        hits.reverse();
        hits
    }

    /// Unmaps the unprotected alias of `[gpa, gpa + size)` (device view). A block that extends
    /// past the range is first split with RMI_RTT_CREATE, whose new table inherits the mapping
    /// page by page (TF-RMM `rtt.c smc_rtt_create`, `s2tt_init_assigned_ns`), so the rest of
    /// it stays mapped. Unmapping continues past errors and reports the first.
    fn unmap_shared(&self, st: &mut HostRealm, gpa: u64, size: u64) -> Result<()> {
        let top = st.top_bit();
        let (a, b) = (gpa | top, (gpa | top) + size);
        loop {
            let hits = Self::ns_overlapping(st, a, b);
            let partial = hits
                .iter()
                .find(|(ipa, level, _)| *ipa < a || ipa + map_size(*level) > b)
                .copied();
            let Some((ipa, level, pa)) = partial else {
                let mut first = Ok(());
                for (ipa, level, _) in hits {
                    match self.client().rtt_unmap_unprotected(st.rd, ipa, level) {
                        Ok(_) => {
                            st.ns_maps.remove(&ipa);
                        }
                        Err(e) => {
                            if first.is_ok() {
                                first = Err(e.into());
                            }
                        }
                    }
                }
                return first;
            };
            // `a` and `b` are page aligned, so only blocks (level < 3) straddle them.
            if level >= 3 {
                return Err(Error::InvalidArgument(format!(
                    "unmap of [{gpa:#x}, +{size:#x}) is not page aligned"
                )));
            }
            let child = level + 1;
            self.ensure_tables(st, ipa, child)?;
            st.ns_maps.remove(&ipa);
            let step = map_size(child);
            for i in 0..map_size(level) / step {
                st.ns_maps.insert(ipa + i * step, (child, pa + i * step));
            }
        }
    }

    /// Maps the shared backing of the private RAM in `[base, end)` at the unprotected alias,
    /// leaving parts that are already mapped as they are (KVM maps the memslot's shared pages
    /// when a range becomes shared). IPAs outside private regions have no backing and stay
    /// unmapped (the realm's accesses there are MMIO).
    fn map_backing(&self, st: &mut HostRealm, base: u64, end: u64) -> Result<()> {
        let top = st.top_bit();
        let spans: Vec<(u64, u64, u64)> = st
            .private
            .values()
            .filter_map(|p| {
                let s = base.max(p.region.gpa);
                let e = end.min(p.region.end());
                (s < e).then(|| (s, e, p.pa + (s - p.region.gpa)))
            })
            .collect();
        for (s, e, pa) in spans {
            let mut cur = s;
            for (ipa, level, _) in Self::ns_overlapping(st, s | top, e | top) {
                let (ms, me) = (ipa & !top, (ipa & !top) + map_size(level));
                if ms > cur {
                    self.map_shared(st, cur, ms - cur, pa + (cur - s))?;
                }
                cur = cur.max(me);
            }
            if cur < e {
                self.map_shared(st, cur, e - cur, pa + (cur - s))?;
            }
        }
        Ok(())
    }

    /// Unmaps the unprotected alias of the private RAM in `[base, end)` (shared regions'
    /// mappings are the VMM's and stay).
    fn unmap_backing(&self, st: &mut HostRealm, base: u64, end: u64) -> Result<()> {
        let spans: Vec<(u64, u64)> = st
            .private
            .values()
            .filter_map(|p| {
                let s = base.max(p.region.gpa);
                let e = end.min(p.region.end());
                (s < e).then_some((s, e))
            })
            .collect();
        for (s, e) in spans {
            self.unmap_shared(st, s, e - s)?;
        }
        Ok(())
    }

    /// Rebuilds the VMM views of the private regions overlapping `[base, end)`: one mapping of
    /// the backing per run of the alias that is mapped.
    fn refresh_views(&self, st: &mut HostRealm, base: u64, end: u64) -> Result<()> {
        let top = st.top_bit();
        let gpas: Vec<u64> = st
            .private
            .values()
            .filter(|p| p.region.gpa < end && base < p.region.end())
            .map(|p| p.region.gpa)
            .collect();
        for gpa in gpas {
            let Some(p) = st.private.get(&gpa) else {
                continue;
            };
            let (start, stop) = (p.region.gpa, p.region.end());
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for (ipa, level, _) in Self::ns_overlapping(st, start | top, stop | top) {
                let (s, e) = (ipa & !top, (ipa & !top) + map_size(level));
                match runs.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => runs.push((s, e)),
                }
            }
            let mut views = Vec::new();
            for (s, e) in runs {
                let mapping = map_file(&p.file, s - start, e - s)?;
                let view = GuestRegionMmap::new(mapping, GuestAddress(s))
                    .ok_or_else(|| Error::InvalidArgument("view overflows".into()))?;
                views.push(Arc::new(view));
            }
            if let Some(p) = st.private.get_mut(&gpa) {
                p.views = views;
            }
        }
        Ok(())
    }

    /// DATA_DESTROY + release of the data granules in `[gpa, gpa + size)`.
    fn destroy_data(&self, st: &mut HostRealm, gpa: u64, size: u64) -> Result<()> {
        let pages: Vec<(u64, u64)> = st
            .data
            .range(gpa..gpa.saturating_add(size))
            .map(|(k, v)| (*k, *v))
            .collect();
        let mut first = Ok(());
        for (ipa, pa) in pages {
            let r = match self.client().data_destroy(st.rd, ipa) {
                Ok(_) => {
                    st.data.remove(&ipa);
                    self.release_or_keep(st, pa)
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = r {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Populates one private page the realm touched (RMI_DATA_CREATE_UNKNOWN). `Ok(false)` if
    /// the IPA is not private RAM the realm may use.
    fn populate(&self, ipa: u64) -> Result<bool> {
        let mut st = self.lock();
        if st.destroyed
            || !st
                .private
                .values()
                .any(|p| p.region.contains(ipa, GRANULE_SIZE))
        {
            return Ok(false);
        }
        if st.data.contains_key(&ipa) {
            return Ok(true);
        }
        let entry = self.client().rtt_read_entry(st.rd, ipa, 3)?;
        if entry.state == RttEntryState::Assigned {
            return Ok(true);
        }
        if entry.ripas != Ripas::Ram {
            return Ok(false);
        }
        self.ensure_tables(&mut st, ipa, 3)?;
        let data = self.delegated()?;
        if let Err(e) = self.client().data_create_unknown(st.rd, data, ipa) {
            self.release_quietly(&mut st, data);
            return Err(e.into());
        }
        st.data.insert(ipa, data);
        self.shared.stats.add("pages_populated", 1);
        Ok(true)
    }

    /// RMI_DATA_CREATE of the buffered loads of kind `measure`, ascending IPA, one event per
    /// load in the log. A load that fails part-way is logged for the pages that were created
    /// and keeps the rest buffered.
    fn issue_loads(&self, st: &mut HostRealm, measure: Measure) -> Result<()> {
        let firsts: Vec<u64> = st
            .pending
            .iter()
            .filter(|(_, p)| p.measure == measure)
            .map(|(k, _)| *k)
            .collect();
        if firsts.is_empty() {
            return Ok(());
        }
        let flags = match measure {
            Measure::Yes => RMI_MEASURE_CONTENT,
            Measure::No => RMI_NO_MEASURE_CONTENT,
        };
        let src = self.rmi.alloc_ns_granules(1)?;
        let mut result = Ok(());
        for first in firsts {
            let Some(load) = st.pending.remove(&first) else {
                continue;
            };
            let mut done = 0usize;
            for chunk in load.image.chunks(GRANULE_SIZE as usize) {
                let ipa = first + (done as u64) * GRANULE_SIZE;
                let mut page = [0u8; GRANULE_SIZE as usize];
                page[..chunk.len()].copy_from_slice(chunk);
                let r = (|| -> Result<()> {
                    self.ensure_tables(st, ipa, 3)?;
                    self.rmi.write_ns(src, &page)?;
                    let data = self.delegated()?;
                    if let Err(e) = self.client().data_create(st.rd, data, ipa, src, flags) {
                        self.release_quietly(st, data);
                        return Err(e.into());
                    }
                    st.data.insert(ipa, data);
                    Ok(())
                })();
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
                done += 1;
            }
            let split = (done * GRANULE_SIZE as usize).min(load.image.len());
            let (issued, rest) = load.image.split_at(split);
            if !issued.is_empty() {
                st.log.events.push(MeasurementEvent::Data {
                    ipa: first,
                    measured: measure == Measure::Yes,
                    content: Content::bytes(issued.to_vec()),
                });
            }
            if result.is_err() {
                if !rest.is_empty() {
                    st.pending.insert(
                        first + split as u64,
                        PendingLoad {
                            image: rest.to_vec(),
                            measure,
                        },
                    );
                }
                break;
            }
        }
        let _ = self.rmi.free_ns_granule(src);
        result
    }

    /// RMI_REC_CREATE of the recorded vCPUs that have no REC yet, in index order (the RMM
    /// requires MPIDRs in REC-index order: TF-RMM `runtime/rmi/rec.c`).
    fn create_recs(&self, st: &mut HostRealm) -> Result<()> {
        let todo: Vec<Arc<RecHandle>> = st
            .recs
            .iter()
            .filter(|r| r.granules().is_none())
            .cloned()
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let c = self.client();
        let aux_count = c.rec_aux_count(st.rd)?;
        for rec in todo {
            let mut granules = Vec::new();
            let created = (|| -> Result<RecGranules> {
                let pa = self.delegated()?;
                granules.push(pa);
                for _ in 0..aux_count {
                    granules.push(self.delegated()?);
                }
                let mut p = RecParams::zeroed();
                p.flags = if rec.init.runnable {
                    REC_FLAG_RUNNABLE
                } else {
                    0
                };
                p.mpidr = rec.mpidr;
                p.pc = rec.init.entry;
                for (d, s) in p.gprs.iter_mut().zip(&rec.init.args) {
                    *d = *s;
                }
                p.num_aux = aux_count;
                for (d, s) in p.aux.iter_mut().zip(&granules[1..]) {
                    *d = *s;
                }
                let params = self.rmi.alloc_ns_granules(1)?;
                let r = self
                    .rmi
                    .write_ns(params, p.as_bytes())
                    .map_err(Error::from)
                    .and_then(|()| c.rec_create(st.rd, pa, params).map_err(Error::from));
                let _ = self.rmi.free_ns_granule(params);
                r?;
                let run = match self.rmi.alloc_ns_granules(1) {
                    Ok(run) => run,
                    Err(e) => {
                        let _ = c.rec_destroy(pa);
                        return Err(e.into());
                    }
                };
                Ok(RecGranules {
                    pa,
                    aux: granules[1..].to_vec(),
                    run,
                })
            })();
            match created {
                Ok(g) => {
                    *rec.granules.lock().unwrap_or_else(|p| p.into_inner()) = Some(g);
                    st.log.events.push(MeasurementEvent::Rec {
                        runnable: rec.init.runnable,
                        pc: rec.init.entry,
                        gprs: rec.init.args.clone(),
                    });
                }
                Err(e) => {
                    for pa in granules {
                        self.release_quietly(st, pa);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Tears everything down; continues past errors and reports the first.
    fn teardown(&self) -> Result<()> {
        let mut st = self.lock();
        if st.destroyed {
            return Ok(());
        }
        let mut first: Result<()> = Ok(());
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "realm teardown step failed");
                if first.is_ok() {
                    first = Err(e);
                }
            }
        };
        let c = self.client();
        for pa in std::mem::take(&mut st.loose) {
            note(self.release_or_keep(&mut st, pa));
        }
        // Whatever fails stays tracked, so a later destroy (e.g. on drop) retries it.
        st.pending.clear();
        let mut recs_left = false;
        for rec in st.recs.clone() {
            let mut slot = rec.granules.lock().unwrap_or_else(|p| p.into_inner());
            let Some(g) = slot.clone() else {
                continue;
            };
            match c.rec_destroy(g.pa) {
                Ok(()) => {
                    *slot = None;
                    drop(slot);
                    note(self.release_or_keep(&mut st, g.pa));
                    for a in &g.aux {
                        note(self.release_or_keep(&mut st, *a));
                    }
                    note(self.rmi.free_ns_granule(g.run).map_err(Error::from));
                }
                Err(e) => {
                    note(Err(e.into()));
                    recs_left = true;
                }
            }
        }
        note(self.destroy_data(&mut st, 0, u64::MAX));
        let unprotected = st.top_bit();
        note(self.unmap_shared(&mut st, 0, unprotected));
        // RTTs deepest first.
        let mut rtts: Vec<((i8, u64), u64)> = st.rtts.iter().map(|(k, v)| (*k, *v)).collect();
        rtts.sort_by(|a, b| b.0 .0.cmp(&a.0 .0).then(a.0 .1.cmp(&b.0 .1)));
        for ((level, ipa), pa) in rtts {
            match c.rtt_destroy(st.rd, ipa, level) {
                Ok(_) => {
                    st.rtts.remove(&(level, ipa));
                    note(self.release_or_keep(&mut st, pa));
                }
                Err(e) => note(Err(e.into())),
            }
        }
        if !recs_left && st.rtts.is_empty() {
            match c.realm_destroy(st.rd) {
                Ok(()) => {
                    let rd = st.rd;
                    note(self.release_or_keep(&mut st, rd));
                    for r in st.roots.clone() {
                        note(self.release_or_keep(&mut st, r));
                    }
                    st.realm_gone = true;
                    vmid_free(st.vmid);
                }
                Err(e) => note(Err(e.into())),
            }
        }
        if st.realm_gone {
            let shared = std::mem::take(&mut st.shared);
            for (gpa, s) in shared {
                if let Err(e) = self.rmi.detach_ns_memory(s.pa) {
                    note(Err(e.into()));
                    st.shared.insert(gpa, s);
                }
            }
            let private = std::mem::take(&mut st.private);
            for (gpa, p) in private {
                if let Err(e) = self.rmi.detach_ns_memory(p.pa) {
                    note(Err(e.into()));
                    st.private.insert(gpa, p);
                }
            }
        }

        st.destroyed = first.is_ok();
        first
    }
}

impl CcaVm {
    /// Creates the realm (RMI_REALM_CREATE) for `shared.config`; on failure nothing stays
    /// delegated or allocated.
    pub(crate) fn create(rmi: Arc<dyn Rmi>, shared: Arc<VmShared>) -> Result<Self> {
        let setup = RealmSetup::from_config(&shared.config)?;
        let c = RmiClient::new(&*rmi, Some(&shared.stats));
        c.version(abi::RMI_ABI_VERSION)?;
        let feat = c.features(0)?;
        let max_s2sz = abi::feature0::field(feat, abi::feature0::S2SZ_SHIFT, 8) as u8;
        if setup.s2sz > max_s2sz {
            return Err(Error::Unsupported(format!(
                "the RMM supports IPA widths up to {max_s2sz} bits"
            )));
        }
        let (sl, num) = start_level(setup.s2sz);
        let mut partial = Partial::default();
        let rd = match Self::create_realm(&c, &*rmi, &setup, sl, num, &mut partial) {
            Ok(rd) => rd,
            Err(e) => {
                for pa in partial.delegated {
                    let _ = c.granule_undelegate(pa);
                }
                for pa in partial.allocated {
                    let _ = rmi.free_ns_granule(pa);
                }
                return Err(e);
            }
        };
        let Partial {
            delegated, vmid, ..
        } = partial;
        let roots = delegated[1..].to_vec();
        let log = MeasurementLog {
            algorithm: setup.algorithm,
            realm: Some(setup.params),
            events: Vec::new(),
        };
        Ok(Self {
            inner: Arc::new(VmInner {
                shared,
                rmi,
                st: Mutex::new(HostRealm {
                    rd,
                    roots,
                    vmid: vmid.unwrap_or(0),
                    s2sz: setup.s2sz,
                    sl,
                    algorithm: setup.algorithm,
                    rtts: BTreeMap::new(),
                    data: BTreeMap::new(),
                    ns_maps: BTreeMap::new(),
                    shared: BTreeMap::new(),
                    private: BTreeMap::new(),
                    pending: BTreeMap::new(),
                    recs: Vec::new(),
                    log,
                    loose: Vec::new(),
                    realm_gone: false,
                    destroyed: false,
                }),
            }),
        })
    }

    fn create_realm(
        c: &RmiClient<'_>,
        rmi: &dyn Rmi,
        setup: &RealmSetup,
        sl: i8,
        num: u32,
        partial: &mut Partial,
    ) -> Result<u64> {
        let Partial {
            delegated,
            allocated,
            vmid,
        } = partial;
        let rd = rmi.alloc_ns_granules(1)?;
        allocated.push(rd);
        let base = rmi.alloc_ns_granules(u64::from(num))?;
        allocated.extend((0..u64::from(num)).map(|i| base + i * GRANULE_SIZE));
        for pa in allocated.clone() {
            c.granule_delegate(pa)?;
            delegated.push(pa);
        }
        let params_pa = rmi.alloc_ns_granules(1)?;
        let mut p = RealmParams::zeroed();
        p.flags = setup.params.flags;
        p.s2sz = setup.s2sz;
        p.sve_vl = setup.params.sve_vl;
        p.num_bps = setup.params.num_bps;
        p.num_wps = setup.params.num_wps;
        p.pmu_num_ctrs = setup.params.pmu_num_ctrs;
        p.hash_algo = rmi_algorithm(setup.algorithm).map_or(0, |a| a as u8);
        p.rpv = setup.rpv;
        // VMIDs: the host picks an unused one (as KVM's VMID allocator); the RMM rejects
        // duplicates.
        p.vmid = vmid_alloc().ok_or_else(|| Error::Unsupported("no free VMID".into()))?;
        vmid.replace(p.vmid);
        p.rtt_base = base;
        p.rtt_level_start = i64::from(sl);
        p.rtt_num_start = num;
        let r = rmi
            .write_ns(params_pa, p.as_bytes())
            .map_err(Error::from)
            .and_then(|()| c.realm_create(rd, params_pa).map_err(Error::from));
        let _ = rmi.free_ns_granule(params_pa);
        if r.is_err() {
            if let Some(v) = vmid.take() {
                vmid_free(v);
            }
        }
        r?;
        Ok(rd)
    }

    fn st(&self) -> MutexGuard<'_, HostRealm> {
        self.inner.lock()
    }

    /// The RD's physical address (for model introspection in tests and tools).
    pub fn rd(&self) -> u64 {
        self.st().rd
    }
}

/// `memfd_create` + `ftruncate(size)`: the shared backing of a private region.
fn memfd(size: u64) -> Result<File> {
    // SAFETY: the name is a NUL-terminated C string literal and the flags are valid; the call
    // touches no memory of ours.
    let raw = unsafe { libc::memfd_create(c"cvm-cca-shared".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(Error::os("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.set_len(size).map_err(|e| Error::os("ftruncate", e))?;
    Ok(file)
}

/// A `MAP_SHARED` mapping of `len` bytes of `file` from `offset`.
fn map_file(file: &File, offset: u64, len: u64) -> Result<MmapRegion> {
    let len = usize::try_from(len).map_err(|_| Error::InvalidArgument("range too large".into()))?;
    let fd = file.try_clone().map_err(|e| Error::os("dup", e))?;
    MmapRegion::from_file(FileOffset::new(fd, offset), len)
        .map_err(|e| Error::os("mmap", std::io::Error::other(e.to_string())))
}

/// The shared backing of a private region: a memfd, mapped whole and attached as NS host RAM
/// (2 MiB congruent with the GPA, so block mappings are possible); no VMM view yet.
fn attach_private_backing(rmi: &dyn Rmi, region: &MemoryRegion) -> Result<PrivateRegion> {
    let file = memfd(region.size)?;
    let mapping = Arc::new(map_file(&file, 0, region.size)?);
    let pa = rmi.attach_ns_memory(mapping, region.gpa)?;
    Ok(PrivateRegion {
        region: *region,
        file,
        pa,
        views: Vec::new(),
    })
}

/// Allocates VMM memory for `region` and attaches it as NS host RAM (2 MiB congruent with the
/// GPA, so block mappings are possible).
fn attach_backing(rmi: &dyn Rmi, region: &MemoryRegion) -> Result<SharedRegion> {
    let size = usize::try_from(region.size)
        .map_err(|_| Error::InvalidArgument("region too large".into()))?;
    let mapping = Arc::new(
        MmapRegion::new(size)
            .map_err(|e| Error::os("mmap", std::io::Error::other(e.to_string())))?,
    );
    let guest = GuestRegionMmap::with_arc(Arc::clone(&mapping), GuestAddress(region.gpa))
        .ok_or_else(|| Error::InvalidArgument("region overflows".into()))?;
    let pa = rmi.attach_ns_memory(mapping, region.gpa)?;
    Ok(SharedRegion {
        pa,
        guest: Arc::new(guest),
    })
}

impl VmOps for CcaVm {
    fn add_memory(&self, region: &MemoryRegion) -> Result<()> {
        let vm = &*self.inner;
        let mut st = vm.lock();
        match region.kind {
            MemoryKind::Private => {
                let private = attach_private_backing(&*vm.rmi, region)?;
                if let Err(e) = vm.init_ripas(&mut st, region.gpa, region.end()) {
                    let _ = vm.rmi.detach_ns_memory(private.pa);
                    return Err(e);
                }
                st.private.insert(region.gpa, private);
                Ok(())
            }
            MemoryKind::Shared => {
                let backing = attach_backing(&*vm.rmi, region)?;
                if let Err(e) = vm.map_shared(&mut st, region.gpa, region.size, backing.pa) {
                    let _ = vm.unmap_shared(&mut st, region.gpa, region.size);
                    let _ = vm.rmi.detach_ns_memory(backing.pa);
                    return Err(e);
                }
                st.shared.insert(region.gpa, backing);
                Ok(())
            }
        }
    }

    fn remove_memory(&self, region: &MemoryRegion) -> Result<()> {
        let vm = &*self.inner;
        let mut st = vm.lock();
        match region.kind {
            MemoryKind::Private => {
                st.pending
                    .retain(|first, _| !region.contains(*first, GRANULE_SIZE));
                vm.unmap_shared(&mut st, region.gpa, region.size)?;
                vm.destroy_data(&mut st, region.gpa, region.size)?;
                if let Some(p) = st.private.remove(&region.gpa) {
                    if let Err(e) = vm.rmi.detach_ns_memory(p.pa) {
                        st.private.insert(region.gpa, p);
                        return Err(e.into());
                    }
                }
                Ok(())
            }
            MemoryKind::Shared => {
                vm.unmap_shared(&mut st, region.gpa, region.size)?;
                if let Some(s) = st.shared.remove(&region.gpa) {
                    vm.rmi.detach_ns_memory(s.pa)?;
                }
                Ok(())
            }
        }
    }

    /// The shared regions, and the ranges of private regions the realm has shared (RIPAS EMPTY,
    /// backing mapped at the unprotected alias) at their device-view GPAs. Private GPAs never
    /// appear.
    fn shared_memory(&self) -> GuestMemoryMmap {
        let st = self.st();
        let regions: BTreeMap<u64, Arc<GuestRegionMmap>> = st
            .shared
            .iter()
            .map(|(gpa, s)| (*gpa, Arc::clone(&s.guest)))
            .chain(
                st.private
                    .values()
                    .flat_map(|p| p.views.iter())
                    .map(|v| (v.start_addr().0, Arc::clone(v))),
            )
            .collect();
        GuestMemoryMmap::from_arc_regions(regions.into_values().collect()).unwrap_or_default()
    }

    fn load(&self, region: &MemoryRegion, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()> {
        let vm = &*self.inner;
        let mut st = vm.lock();
        if region.kind == MemoryKind::Shared {
            let s = st.shared.get(&region.gpa).ok_or(Error::NotMapped {
                gpa,
                len: bytes.len() as u64,
                what: "a shared region",
            })?;
            return s
                .guest
                .write_slice(
                    bytes,
                    cvm_core::vm_memory::MemoryRegionAddress(gpa - region.gpa),
                )
                .map_err(|e| Error::InvalidArgument(format!("shared load failed: {e}")));
        }
        // Validated now, issued at finalize (in CRM's order; see the module docs).
        let first = gpa & !(GRANULE_SIZE - 1);
        let offset = (gpa - first) as usize;
        let mut image = vec![0u8; offset];
        image.extend_from_slice(bytes);
        let load = PendingLoad { image, measure };
        let end = load.end(first);
        let overlap = |what, other_start, other_end| {
            Error::backend(LoadOverlap {
                start: first,
                end,
                what,
                other_start,
                other_end,
            })
        };
        if let Some((&ipa, _)) = st.data.range(first..end).next() {
            return Err(overlap("a populated page", ipa, ipa + GRANULE_SIZE));
        }
        if let Some((&other, p)) = st.pending.range(..end).next_back() {
            if p.end(other) > first {
                let what = match p.measure {
                    Measure::Yes => "a measured load",
                    Measure::No => "an unmeasured load",
                };
                return Err(overlap(what, other, p.end(other)));
            }
        }
        st.pending.insert(first, load);
        Ok(())
    }

    fn create_vcpu(&self, id: u32, init: &VcpuInit) -> Result<Box<dyn VcpuOps>> {
        // Recorded now; RMI_REC_CREATE at finalize, after the measured data (CRM's order).
        let rec = Arc::new(RecHandle {
            mpidr: rec_idx_to_mpidr(u64::from(id)),
            init: init.clone(),
            granules: Mutex::new(None),
            runnable: AtomicBool::new(init.runnable),
        });
        self.st().recs.push(Arc::clone(&rec));
        Ok(Box::new(CcaVcpu {
            vm: Arc::clone(&self.inner),
            rec,
            saved_gprs: [0; 31],
            conversion: None,
            last: None,
            top: self.st().top_bit(),
        }))
    }

    fn finalize(&self) -> Result<()> {
        let vm = &*self.inner;
        let mut st = vm.lock();
        vm.issue_loads(&mut st, Measure::Yes)?;
        vm.create_recs(&mut st)?;
        vm.issue_loads(&mut st, Measure::No)?;
        vm.client().realm_activate(st.rd)?;
        Ok(())
    }

    fn measurement(&self) -> Result<Measurement> {
        // The host cannot read a realm's measurements (only the realm or an attestation token
        // can); it predicts the RIM from its log with the same code the RMM runs.
        let log = self.st().log.clone();
        let m = crate::measure::replay(&log).map_err(Error::backend)?;
        Ok(Measurement {
            algorithm: m.algorithm,
            registers: vec![cvm_core::MeasurementRegister {
                name: "RIM".into(),
                value: m.rim,
            }],
        })
    }

    fn measurement_log(&self) -> MeasurementLog {
        self.st().log.clone()
    }

    fn convert(&self, _gpa: u64, _size: u64, _to: MemoryKind) -> Result<()> {
        Err(Error::Unsupported(
            "a CCA host cannot change a realm's RIPAS; the realm asks with RSI_IPA_STATE_SET"
                .into(),
        ))
    }

    fn check_feature(&self, def: &FeatureDef, _current: u64, value: u64) -> Result<()> {
        check_id_write(def, value)
    }

    fn destroy(&self) -> Result<()> {
        self.inner.teardown()
    }

    fn guest_platform(&self) -> Box<dyn cvm_core::guest::GuestPlatform + Send + Sync> {
        let st = self.st();
        Box::new(CcaPlatform::new(st.s2sz, st.algorithm))
    }
}

/// The RecExit fields behind the last exit `run` returned, kept raw; [`VcpuOps::exit_detail`]
/// formats them on demand.
#[derive(Debug, Clone, Copy)]
struct LastExit {
    reason: u64,
    esr: u64,
    far: u64,
    hpfar: u64,
    gprs: [u64; 4],
    ripas_base: u64,
    ripas_top: u64,
    ripas_value: u8,
    imm: u32,
}

impl LastExit {
    fn of(exit: &RecExit) -> Self {
        Self {
            reason: exit.exit_reason,
            esr: exit.esr,
            far: exit.far,
            hpfar: exit.hpfar,
            gprs: [exit.gprs[0], exit.gprs[1], exit.gprs[2], exit.gprs[3]],
            ripas_base: exit.ripas_base,
            ripas_top: exit.ripas_top,
            ripas_value: exit.ripas_value,
            imm: exit.imm,
        }
    }

    /// RmiRecExit fields as the host saw them (spec/cca.md §1.6, §3.2), the transfer channel
    /// of the value (DESIGN.md, exits table) and a native reason name.
    fn detail(&self, unprotected_bit: u64) -> ExitDetail {
        let reg = |name: &str, v: u64| (name.to_owned(), v);
        let syndromes = vec![
            reg("esr", self.esr),
            reg("far", self.far),
            reg("hpfar", self.hpfar),
        ];
        let (reason, registers, channel): (String, Vec<(String, u64)>, &str) = match self.reason {
            exit_reason::SYNC => match esr::ec(self.esr) {
                esr::EC_DABT_LOWER => {
                    let mmio =
                        hpfar_to_ipa(self.hpfar) & unprotected_bit != 0 && esr::isv(self.esr);
                    let write = esr::wnr(self.esr);
                    let mut regs = syndromes;
                    let channel = match (mmio, write) {
                        (true, true) => {
                            regs.push(reg("gprs[0]", self.gprs[0]));
                            "RecExit.gprs[0]"
                        }
                        (true, false) => "RecEntry.gprs[0] + EMULATED_MMIO",
                        (false, _) => "",
                    };
                    ("RMI_EXIT_SYNC (data abort)".into(), regs, channel)
                }
                esr::EC_IABT_LOWER => ("RMI_EXIT_SYNC (instruction abort)".into(), syndromes, ""),
                esr::EC_WFX => {
                    let what = if self.esr & 1 == 0 { "WFI" } else { "WFE" };
                    (
                        format!("RMI_EXIT_SYNC ({what})"),
                        vec![reg("esr", self.esr)],
                        "",
                    )
                }
                esr::EC_SYSREG => (
                    "RMI_EXIT_SYNC (system register)".into(),
                    vec![reg("esr", self.esr)],
                    "RecEntry.gprs[0]",
                ),
                ec => (format!("RMI_EXIT_SYNC (EC {ec:#x})"), syndromes, ""),
            },
            exit_reason::IRQ => ("RMI_EXIT_IRQ".into(), Vec::new(), ""),
            exit_reason::FIQ => ("RMI_EXIT_FIQ".into(), Vec::new(), ""),
            exit_reason::PSCI => (
                "RMI_EXIT_PSCI".into(),
                (0..4)
                    .map(|i| reg(&format!("gprs[{i}]"), self.gprs[i]))
                    .collect(),
                "RecExit.gprs[0..3]; RMI_PSCI_COMPLETE",
            ),
            exit_reason::RIPAS_CHANGE => (
                "RMI_EXIT_RIPAS_CHANGE".into(),
                vec![
                    reg("ripas_base", self.ripas_base),
                    reg("ripas_top", self.ripas_top),
                    reg("ripas_value", u64::from(self.ripas_value)),
                ],
                "RMI_RTT_SET_RIPAS + RecEntry.flags.RIPAS_RESPONSE",
            ),
            exit_reason::HOST_CALL => (
                "RMI_EXIT_HOST_CALL".into(),
                vec![reg("imm", u64::from(self.imm))],
                "RsiHostCall.gprs via RecExit.gprs / RecEntry.gprs",
            ),
            exit_reason::SERROR => ("RMI_EXIT_SERROR".into(), syndromes, ""),
            other => (format!("RMI_EXIT_{other}"), syndromes, ""),
        };
        ExitDetail {
            reason,
            registers,
            channel: channel.into(),
        }
    }
}

/// A REC driven by the host run loop.
struct CcaVcpu {
    vm: Arc<VmInner>,
    rec: Arc<RecHandle>,
    /// RecExit.gprs of the last host call (returned with the results on the next entry).
    saved_gprs: [u64; 31],
    /// The pending RIPAS change (base, top, to RAM).
    conversion: Option<(u64, u64, bool)>,
    /// The RecExit behind the last exit returned (`None` if `run` did not enter).
    last: Option<LastExit>,
    /// The unprotected-IPA bit.
    top: u64,
}

impl CcaVcpu {
    fn enter(&self, g: &RecGranules, enter: &RecEnter) -> Result<RecExit> {
        let c = self.vm.client();
        self.vm.rmi.write_ns(g.run, enter.as_bytes())?;
        c.rec_enter(g.pa, g.run)?;
        let mut buf = [0u8; 0x800];
        self.vm.rmi.read_ns(g.run + 0x800, &mut buf)?;
        RecExit::read_from_bytes(&buf)
            .map_err(|_| Error::InvalidArgument("malformed RecExit".into()))
    }

    /// Accepts a RIPAS change: RMI_RTT_SET_RIPAS until done (creating deeper RTTs where the
    /// range splits a block). To shared (EMPTY): the pages the range held are released and the
    /// region's shared backing is mapped at the unprotected alias; to private (RAM): the alias
    /// is unmapped first (KVM: `realm_unmap_shared_range` before making pages private).
    fn apply_conversion(&self, rec: u64, base: u64, top: u64, to_ram: bool) -> Result<()> {
        let vm = &self.vm;
        let mut st = vm.lock();
        let r = self.convert_locked(&mut st, rec, base, top, to_ram);
        // The VMM's views follow what is mapped, whatever happened.
        let views = vm.refresh_views(&mut st, base, top);
        r.and(views)
    }

    fn convert_locked(
        &self,
        st: &mut HostRealm,
        rec: u64,
        base: u64,
        top: u64,
        to_ram: bool,
    ) -> Result<()> {
        let vm = &self.vm;
        if to_ram {
            vm.unmap_backing(st, base, top)?;
        }
        let mut addr = base;
        while addr < top {
            match vm.client().rtt_set_ripas(st.rd, rec, addr, top) {
                Ok(next) => addr = next,
                Err(RmiError { code, index, .. })
                    if code == RmiStatus::ErrorRtt as u8 && index < 3 =>
                {
                    let before = st.walk_level(addr);
                    vm.ensure_tables(st, addr, index as i8 + 1)?;
                    if st.walk_level(addr) == before {
                        break;
                    }
                }
                Err(_) => break, // the realm sees how far it got (X1)
            }
        }
        if !to_ram {
            // The pages are EMPTY now: give them back (KVM unmaps and frees them too) and
            // let the realm reach the shared backing through the alias.
            vm.destroy_data(st, base, addr - base)?;
            vm.map_backing(st, base, addr)?;
        } else if addr < top {
            // What the RMM did not convert is still EMPTY, hence still shared.
            vm.map_backing(st, addr, top)?;
        }
        Ok(())
    }

    fn answer_sysreg(&self, esr_v: u64) -> u64 {
        let enc = (
            esr::sysreg_op0(esr_v),
            esr::sysreg_op1(esr_v),
            esr::sysreg_crn(esr_v),
            esr::sysreg_crm(esr_v),
            esr::sysreg_op2(esr_v),
        );
        by_encoding(enc)
            .and_then(|r| self.vm.shared.features.read(r.name))
            .unwrap_or(0)
    }

    fn fault(reason: String, syndrome: u64) -> VmExit {
        VmExit::Fault {
            pc: 0,
            syndrome,
            insn: None,
            reason,
        }
    }
}

impl VcpuOps for CcaVcpu {
    fn run(&mut self, resume: Resume, pending: Option<&VmExit>) -> Result<VmExit> {
        let Some(g) = self.rec.granules() else {
            // No REC (finalize did not create it, or teardown destroyed it).
            return Err(Error::InvalidState {
                op: "run a vCPU without a REC",
                state: self.vm.shared.lifecycle.state(),
            });
        };
        if !self.rec.runnable.load(Ordering::Acquire) {
            // Powered off (never started, or CPU_OFF): nothing to enter until PSCI CPU_ON.
            self.last = None;
            return Ok(VmExit::Halt);
        }
        let base_flags = enter_flags::TRAP_WFI;
        let mut enter = RecEnter::zeroed();
        enter.flags = base_flags;
        match (pending, resume) {
            (Some(VmExit::Mmio { write: Some(_), .. }), Resume::Done) => {
                enter.flags |= enter_flags::EMULATED_MMIO;
            }
            (Some(VmExit::Mmio { write: None, .. }), Resume::MmioRead(v)) => {
                enter.flags |= enter_flags::EMULATED_MMIO;
                enter.gprs[0] = v;
            }
            (Some(VmExit::Mmio { .. }), Resume::InjectAbort) => {
                enter.flags |= enter_flags::INJECT_SEA;
            }
            (Some(VmExit::ConvertMemory { .. }), Resume::Conversion(accept)) => {
                match (accept, self.conversion.take()) {
                    (true, Some((base, top, to_ram))) => {
                        self.apply_conversion(g.pa, base, top, to_ram)?
                    }
                    (true, None) => {}
                    (false, _) => enter.flags |= enter_flags::RIPAS_RESPONSE,
                }
            }
            (Some(VmExit::HostCall { .. }), Resume::HostCall(ret)) => {
                enter.gprs = self.saved_gprs;
                enter.gprs[0] = ret[0];
                enter.gprs[1] = ret[1];
            }
            (Some(VmExit::SysReg { .. }), Resume::SysReg(v)) => enter.gprs[0] = v,
            _ => {}
        }
        let top = self.top;
        let mut irqs = 0u32;
        let (mut last_populated, mut same_page) = (None, 0u32);
        loop {
            let exit = self.enter(&g, &enter)?;
            self.last = Some(LastExit::of(&exit));
            enter = RecEnter::zeroed();
            enter.flags = base_flags;
            self.vm.shared.stats.add("rec_exits", 1);
            match exit.exit_reason {
                exit_reason::SYNC => match esr::ec(exit.esr) {
                    esr::EC_DABT_LOWER | esr::EC_IABT_LOWER => {
                        let page = hpfar_to_ipa(exit.hpfar);
                        let data = esr::ec(exit.esr) == esr::EC_DABT_LOWER;
                        if esr::dfsc(exit.esr) == esr::DFSC_SEA {
                            return Ok(Self::fault(
                                "synchronous external abort in the realm".into(),
                                exit.esr,
                            ));
                        }
                        if data && page & top != 0 {
                            if esr::isv(exit.esr) {
                                let size = abi::sas_bytes(esr::sas(exit.esr));
                                return Ok(VmExit::Mmio {
                                    gpa: (page & !top) | (exit.far & 0xFFF),
                                    size,
                                    write: esr::wnr(exit.esr).then_some(exit.gprs[0]),
                                });
                            }
                            // No syndrome for the access: KVM injects an SEA.
                            self.vm.shared.stats.add("nisv_sea_injected", 1);
                            enter.flags |= enter_flags::INJECT_SEA;
                            continue;
                        }
                        if self.vm.populate(page)? {
                            // The page is mapped now; a realm that faults on it again and
                            // again is not making progress (an RMM that misreports the fault
                            // address): give up rather than re-enter forever.
                            same_page = match last_populated {
                                Some(p) if p == page => same_page + 1,
                                _ => 0,
                            };
                            last_populated = Some(page);
                            if same_page < POPULATE_RETRIES {
                                continue;
                            }
                            return Ok(Self::fault(
                                format!("realm keeps faulting on populated page {page:#x}"),
                                exit.esr,
                            ));
                        }
                        return Ok(Self::fault(
                            format!("realm access to {page:#x}, which is not realm RAM"),
                            exit.esr,
                        ));
                    }
                    esr::EC_WFX => {
                        if exit.esr & 1 == 0 {
                            return Ok(VmExit::Halt);
                        }
                    }
                    esr::EC_SYSREG => {
                        enter.gprs[0] = self.answer_sysreg(exit.esr);
                    }
                    _ => {
                        return Ok(Self::fault(
                            format!("unexpected synchronous exit (ESR {:#x})", exit.esr),
                            exit.esr,
                        ))
                    }
                },
                exit_reason::IRQ | exit_reason::FIQ => {
                    irqs += 1;
                    if irqs >= IRQ_EXITS_BEFORE_INTERRUPTED {
                        return Ok(VmExit::Interrupted);
                    }
                }
                exit_reason::PSCI => match exit.gprs[0] {
                    psci::SYSTEM_OFF => return Ok(VmExit::SystemOff),
                    psci::SYSTEM_RESET => return Ok(VmExit::Reset),
                    psci::CPU_OFF => {
                        self.rec.runnable.store(false, Ordering::Release);
                        return Ok(VmExit::Halt);
                    }
                    psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => return Ok(VmExit::Halt),
                    f @ (psci::CPU_ON_32
                    | psci::CPU_ON_64
                    | psci::AFFINITY_INFO_32
                    | psci::AFFINITY_INFO_64) => {
                        let mut target = exit.gprs[1];
                        if f == psci::CPU_ON_32 || f == psci::AFFINITY_INFO_32 {
                            target &= 0xFFFF_FFFF;
                        }
                        let handle = self
                            .vm
                            .lock()
                            .recs
                            .iter()
                            .find(|r| r.mpidr == target)
                            .cloned();
                        let Some((t, tg)) = handle.and_then(|t| t.granules().map(|g| (t, g)))
                        else {
                            return Ok(Self::fault(
                                format!("PSCI call for unknown MPIDR {target:#x}"),
                                exit.gprs[0],
                            ));
                        };
                        self.vm.client().psci_complete(g.pa, tg.pa, psci::SUCCESS)?;
                        if matches!(f, psci::CPU_ON_32 | psci::CPU_ON_64) {
                            t.runnable.store(true, Ordering::Release);
                        }
                    }
                    _ => {}
                },
                exit_reason::RIPAS_CHANGE => {
                    let to_ram = exit.ripas_value == Ripas::Ram as u8;
                    self.conversion = Some((exit.ripas_base, exit.ripas_top, to_ram));
                    return Ok(VmExit::ConvertMemory {
                        gpa: exit.ripas_base,
                        size: exit.ripas_top.saturating_sub(exit.ripas_base),
                        to_private: exit.ripas_value == Ripas::Ram as u8,
                    });
                }
                exit_reason::HOST_CALL => {
                    self.saved_gprs = exit.gprs;
                    let mut args = [0u64; 6];
                    args.copy_from_slice(&exit.gprs[..6]);
                    return Ok(VmExit::HostCall {
                        nr: u64::from(exit.imm),
                        args,
                    });
                }
                other => {
                    return Ok(Self::fault(
                        format!("REC exit reason {other} (SError or unknown)"),
                        exit.esr,
                    ))
                }
            }
        }
    }

    fn exit_detail(&self) -> Option<ExitDetail> {
        self.last.map(|l| l.detail(self.top))
    }
}
