//! The CoVE host flow: [`CoveBackend`] implements cvm-core's [`Backend`] over a [`Covh`] TSM,
//! following the Linux "RISC-V CoVE support" RFC (spec/cove.md §4.3, §6).
//!
//! * **Init** (RFC 07/48 `kvm_riscv_cove_vm_init`): convert the 16 KiB page directory, the
//!   page-table pool and the TVM state pages, then **one** fence; CREATE_TVM; ADD_PGT_PAGES.
//!   NACL shared memory is registered once per hart (RFC 07/48 requires NACL).
//! * **Memory**: ADD_MEMORY_REGION per private region; measured loads with
//!   ADD_MEASURED_PAGES page by page in GPA order (RFC 10/48); faults in private RAM are
//!   backed by ADD_ZERO_PAGES from a pool of pages converted in batches with one fence per
//!   batch (the RFC cover letter's "page pool instead of convert-per-fault"). Each private
//!   region also has the VMM's user pages behind it (an anonymous memfd, pinned): a page the
//!   guest shares (COVG SHARE, RFC 41/48) loses its confidential page and is mapped from its
//!   user page with ADD_SHARED_PAGES on the next fault, and `shared_memory()` shows it at its
//!   GPA while it is shared. Shared regions are VMM memory pinned and mapped the same way.
//! * **vCPUs**: state pages converted + fenced, CREATE_VCPU; FINALIZE_TVM with vCPU 0's entry
//!   pc and argument (a1; Salus sets a0 = hart id).
//! * **Run** (RFC 21/48, 23/48, 36/48, 41/48): the resume is written to the hart's NACL
//!   scratch area, TVM_VCPU_RUN, then the exit is read from the host `scause`/`stval` and the
//!   NACL CSR/scratch areas and mapped per the table in the crate docs.
//! * **Teardown**: DESTROY_TVM, then every page the VM converted is reclaimed (after a fence)
//!   and returned to the host allocator. Every failure path releases what it took.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cvm_core::vm_memory::{
    Bytes, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionCollection, GuestRegionMmap,
};
use cvm_core::{
    Arch, Backend, BackendInfo, Capability, Confidentiality, Content, EntropyPolicy, Error,
    ExitDetail, FeatureDef, FirmwareError, HashAlgorithm, Implementation, ManagedVm, Measure,
    Measurement, MeasurementEvent, MeasurementLog, MemoryKind, MemoryRegion, Result, Resume,
    StatsRecorder, VcpuInit, VcpuOps, Vm, VmConfig, VmExit, VmOps, VmShared,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{
    self, covg, covh, covh_name, csr, cvm_model, hsm, nacl, nacl_csr_offset, nacl_gpr_offset, reg,
    sbi_status_name, srst, SbiError, TsmInfo, TvmCreateParams, CSR_SEED,
    NACL_MODEL_INJECT_FAULT_OFFSET, NACL_SHMEM_PAGES, PAGE_SIZE,
};
use crate::backing::UserBacking;
use crate::covh::{Covh, HostMemError};
use crate::features::{self, HostIsa};
use crate::measure::{record, replay, TvmMeasurement};
use crate::model::cpu::{decode_csr, decode_htinst, trap};
use crate::model::tvm::{GPA_BITS, PGD_PAGES};
use crate::model::{ModelConfig, TsmModel};
use crate::platform::CovePlatform;

/// Page-table pages given to each TVM at creation (the RFC uses 1024; the model's
/// Sv48x4 tables need 3 pages per new 2 MiB span).
pub const PGT_POOL_PAGES: u64 = 64;
/// Pages converted per zero-page pool refill (one fence each).
pub const ZERO_POOL_BATCH: u64 = 16;
/// TVM_VCPU_RUN re-entries after host timer interrupts before `run` returns
/// `VmExit::Interrupted`.
pub const MAX_REENTRIES: u32 = 8;
/// TVM_VCPU_RUN re-entries after exits the host handles itself (forwarded ECALLs it answers,
/// HSM HART_START, page faults it backs) before `run` returns `VmExit::Interrupted`. A guest
/// looping on such exits (e.g. an endless stream of unknown SBI calls, each answered
/// NOT_SUPPORTED) would otherwise keep `run` from ever returning; KVM likewise goes back to
/// user space when a signal is pending instead of re-entering forever. Far above what a
/// well-behaved run needs between two VMM-visible exits (the pool backs 2 MiB of fresh
/// private memory with 512 faults).
pub const MAX_HANDLED_EXITS: u32 = 4096;

fn mem_err(e: HostMemError) -> Error {
    Error::backend(e)
}

/// The host's page allocator over the TSM's host RAM.
#[derive(Debug)]
struct PageAlloc {
    base: u64,
    used: Vec<bool>,
}

impl PageAlloc {
    fn new(base: u64, size: u64) -> Self {
        Self {
            base,
            used: vec![false; (size / PAGE_SIZE) as usize],
        }
    }

    /// `n` contiguous pages aligned to `align` pages.
    fn alloc(&mut self, n: u64, align: u64) -> Option<u64> {
        let n = usize::try_from(n).ok().filter(|&n| n > 0)?;
        let align = usize::try_from(align.max(1)).ok()?;
        let base_pfn = (self.base / PAGE_SIZE) as usize;
        let mut i = (align - base_pfn % align) % align;
        while i + n <= self.used.len() {
            match self.used[i..i + n].iter().position(|&u| u) {
                None => {
                    self.used[i..i + n].iter_mut().for_each(|u| *u = true);
                    return Some(self.base + i as u64 * PAGE_SIZE);
                }
                Some(p) => {
                    // The next aligned candidate past the used page.
                    let off = (align - base_pfn % align) % align;
                    let j = i + p + 1;
                    i = off + j.saturating_sub(off).div_ceil(align) * align;
                }
            }
        }
        None
    }

    fn free(&mut self, pa: u64, n: u64) {
        let Some(off) = pa.checked_sub(self.base) else {
            return;
        };
        let start = (off / PAGE_SIZE) as usize;
        for u in self.used.iter_mut().skip(start).take(n as usize) {
            *u = false;
        }
    }

    fn in_use(&self) -> usize {
        self.used.iter().filter(|&&u| u).count()
    }
}

/// The host kernel: the TSM connection, the page allocator, NACL registration and the fence
/// lock, shared by every VM of a backend.
struct HostKernel {
    covh: Arc<dyn Covh>,
    alloc: Mutex<PageAlloc>,
    nacl: Mutex<Option<Vec<u64>>>,
    harts: Vec<Mutex<()>>,
    fence: Mutex<()>,
    info: Mutex<Option<TsmInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HostKernel {
    fn new(covh: Arc<dyn Covh>) -> Self {
        let (base, size) = covh.host_ram();
        let harts = covh.harts().max(1);
        Self {
            covh,
            alloc: Mutex::new(PageAlloc::new(base, size)),
            nacl: Mutex::new(None),
            harts: (0..harts).map(|_| Mutex::new(())).collect(),
            fence: Mutex::new(()),
            info: Mutex::new(None),
        }
    }

    fn harts(&self) -> usize {
        self.harts.len()
    }

    fn call(
        &self,
        stats: &StatsRecorder,
        hart: usize,
        eid: u32,
        fid: u32,
        name: &'static str,
        args: [u64; 6],
    ) -> Result<u64> {
        stats.call(name);
        let r = self.covh.ecall(hart, eid, fid, args);
        tracing::trace!(
            call = name,
            hart,
            ?args,
            error = r.error,
            value = r.value,
            "sbi call"
        );
        if r.error == 0 {
            Ok(r.value)
        } else {
            Err(Error::Firmware(FirmwareError {
                call: name,
                code: r.error,
                status_name: sbi_status_name(r.error),
                index: 0,
            }))
        }
    }

    fn covh(&self, stats: &StatsRecorder, hart: usize, fid: u32, args: [u64; 6]) -> Result<u64> {
        self.call(stats, hart, abi::EID_COVH, fid, covh_name(fid), args)
    }

    fn alloc(&self, n: u64, align: u64) -> Result<u64> {
        lock(&self.alloc)
            .alloc(n, align)
            .ok_or_else(|| Error::Unsupported(format!("host RAM exhausted ({n} pages wanted)")))
    }

    fn free(&self, pa: u64, n: u64) {
        lock(&self.alloc).free(pa, n);
    }

    /// TSM_GET_INFO into a scratch host page (RFC 07/48: the TSM must be READY).
    fn tsm_info(&self, stats: &StatsRecorder) -> Result<TsmInfo> {
        if let Some(i) = *lock(&self.info) {
            return Ok(i);
        }
        let page = self.alloc(1, 1)?;
        let r = (|| {
            self.covh(stats, 0, covh::TSM_GET_INFO, [page, 32, 0, 0, 0, 0])?;
            let mut b = [0u8; 32];
            self.covh.host_read(page, &mut b).map_err(mem_err)?;
            TsmInfo::read_from_bytes(&b).map_err(|_| Error::Unsupported("bad TSM info".into()))
        })();
        self.free(page, 1);
        let info = r?;
        if info.tsm_state != abi::tsm_state::READY {
            return Err(Error::Unavailable {
                backend: "riscv-cove".into(),
                reason: format!("TSM state {} is not READY", info.tsm_state),
            });
        }
        *lock(&self.info) = Some(info);
        Ok(info)
    }

    /// Registers NACL shared memory on every hart once (RFC 07/48).
    fn ensure_nacl(&self, stats: &StatsRecorder) -> Result<Vec<u64>> {
        let mut g = lock(&self.nacl);
        if let Some(v) = g.as_ref() {
            return Ok(v.clone());
        }
        let mut done: Vec<u64> = Vec::new();
        let r = (|| {
            for hart in 0..self.harts() {
                let pa = self.alloc(NACL_SHMEM_PAGES, 1)?;
                done.push(pa);
                self.call(
                    stats,
                    hart,
                    abi::EID_NACL,
                    nacl::SET_SHMEM,
                    "NACL_SET_SHMEM",
                    [pa, 0, 0, 0, 0, 0],
                )?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            for (hart, pa) in done.iter().enumerate() {
                let _ = self.call(
                    stats,
                    hart,
                    abi::EID_NACL,
                    nacl::SET_SHMEM,
                    "NACL_SET_SHMEM",
                    [u64::MAX, u64::MAX, 0, 0, 0, 0],
                );
                self.free(*pa, NACL_SHMEM_PAGES);
            }
            return Err(e);
        }
        *g = Some(done.clone());
        Ok(done)
    }

    /// TSM fence: INITIATE on hart 0, LOCAL on every other hart (spec-2023 "Converting
    /// non-confidential memory"; RFC 07/48 `kvm_riscv_cove_fence` under a global lock). A
    /// fence left in progress by an earlier failure is completed first.
    fn fence(&self, stats: &StatsRecorder) -> Result<()> {
        let _g = lock(&self.fence);
        match self.covh(stats, 0, covh::TSM_INITIATE_FENCE, [0; 6]) {
            Ok(_) => {}
            Err(Error::Firmware(f)) if f.code == SbiError::AlreadyStarted.code() => {
                for h in 0..self.harts() {
                    self.covh(stats, h, covh::TSM_LOCAL_FENCE, [0; 6])?;
                }
                self.covh(stats, 0, covh::TSM_INITIATE_FENCE, [0; 6])?;
            }
            Err(e) => return Err(e),
        }
        for h in 1..self.harts() {
            self.covh(stats, h, covh::TSM_LOCAL_FENCE, [0; 6])?;
        }
        stats.add("fences", 1);
        Ok(())
    }
}

/// Everything a VM converted or allocated, for release on every path.
#[derive(Debug, Default)]
struct Owned {
    /// Pages converted and not yet reclaimed (host addresses).
    converted: BTreeSet<u64>,
    /// Converted, fenced, unassigned pages ready for ADD_ZERO/MEASURED_PAGES.
    pool: Vec<u64>,
}

/// A private region and the VMM's memory behind it (the memslot's user pages), which backs
/// the pages the guest shares.
struct PrivateRegion {
    region: MemoryRegion,
    backing: UserBacking,
    /// Host physical address of the pinned backing.
    pa: u64,
    /// The VMM's views of the runs the guest currently shares, by start address.
    views: BTreeMap<u64, Arc<GuestRegionMmap>>,
}

impl PrivateRegion {
    /// Views of the runs of `shared` inside the region, reusing unchanged ones.
    fn views_for(&self, shared: &BTreeSet<u64>) -> Result<BTreeMap<u64, Arc<GuestRegionMmap>>> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &page in shared.range(self.region.gpa..self.region.end()) {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == page => *len += PAGE_SIZE,
                _ => runs.push((page, PAGE_SIZE)),
            }
        }
        let mut out = BTreeMap::new();
        for (start, len) in runs {
            let view = match self.views.get(&start) {
                Some(v) if v.len() == len => Arc::clone(v),
                _ => self.backing.view(start, len)?,
            };
            out.insert(start, view);
        }
        Ok(out)
    }
}

struct SharedRegion {
    region: MemoryRegion,
    arc: Arc<GuestRegionMmap>,
    mem: GuestMemoryMmap,
    pa: u64,
}

struct VmInner {
    owned: Owned,
    private: Vec<PrivateRegion>,
    shared: Vec<SharedRegion>,
    /// Private guest pages mapped (zero or measured), by guest page → host page.
    private_mapped: BTreeMap<u64, u64>,
    /// Shared guest pages mapped, by guest page → host page.
    shared_mapped: BTreeMap<u64, u64>,
    /// Guest pages the TVM shared (accepted SHARE_MEMORY).
    guest_shared: BTreeSet<u64>,
    log: MeasurementLog,
    measurement: TvmMeasurement,
    boot: Option<(u64, u64)>,
    isa_applied: bool,
    destroyed: bool,
}

/// State shared by a CoVE VM and its vCPUs.
struct VmCore {
    shared: Arc<VmShared>,
    k: Arc<HostKernel>,
    guest: u64,
    vcpu_state_pages: u64,
    inner: Mutex<VmInner>,
    /// Per vCPU: [`HART_STOPPED`], [`HART_STARTING`] or [`HART_STARTED`].
    started: Vec<AtomicU8>,
}

/// A secondary vCPU the guest has not started.
const HART_STOPPED: u8 = 0;
/// The host accepted the guest's HART_START; the TSM powers the hart on when it completes the
/// starter's pending call on its next TVM_VCPU_RUN (Salus `complete_pending_ecall`).
const HART_STARTING: u8 = 1;
/// Runnable in the TSM.
const HART_STARTED: u8 = 2;

/// The [`VmOps`] of a CoVE TVM (wrap with [`ManagedVm`]; [`CoveBackend`] does).
pub struct CoveVm {
    core: Arc<VmCore>,
}

impl CoveVm {
    /// The TSM guest id (CREATE_TVM's return value).
    pub fn guest_id(&self) -> u64 {
        self.core.guest
    }
}

impl VmCore {
    fn stats(&self) -> &StatsRecorder {
        &self.shared.stats
    }

    fn covh(&self, fid: u32, args: [u64; 6]) -> Result<u64> {
        self.k.covh(self.stats(), 0, fid, args)
    }

    fn inner(&self) -> MutexGuard<'_, VmInner> {
        lock(&self.inner)
    }

    /// Converts `n` pages at `pa` (already allocated) without fencing; records them.
    fn convert(&self, owned: &mut Owned, pa: u64, n: u64) -> Result<()> {
        self.covh(covh::TSM_CONVERT_PAGES, [pa, n, 0, 0, 0, 0])?;
        for p in 0..n {
            owned.converted.insert(pa + p * PAGE_SIZE);
        }
        self.stats().add("pages_converted", n);
        Ok(())
    }

    /// Reclaims and frees converted pages (fencing first so no page is left Converting).
    fn release(&self, owned: &mut Owned, pages: &[u64]) {
        if pages.is_empty() {
            return;
        }
        if let Err(e) = self.k.fence(self.stats()) {
            tracing::warn!(vm = self.shared.id, error = %e, "fence before reclaim failed; retrying");
            let _ = self.k.fence(self.stats());
        }
        for &p in pages {
            let mut r = self.covh(covh::TSM_RECLAIM_PAGES, [p, 1, 0, 0, 0, 0]);
            if r.is_err() {
                r = self.covh(covh::TSM_RECLAIM_PAGES, [p, 1, 0, 0, 0, 0]);
            }
            match r {
                Ok(_) => {
                    owned.converted.remove(&p);
                    self.k.free(p, 1);
                    self.stats().add("pages_reclaimed", 1);
                }
                Err(e) => {
                    tracing::warn!(vm = self.shared.id, pa = p, error = %e, "page not reclaimed")
                }
            }
        }
    }

    /// One converted, fenced page from the pool, refilling it with a batch (one fence).
    fn pool_page(&self, owned: &mut Owned) -> Result<u64> {
        if let Some(p) = owned.pool.pop() {
            return Ok(p);
        }
        let (pa, n) = match self.k.alloc(ZERO_POOL_BATCH, 1) {
            Ok(pa) => (pa, ZERO_POOL_BATCH),
            Err(_) => (self.k.alloc(1, 1)?, 1),
        };
        if let Err(e) = self.convert(owned, pa, n) {
            self.k.free(pa, n);
            return Err(e);
        }
        let pages: Vec<u64> = (0..n).map(|i| pa + i * PAGE_SIZE).collect();
        if let Err(e) = self.k.fence(self.stats()) {
            self.release(owned, &pages);
            return Err(e);
        }
        owned.pool.extend(pages.iter().rev());
        owned
            .pool
            .pop()
            .ok_or_else(|| Error::Unsupported("empty page pool".into()))
    }

    /// Backs a private guest page with a zero page (RFC 20/48, from the pool).
    fn zero_page(&self, inner: &mut VmInner, gpa: u64) -> Result<()> {
        let pa = self.pool_page(&mut inner.owned)?;
        match self.covh(covh::TVM_ADD_ZERO_PAGES, [self.guest, pa, 0, 1, gpa, 0]) {
            Ok(_) => {
                inner.private_mapped.insert(gpa, pa);
                self.stats().add("zero_pages", 1);
                Ok(())
            }
            Err(e) => {
                inner.owned.pool.push(pa);
                Err(e)
            }
        }
    }

    /// The VMM page that backs shared guest page `gpa`: the user page of a private region
    /// (RFC 41/48: the pinned user page) or the pinned page of a VMM shared region.
    fn shared_backing(inner: &VmInner, gpa: u64) -> Option<u64> {
        if let Some(p) = inner
            .private
            .iter()
            .find(|p| p.region.contains(gpa, PAGE_SIZE))
        {
            return Some(p.pa + (gpa - p.region.gpa));
        }
        inner
            .shared
            .iter()
            .find(|s| s.region.contains(gpa, PAGE_SIZE))
            .map(|s| s.pa + (gpa - s.region.gpa))
    }

    /// Maps shared guest page `gpa` to VMM page `pa` (TVM_ADD_SHARED_PAGES, RFC 41/48 "later
    /// ADD_SHARED_PAGES on fault").
    fn shared_page(&self, inner: &mut VmInner, gpa: u64, pa: u64) -> Result<()> {
        self.covh(covh::TVM_ADD_SHARED_PAGES, [self.guest, pa, 0, 1, gpa, 0])?;
        inner.shared_mapped.insert(gpa, pa);
        self.stats().add("shared_pages_mapped", 1);
        Ok(())
    }

    /// INVALIDATE + TVM fence + REMOVE of `[gpa, gpa + len)` (spec/cove.md §2.3), then
    /// release what was mapped there: private pages are reclaimed; shared pages are VMM
    /// memory and stay the VMM's.
    fn unmap_range(&self, inner: &mut VmInner, gpa: u64, len: u64) -> Result<()> {
        let end = gpa + len;
        let private: Vec<(u64, u64)> = inner
            .private_mapped
            .range(gpa..end)
            .map(|(g, p)| (*g, *p))
            .collect();
        let shared: Vec<u64> = inner
            .shared_mapped
            .range(gpa..end)
            .map(|(g, _)| *g)
            .collect();
        if private.is_empty() && shared.is_empty() {
            return Ok(());
        }
        self.covh(covh::TVM_INVALIDATE_PAGES, [self.guest, gpa, len, 0, 0, 0])?;
        let removed = self
            .covh(covh::TVM_INITIATE_FENCE, [self.guest, 0, 0, 0, 0, 0])
            .and_then(|_| self.covh(covh::TVM_REMOVE_PAGES, [self.guest, gpa, len, 0, 0, 0]));
        if let Err(e) = removed {
            // Roll back the invalidation (RFC 41/48: on error VALIDATE).
            let _ = self.covh(covh::TVM_VALIDATE_PAGES, [self.guest, gpa, len, 0, 0, 0]);
            return Err(e);
        }
        for (g, _) in &private {
            inner.private_mapped.remove(g);
        }
        let pages: Vec<u64> = private.iter().map(|(_, p)| *p).collect();
        self.release(&mut inner.owned, &pages);
        for g in shared {
            inner.shared_mapped.remove(&g);
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        let mut inner = self.inner();
        if inner.destroyed {
            return Ok(());
        }
        // DESTROY_TVM returns every TVM page to the host, still converted.
        let mut r = self.covh(covh::DESTROY_TVM, [self.guest, 0, 0, 0, 0, 0]);
        if r.is_err() {
            r = self.covh(covh::DESTROY_TVM, [self.guest, 0, 0, 0, 0, 0]);
        }
        r?;
        inner.destroyed = true;
        let pages: Vec<u64> = inner.owned.converted.iter().copied().collect();
        inner.owned.pool.clear();
        self.release(&mut inner.owned, &pages);
        for s in inner.shared.drain(..) {
            let _ = self.k.covh.unpin_user_memory(s.pa);
        }
        for p in inner.private.drain(..) {
            let _ = self.k.covh.unpin_user_memory(p.pa);
        }
        inner.private_mapped.clear();
        inner.shared_mapped.clear();
        inner.guest_shared.clear();
        if !inner.owned.converted.is_empty() {
            return Err(Error::Unsupported(format!(
                "{} page(s) could not be reclaimed",
                inner.owned.converted.len()
            )));
        }
        Ok(())
    }
}

impl VmOps for CoveVm {
    fn add_memory(&self, region: &MemoryRegion) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        match region.kind {
            MemoryKind::Private => {
                // The memslot's user pages: pinned now (the RFC pins each when the guest
                // shares it; the TSM sees the same pages either way) and unpinned when the
                // region or the TVM goes.
                let backing = UserBacking::new(region.gpa, region.size)?;
                let pa =
                    c.k.covh
                        .pin_user_memory(&backing.whole()?, region.gpa, region.size)
                        .map_err(mem_err)?;
                if let Err(e) = c.covh(
                    covh::TVM_ADD_MEMORY_REGION,
                    [c.guest, region.gpa, region.size, 0, 0, 0],
                ) {
                    let _ = c.k.covh.unpin_user_memory(pa);
                    return Err(e);
                }
                inner.private.push(PrivateRegion {
                    region: *region,
                    backing,
                    pa,
                    views: BTreeMap::new(),
                });
            }
            MemoryKind::Shared => {
                let arc = Arc::new(
                    GuestRegionMmap::from_range(
                        GuestAddress(region.gpa),
                        region.size as usize,
                        None,
                    )
                    .map_err(|e| Error::Unsupported(format!("shared memory: {e}")))?,
                );
                let mem = GuestRegionCollection::from_arc_regions(vec![Arc::clone(&arc)])
                    .map_err(|e| Error::Unsupported(format!("shared memory: {e}")))?;
                let pa =
                    c.k.covh
                        .pin_user_memory(&mem, region.gpa, region.size)
                        .map_err(mem_err)?;
                inner.shared.push(SharedRegion {
                    region: *region,
                    arc,
                    mem,
                    pa,
                });
                inner.shared.sort_by_key(|s| s.region.gpa);
            }
        }
        Ok(())
    }

    fn remove_memory(&self, region: &MemoryRegion) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        match region.kind {
            MemoryKind::Private => {
                if c.shared.lifecycle.state() != cvm_core::LaunchState::Finalized {
                    return Err(Error::Unsupported(
                        "CoVE cannot remove confidential memory before finalize (no COVH call \
                         does it); destroy the TVM instead"
                            .into(),
                    ));
                }
                c.unmap_range(&mut inner, region.gpa, region.size)?;
                let end = region.end();
                inner.guest_shared.retain(|&p| p < region.gpa || p >= end);
                if let Some(i) = inner
                    .private
                    .iter()
                    .position(|p| p.region.gpa == region.gpa)
                {
                    let p = inner.private.remove(i);
                    c.k.covh.unpin_user_memory(p.pa).map_err(mem_err)?;
                }
            }
            MemoryKind::Shared => {
                if c.shared.lifecycle.state() == cvm_core::LaunchState::Finalized {
                    c.unmap_range(&mut inner, region.gpa, region.size)?;
                }
                if let Some(i) = inner.shared.iter().position(|s| s.region.gpa == region.gpa) {
                    let s = inner.shared.remove(i);
                    c.k.covh.unpin_user_memory(s.pa).map_err(mem_err)?;
                }
            }
        }
        Ok(())
    }

    /// The VMM's shared regions plus, at their guest addresses, the pages of private regions
    /// the guest currently shares (their user pages, which the TVM maps with
    /// TVM_ADD_SHARED_PAGES): guest and VMM read and write the same bytes there.
    fn shared_memory(&self) -> GuestMemoryMmap {
        let inner = self.core.inner();
        let mut regions: Vec<Arc<GuestRegionMmap>> = inner
            .shared
            .iter()
            .map(|s| Arc::clone(&s.arc))
            .chain(inner.private.iter().flat_map(|p| p.views.values().cloned()))
            .collect();
        regions.sort_by_key(|r| r.start_addr());
        GuestRegionCollection::from_arc_regions(regions).unwrap_or_default()
    }

    fn load(&self, region: &MemoryRegion, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        if region.kind == MemoryKind::Shared {
            let s = inner
                .shared
                .iter()
                .find(|s| s.region.gpa == region.gpa)
                .ok_or(Error::NotMapped {
                    gpa,
                    len: bytes.len() as u64,
                    what: "a shared region",
                })?;
            return s
                .mem
                .write_slice(bytes, GuestAddress(gpa))
                .map_err(|e| Error::Unsupported(format!("shared memory write: {e}")));
        }
        if measure == Measure::No {
            return Err(Error::Unsupported(
                "CoVE measures every page added before finalize (TVM_ADD_MEASURED_PAGES); \
                 unmeasured private loads do not exist"
                    .into(),
            ));
        }
        // Per 4 KiB page in GPA order (RFC 10/48): a host source page, a converted
        // destination page from the pool, ADD_MEASURED_PAGES.
        let src = c.k.alloc(1, 1)?;
        let result = (|| {
            for (i, chunk) in bytes.chunks(PAGE_SIZE as usize).enumerate() {
                let g = gpa + i as u64 * PAGE_SIZE;
                let mut page = vec![0u8; PAGE_SIZE as usize];
                page[..chunk.len()].copy_from_slice(chunk);
                c.k.covh.host_write(src, &page).map_err(mem_err)?;
                let dest = c.pool_page(&mut inner.owned)?;
                if let Err(e) = c.covh(covh::TVM_ADD_MEASURED_PAGES, [c.guest, src, dest, 0, 1, g])
                {
                    // Sean Christopherson's RFC 10/48 review: a converted page must go back
                    // when ADD_MEASURED_PAGES fails — it stays in the pool for reuse and is
                    // reclaimed at teardown.
                    inner.owned.pool.push(dest);
                    return Err(e);
                }
                inner.private_mapped.insert(g, dest);
                let VmInner {
                    log, measurement, ..
                } = &mut *inner;
                record(
                    log,
                    measurement,
                    MeasurementEvent::MeasuredPages {
                        gpa: g,
                        content: Content::bytes(page),
                    },
                )
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            Ok(())
        })();
        c.k.free(src, 1);
        result
    }

    fn create_vcpu(&self, id: u32, init: &VcpuInit) -> Result<Box<dyn VcpuOps>> {
        let c = &self.core;
        let mut inner = c.inner();
        let n = c.vcpu_state_pages;
        let pa = c.k.alloc(n, 1)?;
        if let Err(e) = c.convert(&mut inner.owned, pa, n) {
            c.k.free(pa, n);
            return Err(e);
        }
        let pages: Vec<u64> = (0..n).map(|i| pa + i * PAGE_SIZE).collect();
        let r =
            c.k.fence(c.stats())
                .and_then(|_| c.covh(covh::TVM_CREATE_VCPU, [c.guest, u64::from(id), pa, 0, 0, 0]));
        if let Err(e) = r {
            c.release(&mut inner.owned, &pages);
            return Err(e);
        }
        if id == 0 {
            // Salus: boot vCPU a0 = hart id, a1 = entry_arg (VcpuInit.args[1]).
            inner.boot = Some((init.entry, init.args.get(1).copied().unwrap_or(0)));
        }
        if let Some(s) = c.started.get(id as usize) {
            s.store(
                if id == 0 { HART_STARTED } else { HART_STOPPED },
                Ordering::Release,
            );
        }
        Ok(Box::new(CoveVcpu {
            core: Arc::clone(&self.core),
            id,
            hart: id as usize % c.k.harts(),
            last_htinst: 0,
            terminated: false,
            starting: None,
            deferred: None,
            last: LastExit::None,
        }))
    }

    fn finalize(&self) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        let (entry, arg) = inner
            .boot
            .ok_or_else(|| Error::InvalidArgument("finalize needs vCPU 0".into()))?;
        c.covh(covh::FINALIZE_TVM, [c.guest, entry, arg, 0, 0, 0])?;
        let VmInner {
            log, measurement, ..
        } = &mut *inner;
        record(
            log,
            measurement,
            MeasurementEvent::Finalize {
                entry_pc: entry,
                entry_arg: arg,
            },
        )
        .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// The host's own replay of what it measured (spec/cove.md §3.1: "the measurement process
    /// is a state machine that must be faithfully reproduced by the VMM"): `PCR0`..`PCR3` and
    /// `TCI` only. COVH has no call that reads a TVM's registers, so the guest-extended
    /// runtime PCRs 17..20 are unknown to the host and left out (see the crate docs).
    fn measurement(&self) -> Result<Measurement> {
        let log = self.core.inner().log.clone();
        replay(&log)
            .map(|m| m.to_host_measurement())
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    fn measurement_log(&self) -> MeasurementLog {
        self.core.inner().log.clone()
    }

    fn convert(&self, _gpa: u64, _size: u64, _to: MemoryKind) -> Result<()> {
        Err(Error::Unsupported(
            "CoVE conversions are guest-initiated (COVG SHARE/UNSHARE_MEMORY)".into(),
        ))
    }

    fn check_feature(&self, def: &FeatureDef, current: u64, value: u64) -> Result<()> {
        features::check(def, current, value)
    }

    fn destroy(&self) -> Result<()> {
        self.core.destroy()
    }

    fn guest_platform(&self) -> Box<dyn cvm_core::guest::GuestPlatform + Send + Sync> {
        Box::new(CovePlatform)
    }
}

/// A CoVE vCPU pinned to a host hart.
struct CoveVcpu {
    core: Arc<VmCore>,
    id: u32,
    hart: usize,
    last_htinst: u64,
    terminated: bool,
    /// A hart whose HART_START this vCPU's next successful TVM_VCPU_RUN completes.
    starting: Option<usize>,
    /// The scratch a0/a1 the host wrote to answer an exit it handled itself, when `run`
    /// returned (`MAX_HANDLED_EXITS`) before re-entering: written again before the next
    /// TVM_VCPU_RUN, since another vCPU on the same hart may have used the NACL scratch
    /// area in between.
    deferred: Option<(u64, u64)>,
    /// Raw fields of the last exit, formatted only by [`VcpuOps::exit_detail`].
    last: LastExit,
}

/// What the host saw behind the last exit it returned, kept raw (the run path only copies).
#[derive(Debug, Clone, Copy)]
enum LastExit {
    /// Not run yet.
    None,
    /// A secondary vCPU the guest has not started: no TVM_VCPU_RUN was made.
    NotStarted,
    /// The last TVM_VCPU_RUN: its return value and what it left in the host CSRs and NACL.
    Tvm { ret: u64, exit: NaclExit },
}

/// The name of a TVM exit's scause (Privileged spec, `scause` values; Hypervisor extension
/// for 20–23).
fn scause_name(scause: u64) -> &'static str {
    if scause & trap::CAUSE_INTERRUPT != 0 {
        return match scause & !trap::CAUSE_INTERRUPT {
            1 => "supervisor software interrupt",
            5 => "supervisor timer interrupt",
            9 => "supervisor external interrupt",
            12 => "supervisor guest external interrupt",
            _ => "interrupt",
        };
    }
    match scause {
        trap::CAUSE_FETCH_ACCESS => "instruction access fault",
        trap::CAUSE_ILLEGAL_INSTRUCTION => "illegal instruction",
        trap::CAUSE_BREAKPOINT => "breakpoint",
        trap::CAUSE_LOAD_MISALIGNED => "load address misaligned",
        trap::CAUSE_LOAD_ACCESS => "load access fault",
        trap::CAUSE_STORE_MISALIGNED => "store address misaligned",
        trap::CAUSE_STORE_ACCESS => "store access fault",
        trap::CAUSE_ECALL_VU => "ecall from VU-mode",
        trap::CAUSE_ECALL_VS => "forwarded ecall",
        trap::CAUSE_FETCH_GUEST_PAGE_FAULT => "instruction guest-page fault",
        trap::CAUSE_LOAD_GUEST_PAGE_FAULT => "load guest-page fault",
        trap::CAUSE_VIRTUAL_INSTRUCTION => "virtual instruction",
        trap::CAUSE_STORE_GUEST_PAGE_FAULT => "store guest-page fault",
        _ => "exception",
    }
}

/// `a0 (0x50)`: a NACL scratch GPR slot by ABI name and byte offset (spec/cove.md §5).
fn scratch_slot(r: u8) -> String {
    let name = match r {
        reg::A0..=reg::A7 => format!("a{}", r - reg::A0),
        _ => format!("x{r}"),
    };
    format!("{name} ({:#x})", nacl_gpr_offset(r))
}

impl LastExit {
    fn detail(&self) -> Option<ExitDetail> {
        let (ret, e) = match *self {
            LastExit::None => return None,
            LastExit::NotStarted => {
                return Some(ExitDetail {
                    reason: "not started: no TVM_VCPU_RUN before the guest's HSM HART_START".into(),
                    registers: Vec::new(),
                    channel: "none".into(),
                })
            }
            LastExit::Tvm { ret, exit } => (ret, exit),
        };
        let mut reason = if e.scause & trap::CAUSE_INTERRUPT != 0 {
            format!("scause={:#x} ({})", e.scause, scause_name(e.scause))
        } else {
            format!("scause={} ({})", e.scause, scause_name(e.scause))
        };
        if ret != 0 {
            reason.push_str(&format!("; TVM_VCPU_RUN returned {ret} (vCPU terminated)"));
        }
        let mut registers: Vec<(String, u64)> = vec![
            ("scause".into(), e.scause),
            ("stval".into(), e.stval),
            ("htval".into(), e.htval),
            ("htinst".into(), e.htinst),
        ];
        let channel = match e.scause {
            trap::CAUSE_ECALL_VS => {
                registers.push(("a6".into(), e.gprs[usize::from(reg::A6 - reg::A0)]));
                registers.push(("a7".into(), e.gprs[usize::from(reg::A7 - reg::A0)]));
                "NACL scratch a0..a7".to_owned()
            }
            trap::CAUSE_LOAD_GUEST_PAGE_FAULT | trap::CAUSE_STORE_GUEST_PAGE_FAULT
                if e.htinst != 0 =>
            {
                match decode_htinst(e.htinst) {
                    Some(acc) => format!("NACL scratch {}", scratch_slot(acc.reg)),
                    None => "none (undecodable htinst)".to_owned(),
                }
            }
            trap::CAUSE_VIRTUAL_INSTRUCTION
                if decode_csr(e.stval as u32).is_some_and(|a| a.csr == CSR_SEED) =>
            {
                format!(
                    "NACL scratch {}, {}",
                    scratch_slot(reg::A0),
                    scratch_slot(reg::A1)
                )
            }
            _ => "none".to_owned(),
        };
        Some(ExitDetail {
            reason,
            registers,
            channel,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct NaclExit {
    scause: u64,
    stval: u64,
    htval: u64,
    htinst: u64,
    gprs: [u64; 8],
}

impl CoveVcpu {
    fn nacl_pa(&self) -> Result<u64> {
        lock(&self.core.k.nacl)
            .as_ref()
            .and_then(|v| v.get(self.hart).copied())
            .ok_or_else(|| Error::Unsupported("NACL shared memory not registered".into()))
    }

    fn put(&self, off: usize, v: u64) -> Result<()> {
        let pa = self.nacl_pa()? + off as u64;
        self.core
            .k
            .covh
            .host_write(pa, &v.to_le_bytes())
            .map_err(mem_err)
    }

    fn get(&self, off: usize) -> Result<u64> {
        let pa = self.nacl_pa()? + off as u64;
        let mut b = [0u8; 8];
        self.core.k.covh.host_read(pa, &mut b).map_err(mem_err)?;
        Ok(u64::from_le_bytes(b))
    }

    fn put_gpr(&self, r: u8, v: u64) -> Result<()> {
        self.put(nacl_gpr_offset(r), v)
    }

    fn read_exit(&self) -> Result<NaclExit> {
        let t = self.core.k.covh.trap_csrs(self.hart);
        let mut gprs = [0u64; 8];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = self.get(nacl_gpr_offset(reg::A0 + i as u8))?;
        }
        Ok(NaclExit {
            scause: t.scause,
            stval: t.stval,
            htval: self.get(nacl_csr_offset(csr::HTVAL))?,
            htinst: self.get(nacl_csr_offset(csr::HTINST))?,
            gprs,
        })
    }

    /// Applies cvm's resume to the NACL scratch area (RFC 21/48, 36/48).
    fn apply_resume(&mut self, resume: Resume, pending: Option<&VmExit>) -> Result<()> {
        match (pending, resume) {
            (Some(VmExit::Mmio { write: None, .. }), Resume::MmioRead(v)) => {
                // The value goes to the scratch GPR htinst names (a0 for Salus).
                let r = decode_htinst(self.last_htinst)
                    .map(|a| a.reg)
                    .unwrap_or(reg::A0);
                self.put_gpr(r, v)
            }
            (Some(VmExit::Mmio { .. } | VmExit::SysReg { .. }), Resume::InjectAbort) => {
                self.put(NACL_MODEL_INJECT_FAULT_OFFSET, 1)
            }
            (Some(VmExit::HostCall { .. }), Resume::HostCall([r0, r1])) => {
                self.put_gpr(reg::A0, r0)?;
                self.put_gpr(reg::A1, r1)
            }
            (Some(VmExit::SysReg { .. }), Resume::SysReg(v)) => self.put_gpr(reg::A0, v),
            (
                Some(&VmExit::ConvertMemory {
                    gpa,
                    size,
                    to_private,
                }),
                Resume::Conversion(accept),
            ) => {
                let a0 = if accept {
                    match self.convert_pages(gpa, size, to_private) {
                        Ok(()) => 0,
                        Err(e) => {
                            tracing::warn!(error = %e, "conversion failed; rejecting");
                            match e {
                                Error::NotMapped { .. } | Error::InvalidArgument(_) => {
                                    SbiError::InvalidAddress.code() as u64
                                }
                                _ => SbiError::Failed.code() as u64,
                            }
                        }
                    }
                } else {
                    SbiError::Denied.code() as u64
                };
                self.put_gpr(reg::A0, a0)
            }
            _ => Ok(()),
        }
    }

    /// Host side of an accepted SHARE/UNSHARE (RFC 41/48 `vcpu_sbi_covg.c`): pages mapped in
    /// the range are invalidated, fenced, removed and released (confidential pages reclaimed,
    /// shared mappings dropped — the user pages stay the VMM's); the next fault maps the new
    /// kind: a zero page from the pool, or the user page with TVM_ADD_SHARED_PAGES.
    ///
    /// Every page must lie in the VM's memory (the RFC looks up the memslot of each page):
    /// SHARE in a private region (its user pages) or a VMM shared region; UNSHARE only in a
    /// private region (a shared region has no confidential memory to return to). The VMM's
    /// views ([`VmOps::shared_memory`]) are made before anything changes, so a failure leaves
    /// the VM as it was.
    fn convert_pages(&self, gpa: u64, size: u64, to_private: bool) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        let end = gpa
            .checked_add(size)
            .filter(|_| size > 0 && gpa % PAGE_SIZE == 0 && size % PAGE_SIZE == 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "conversion of {gpa:#x}+{size:#x} is not page aligned"
                ))
            })?;
        let mut next = inner.guest_shared.clone();
        for p in (gpa..end).step_by(PAGE_SIZE as usize) {
            let in_private = inner
                .private
                .iter()
                .any(|r| r.region.contains(p, PAGE_SIZE));
            let in_shared = inner.shared.iter().any(|s| s.region.contains(p, PAGE_SIZE));
            if !(in_private || (!to_private && in_shared)) {
                return Err(Error::NotMapped {
                    gpa: p,
                    len: PAGE_SIZE,
                    what: if to_private {
                        "a private region (UNSHARE)"
                    } else {
                        "a memory region (SHARE)"
                    },
                });
            }
            if to_private {
                next.remove(&p);
            } else {
                next.insert(p);
            }
        }
        let views = inner
            .private
            .iter()
            .enumerate()
            .filter(|(_, r)| r.region.gpa < end && gpa < r.region.end())
            .map(|(i, r)| r.views_for(&next).map(|v| (i, v)))
            .collect::<Result<Vec<_>>>()?;
        c.unmap_range(&mut inner, gpa, size)?;
        inner.guest_shared = next;
        for (i, v) in views {
            if let Some(r) = inner.private.get_mut(i) {
                r.views = v;
            }
        }
        Ok(())
    }

    /// Applies the VM's ISA features to the TVM before its first run (model TVM_SET_ISA).
    fn apply_isa(&self) -> Result<()> {
        let c = &self.core;
        let mut inner = c.inner();
        if inner.isa_applied {
            return Ok(());
        }
        let mask = features::hidden_mask(&c.shared.features.snapshot());
        let forward = u64::from(c.shared.config.entropy == EntropyPolicy::ForwardToVmm);
        c.k.call(
            c.stats(),
            0,
            abi::EID_CVM_MODEL,
            cvm_model::TVM_SET_ISA,
            "CVM_MODEL_TVM_SET_ISA",
            [c.guest, mask as u64, (mask >> 64) as u64, forward, 0, 0],
        )?;
        inner.isa_applied = true;
        Ok(())
    }

    /// A guest page fault outside MMIO: back the page (RFC 20/48) or report a fault.
    fn handle_fault(&self, e: &NaclExit) -> Result<Option<VmExit>> {
        let c = &self.core;
        let gpa = (e.htval << 2) | (e.stval & 3);
        let page = gpa & !(PAGE_SIZE - 1);
        let mut inner = c.inner();
        let in_private = inner
            .private
            .iter()
            .any(|r| r.region.contains(page, PAGE_SIZE));
        let in_shared = inner
            .shared
            .iter()
            .any(|s| s.region.contains(page, PAGE_SIZE));
        if inner.guest_shared.contains(&page) || (in_shared && !in_private) {
            if inner.shared_mapped.contains_key(&page) {
                return Ok(None);
            }
            if let Some(pa) = VmCore::shared_backing(&inner, page) {
                c.shared_page(&mut inner, page, pa)?;
                return Ok(None);
            }
        }
        if in_private {
            if inner.private_mapped.contains_key(&page) {
                return Ok(None);
            }
            c.zero_page(&mut inner, page)?;
            return Ok(None);
        }
        Ok(Some(VmExit::Fault {
            pc: 0,
            syndrome: e.scause,
            insn: None,
            reason: format!("guest page fault at {gpa:#x} outside the VM's memory"),
        }))
    }

    fn run_inner(&mut self, resume: Resume, pending: Option<&VmExit>) -> Result<VmExit> {
        let c = Arc::clone(&self.core);
        let started = c
            .started
            .get(self.id as usize)
            .is_some_and(|s| s.load(Ordering::Acquire) == HART_STARTED);
        if !started {
            // A secondary waits for the guest's HSM HART_START (cvm: it halts).
            self.last = LastExit::NotStarted;
            return Ok(VmExit::Halt);
        }
        if self.terminated {
            return Err(Error::InvalidArgument(format!(
                "vCPU {} has terminated",
                self.id
            )));
        }
        self.apply_isa()?;
        let _hart = lock(&c.k.harts[self.hart]);
        self.apply_resume(resume, pending)?;
        if let Some((a0, a1)) = self.deferred {
            self.put_gpr(reg::A0, a0)?;
            self.put_gpr(reg::A1, a1)?;
            self.deferred = None;
        }
        let mut reentries = 0;
        let mut handled = 0u32;
        // The scratch a0/a1 written to answer the last exit handled here, if any.
        let mut answered: Option<(u64, u64)> = None;
        loop {
            if handled >= MAX_HANDLED_EXITS {
                c.stats().add("handled_exit_limit", 1);
                self.deferred = answered;
                return Ok(VmExit::Interrupted);
            }
            handled += 1;
            answered = None;
            let ran = c.k.covh(
                c.stats(),
                self.hart,
                covh::TVM_VCPU_RUN,
                [c.guest, u64::from(self.id), 0, 0, 0, 0],
            );
            if let Some(t) = self.starting.filter(|_| ran.is_ok()) {
                // The TSM has completed the HART_START (or refused it to the guest); from
                // now on the target's own TVM_VCPU_RUN is valid.
                self.starting = None;
                if let Some(s) = c.started.get(t) {
                    let _ = s.compare_exchange(
                        HART_STARTING,
                        HART_STARTED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
            }
            let ret = ran?;
            let e = self.read_exit()?;
            self.last = LastExit::Tvm { ret, exit: e };
            let a = |r: u8| e.gprs[usize::from(r - reg::A0)];
            if ret != 0 {
                self.terminated = true;
                if e.scause == trap::CAUSE_ECALL_VS && a(reg::A7) == u64::from(abi::EID_SRST) {
                    return Ok(match a(reg::A0) {
                        srst::TYPE_SHUTDOWN => VmExit::SystemOff,
                        _ => VmExit::Reset,
                    });
                }
                return Ok(VmExit::Fault {
                    pc: 0,
                    syndrome: e.scause,
                    insn: None,
                    reason: format!(
                        "TVM vCPU {} terminated by the TSM (scause {:#x})",
                        self.id, e.scause
                    ),
                });
            }
            if e.scause & trap::CAUSE_INTERRUPT != 0 {
                c.stats().add("host_interrupts", 1);
                reentries += 1;
                if reentries > MAX_REENTRIES {
                    return Ok(VmExit::Interrupted);
                }
                continue;
            }
            match e.scause {
                trap::CAUSE_ECALL_VS => {
                    let eid = a(reg::A7);
                    let fid = a(reg::A6);
                    if eid == u64::from(abi::EID_HSM) && fid == u64::from(hsm::HART_START) {
                        // RFC 21/48: the host handles HSM; the TSM masked pc/opaque.
                        let target = a(reg::A0);
                        let ok = c.started.get(target as usize).is_some_and(|s| {
                            s.compare_exchange(
                                HART_STOPPED,
                                HART_STARTING,
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                        });
                        let code = if ok {
                            self.starting = usize::try_from(target).ok();
                            0
                        } else {
                            SbiError::InvalidParam.code() as u64
                        };
                        self.put_gpr(reg::A0, code)?;
                        self.put_gpr(reg::A1, 0)?;
                        answered = Some((code, 0));
                        continue;
                    }
                    if eid == u64::from(abi::EID_HSM) && fid == u64::from(hsm::HART_STOP) {
                        // The TSM powered the hart off; the host stops scheduling it until
                        // the guest starts it again (RFC 21/48: the host handles HSM).
                        if let Some(s) = c.started.get(self.id as usize) {
                            s.store(HART_STOPPED, Ordering::Release);
                        }
                        return Ok(VmExit::Halt);
                    }
                    if eid == u64::from(abi::EID_COVG)
                        && (fid == u64::from(covg::SHARE_MEMORY)
                            || fid == u64::from(covg::UNSHARE_MEMORY))
                    {
                        return Ok(VmExit::ConvertMemory {
                            gpa: a(reg::A0),
                            size: a(reg::A1),
                            to_private: fid == u64::from(covg::UNSHARE_MEMORY),
                        });
                    }
                    if eid == u64::from(abi::EID_CVM_HOSTCALL) {
                        return Ok(VmExit::HostCall {
                            nr: fid,
                            args: [
                                a(reg::A0),
                                a(reg::A1),
                                a(reg::A2),
                                a(reg::A0 + 3),
                                a(reg::A0 + 4),
                                a(reg::A0 + 5),
                            ],
                        });
                    }
                    // RFC 21/48: anything else forwarded → SBI_ERR_NOT_SUPPORTED.
                    let code = SbiError::NotSupported.code() as u64;
                    self.put_gpr(reg::A0, code)?;
                    self.put_gpr(reg::A1, 0)?;
                    answered = Some((code, 0));
                }
                trap::CAUSE_FETCH_GUEST_PAGE_FAULT
                | trap::CAUSE_LOAD_GUEST_PAGE_FAULT
                | trap::CAUSE_STORE_GUEST_PAGE_FAULT => {
                    if e.htinst != 0 {
                        let gpa = (e.htval << 2) | (e.stval & 3);
                        let Some(acc) = decode_htinst(e.htinst) else {
                            return Ok(VmExit::Fault {
                                pc: 0,
                                syndrome: e.scause,
                                insn: None,
                                reason: format!("undecodable htinst {:#x}", e.htinst),
                            });
                        };
                        self.last_htinst = e.htinst;
                        let write = if acc.is_store {
                            // The store value is in the scratch GPR htinst names (a0 for
                            // Salus; RFC 36/48 reads `REG_INDEX(insn, SH_RS2) * 8`).
                            let v = match acc.reg {
                                r @ reg::A0..=reg::A7 => a(r),
                                r => self.get(nacl_gpr_offset(r))?,
                            };
                            Some(cvm_core::mask_to_size(v, acc.size))
                        } else {
                            None
                        };
                        return Ok(VmExit::Mmio {
                            gpa,
                            size: acc.size,
                            write,
                        });
                    }
                    if let Some(x) = self.handle_fault(&e)? {
                        return Ok(x);
                    }
                }
                trap::CAUSE_VIRTUAL_INSTRUCTION => {
                    let insn = e.stval as u32;
                    if insn == 0x1050_0073 {
                        return Ok(VmExit::Halt);
                    }
                    match decode_csr(insn) {
                        Some(acc) if acc.csr == CSR_SEED => {
                            return Ok(VmExit::SysReg {
                                reg: u64::from(CSR_SEED),
                                write: acc.writes().then_some(e.gprs[0]),
                                write_mask: e.gprs[1],
                            });
                        }
                        _ => {
                            return Ok(VmExit::Fault {
                                pc: 0,
                                syndrome: e.scause,
                                insn: Some(insn),
                                reason: "unexpected virtual-instruction exit".into(),
                            })
                        }
                    }
                }
                other => {
                    return Ok(VmExit::Fault {
                        pc: 0,
                        syndrome: other,
                        insn: None,
                        reason: "unexpected TVM exit".into(),
                    })
                }
            }
        }
    }
}

impl VcpuOps for CoveVcpu {
    fn run(&mut self, resume: Resume, pending: Option<&VmExit>) -> Result<VmExit> {
        let exit = self.run_inner(resume, pending)?;
        tracing::debug!(vm = self.core.shared.id, vcpu = self.id, ?exit, "cove exit");
        Ok(exit)
    }

    /// `reason` = `scause=<n> (<name>)` (+ the TVM_VCPU_RUN return when the vCPU terminated);
    /// `registers` = host `scause`/`stval`, NACL `htval`/`htinst` (and `a6`/`a7` of a
    /// forwarded ecall); `channel` = the NACL scratch slots the exit's values travel through
    /// (`NACL scratch a0 (0x50)` for MMIO, `NACL scratch a0..a7` for forwarded ecalls).
    fn exit_detail(&self) -> Option<ExitDetail> {
        self.last.detail()
    }
}

/// The CoVE backend: TVMs over a [`Covh`] TSM (the in-process [`TsmModel`] by default).
pub struct CoveBackend {
    k: Arc<HostKernel>,
    model: Option<Arc<TsmModel>>,
    host_isa: HostIsa,
}

impl Default for CoveBackend {
    fn default() -> Self {
        Self::model()
    }
}

impl CoveBackend {
    /// Over the in-process TSM model with the default machine and a host with every extension.
    pub fn model() -> Self {
        Self::with_model(
            Arc::new(TsmModel::new(ModelConfig::default())),
            HostIsa::default(),
        )
    }

    /// Over a given model and host ISA.
    pub fn with_model(model: Arc<TsmModel>, host_isa: HostIsa) -> Self {
        let covh: Arc<dyn Covh> = model.clone();
        Self {
            k: Arc::new(HostKernel::new(covh)),
            model: Some(model),
            host_isa,
        }
    }

    /// Over any TSM (e.g. a failure-injecting wrapper around the model).
    pub fn new(covh: Arc<dyn Covh>, host_isa: HostIsa) -> Self {
        Self {
            k: Arc::new(HostKernel::new(covh)),
            model: None,
            host_isa,
        }
    }

    /// The model, when this backend runs over [`TsmModel`] directly.
    pub fn tsm_model(&self) -> Option<&Arc<TsmModel>> {
        self.model.as_ref()
    }

    /// Host pages allocated by this backend's host kernel (NACL memory included).
    pub fn host_pages_in_use(&self) -> usize {
        lock(&self.k.alloc).in_use()
    }

    /// Creates a TVM and returns the concrete VM type (for access to [`CoveVm::guest_id`]).
    pub fn create_cove_vm(&self, config: &VmConfig) -> Result<ManagedVm<CoveVm>> {
        if config.confidentiality != Confidentiality::RiscvCove {
            return Err(Error::Unsupported(format!(
                "the riscv-cove backend only creates CoVE TVMs, not {:?} VMs",
                config.confidentiality
            )));
        }
        if let Some(a) = config.measurement {
            if a != HashAlgorithm::Sha384 {
                return Err(Error::Unsupported(format!(
                    "CoVE (Salus) measures with sha384, not {}",
                    a.name()
                )));
            }
        }
        let addr_bits = match config.addr_bits {
            0 => GPA_BITS,
            b if b <= GPA_BITS => b,
            b => {
                return Err(Error::InvalidArgument(format!(
                    "{b} address bits requested; Sv48x4 gives {GPA_BITS}"
                )))
            }
        };
        let k = Arc::clone(&self.k);
        let vm = ManagedVm::new(
            config,
            addr_bits,
            features::feature_defs(&self.host_isa),
            |shared| {
                let stats = &shared.stats;
                let info = k.tsm_info(stats)?;
                if u64::from(config.vcpus) > info.tvm_max_vcpus {
                    return Err(Error::InvalidArgument(format!(
                        "{} vCPUs requested; the TSM allows {}",
                        config.vcpus, info.tvm_max_vcpus
                    )));
                }
                k.ensure_nacl(stats)?;
                let guest = create_tvm(&k, stats, &info)?;
                Ok(CoveVm {
                    core: Arc::new(VmCore {
                        shared: Arc::clone(&shared),
                        k: Arc::clone(&k),
                        guest: guest.guest,
                        vcpu_state_pages: info.tvm_vcpu_state_pages,
                        inner: Mutex::new(VmInner {
                            owned: guest.owned,
                            private: Vec::new(),
                            shared: Vec::new(),
                            private_mapped: BTreeMap::new(),
                            shared_mapped: BTreeMap::new(),
                            guest_shared: BTreeSet::new(),
                            log: MeasurementLog::new(HashAlgorithm::Sha384),
                            measurement: TvmMeasurement::new(),
                            boot: None,
                            isa_applied: false,
                            destroyed: false,
                        }),
                        started: (0..config.vcpus)
                            .map(|_| AtomicU8::new(HART_STOPPED))
                            .collect(),
                    }),
                })
            },
        )?;
        for name in &config.cove.disable_extensions {
            vm.set_feature(name, 0)?;
        }
        Ok(vm)
    }
}

struct CreatedTvm {
    guest: u64,
    owned: Owned,
}

/// RFC 07/48 init order: pgd + page-table pool + TVM state converted with one fence,
/// CREATE_TVM, ADD_PGT_PAGES. Releases everything on failure.
fn create_tvm(k: &HostKernel, stats: &StatsRecorder, info: &TsmInfo) -> Result<CreatedTvm> {
    let mut owned = Owned::default();
    let mut allocated: Vec<(u64, u64)> = Vec::new();
    let mut guest = None;
    let r = (|| {
        let pgd = k.alloc(PGD_PAGES, PGD_PAGES)?;
        allocated.push((pgd, PGD_PAGES));
        let pool = k.alloc(PGT_POOL_PAGES, 1)?;
        allocated.push((pool, PGT_POOL_PAGES));
        let state = k.alloc(info.tvm_state_pages.max(1), 1)?;
        allocated.push((state, info.tvm_state_pages.max(1)));
        for &(pa, n) in &allocated.clone() {
            k.covh(stats, 0, covh::TSM_CONVERT_PAGES, [pa, n, 0, 0, 0, 0])?;
            for i in 0..n {
                owned.converted.insert(pa + i * PAGE_SIZE);
            }
            stats.add("pages_converted", n);
        }
        k.fence(stats)?;
        let params_page = k.alloc(1, 1)?;
        let params = TvmCreateParams {
            tvm_page_directory_addr: pgd,
            tvm_state_addr: state,
        };
        let created = k
            .covh
            .host_write(params_page, params.as_bytes())
            .map_err(mem_err)
            .and_then(|_| {
                k.covh(
                    stats,
                    0,
                    covh::CREATE_TVM,
                    [params_page, params.as_bytes().len() as u64, 0, 0, 0, 0],
                )
            });
        k.free(params_page, 1);
        let id = created?;
        guest = Some(id);
        k.covh(
            stats,
            0,
            covh::TVM_ADD_PGT_PAGES,
            [id, pool, PGT_POOL_PAGES, 0, 0, 0],
        )?;
        Ok(id)
    })();
    match r {
        Ok(id) => Ok(CreatedTvm { guest: id, owned }),
        Err(e) => {
            if let Some(id) = guest {
                if k.covh(stats, 0, covh::DESTROY_TVM, [id, 0, 0, 0, 0, 0])
                    .is_err()
                {
                    let _ = k.covh(stats, 0, covh::DESTROY_TVM, [id, 0, 0, 0, 0, 0]);
                }
            }
            if !owned.converted.is_empty() && k.fence(stats).is_err() {
                let _ = k.fence(stats);
            }
            for &p in &owned.converted {
                if k.covh(stats, 0, covh::TSM_RECLAIM_PAGES, [p, 1, 0, 0, 0, 0])
                    .is_err()
                {
                    let _ = k.covh(stats, 0, covh::TSM_RECLAIM_PAGES, [p, 1, 0, 0, 0, 0]);
                }
            }
            for (pa, n) in allocated {
                k.free(pa, n);
            }
            Err(e)
        }
    }
}

impl Backend for CoveBackend {
    fn info(&self) -> BackendInfo {
        let cap = |name: &str, present: bool, detail: &str| Capability {
            name: name.into(),
            present,
            detail: detail.into(),
        };
        let model = self.model.is_some();
        BackendInfo {
            name: "riscv-cove".into(),
            arch: Arch::Riscv64,
            confidentiality: Confidentiality::RiscvCove,
            implementation: Implementation::Model,
            available: true,
            unavailable_reason: None,
            private_memory: true,
            conversions: true,
            measurement: vec![HashAlgorithm::Sha384],
            max_vcpus: crate::model::tvm::MAX_VCPUS as u32,
            addr_bits: GPA_BITS,
            features: features::ISA_EXTENSIONS
                .iter()
                .map(|e| e.name.to_owned())
                .collect(),
            capabilities: vec![
                cap("COVH", true, "TSM host ABI, RFC/Salus FID numbering"),
                cap(
                    "COVG",
                    true,
                    "guest ABI (MMIO regions, share/unshare, interrupts)",
                ),
                cap(
                    "COVI",
                    true,
                    "AIA interrupt injection (IMSIC files not modelled)",
                ),
                cap(
                    "ATST",
                    true,
                    "Salus attestation: capabilities, read/extend measurement",
                ),
                cap("NACL", true, "shared memory only (no SYNC_* features)"),
                cap(
                    "in-process-model",
                    model,
                    "Salus-faithful TSM model + RV64 interpreter",
                ),
                cap("host-isa", true, &self.host_isa.names().join(",")),
            ],
        }
    }

    fn create_vm(&self, config: &VmConfig) -> Result<Box<dyn Vm>> {
        Ok(Box::new(self.create_cove_vm(config)?))
    }
}
