//! A TVM inside the TSM: its state machine, guest-physical regions, G-stage mappings, vCPUs
//! and measurement, and the COVH calls that act on it (spec/cove.md §1.2, §2).
//!
//! Per-state preconditions (Salus `src/vm.rs` `as_initializing_vm()` / `as_finalized_vm()`;
//! spec/cove.md §1.2 table): ADD_MEMORY_REGION, ADD_MEASURED_PAGES and CREATE_VCPU only while
//! Initializing; ADD_PGT_PAGES and DESTROY in any state; ADD_ZERO_PAGES, ADD_SHARED_PAGES,
//! VCPU_RUN, TVM fence and INVALIDATE/VALIDATE/REMOVE only once Finalized; FINALIZE only while
//! Initializing and with vCPU 0 present (Salus `Error::MissingBootCpu` → INVALID_PARAM).
//! A call in the wrong state returns SBI_ERR_INVALID_PARAM (Salus `GuestNotInitializing`).

use std::collections::{BTreeMap, BTreeSet};

use cvm_core::{Content, HashAlgorithm, MeasurementEvent, MeasurementLog};
use sha2::{Digest, Sha384};

use super::cpu::Rv64Cpu;
use super::pages::{PageState, PhysMem};
use super::vcpu::VcpuState;
use crate::abi::{SbiError, TvmAiaParams, PAGE_SIZE};
use crate::measure::{record, TvmMeasurement};

/// Guest-physical address width of a TVM: Sv48x4 G-stage (Salus) → 50 bits.
pub const GPA_BITS: u8 = 50;
/// Pages of TVM state CREATE_TVM takes (reported in `TsmInfo.tvm_state_pages`).
pub const TVM_STATE_PAGES: u64 = 2;
/// Pages of vCPU state CREATE_VCPU takes (`TsmInfo.tvm_vcpu_state_pages`).
pub const VCPU_STATE_PAGES: u64 = 1;
/// Maximum vCPUs per TVM (`TsmInfo.tvm_max_vcpus`; Salus `VM_CPUS_MAX`).
pub const MAX_VCPUS: u64 = 8;
/// Pages of the Sv48x4 root page table (16 KiB, RFC 05/48 `tvm_page_directory_addr`).
pub const PGD_PAGES: u64 = 4;

/// KVM ISA extension id of Zkr (spec/cove.md §7.3).
pub const ISA_ZKR: u32 = 32;
/// KVM ISA extension id of Smnpm.
pub const ISA_SMNPM: u32 = 62;
/// KVM ISA extension id of Ssnpm.
pub const ISA_SSNPM: u32 = 63;

/// TVM state (spec-2023 `enum tvm_state`; Salus `GuestState {Init, Running}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TvmState {
    /// TVM_INITIALIZING: after CREATE_TVM.
    Initializing,
    /// TVM_RUNNABLE: after FINALIZE_TVM.
    Runnable,
}

/// Guest-physical region types (Salus `MEMORY.md`: Confidential, Shared, Mmio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// Confidential memory (TVM_ADD_MEMORY_REGION, or unshared by the guest).
    Confidential,
    /// Memory the TVM shared with the host (COVG SHARE_MEMORY).
    Shared,
    /// Emulated MMIO the TVM registered (COVG ADD_MMIO_REGION).
    Mmio,
}

/// A guest-physical region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Start.
    pub gpa: u64,
    /// Length.
    pub len: u64,
    /// Kind.
    pub kind: RegionKind,
}

impl Region {
    fn end(&self) -> u64 {
        self.gpa + self.len
    }
}

/// A G-stage mapping of one 4 KiB guest page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Host physical page.
    pub pa: u64,
    /// Whether the page is shared (host-owned) rather than confidential.
    pub shared: bool,
    /// TVM fence version at TVM_INVALIDATE_PAGES, while blocked.
    pub blocked_at: Option<u64>,
}

/// The TVM's ISA configuration (model extension, [`crate::abi::cvm_model`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TvmIsa {
    /// Hidden KVM ISA extension ids (bit n = id n).
    pub hidden: u128,
    /// Forward SEED to the host instead of answering it.
    pub forward_seed: bool,
}

impl TvmIsa {
    /// Whether extension `id` is visible to the guest.
    pub fn has(&self, id: u32) -> bool {
        id >= 128 || self.hidden & (1u128 << id) == 0
    }
}

/// The TSM's deterministic DRBG for SEED: SHA-384 in counter mode over a per-TVM key.
/// (A model stand-in for the TSM's own entropy source; not a certified DRBG.)
#[derive(Debug, Clone)]
pub struct Drbg {
    key: [u8; 48],
    counter: u64,
}

impl Drbg {
    fn new(guest: u64) -> Self {
        let mut h = Sha384::new();
        h.update(b"cvm-cove-model-tsm-drbg");
        h.update(guest.to_le_bytes());
        let mut key = [0; 48];
        key.copy_from_slice(&h.finalize());
        Self { key, counter: 0 }
    }

    /// The next 16 bits.
    pub fn next16(&mut self) -> u16 {
        let mut h = Sha384::new();
        h.update(self.key);
        h.update(self.counter.to_le_bytes());
        self.counter = self.counter.wrapping_add(1);
        let d = h.finalize();
        u16::from_le_bytes([d[0], d[1]])
    }
}

/// Which external interrupts the TVM allows (COVG ALLOW/DENY_EXT_INTERRUPT; all denied at
/// start, spec-2023 FID 4).
#[derive(Debug, Clone, Default)]
pub struct ExtIrqPolicy {
    all: bool,
    allowed: BTreeSet<u64>,
}

impl ExtIrqPolicy {
    /// ALLOW(id), id = -1 → all.
    pub fn allow(&mut self, id: u64) {
        if id == u64::MAX {
            self.all = true;
            self.allowed.clear();
        } else {
            self.allowed.insert(id);
        }
    }

    /// DENY(id), id = -1 → all.
    pub fn deny(&mut self, id: u64) {
        if id == u64::MAX {
            self.all = false;
            self.allowed.clear();
        } else {
            self.allowed.remove(&id);
            // Denying one id after allow-all: keep the others allowed is not expressible
            // without a deny set; the model then falls back to the explicit set.
            if self.all {
                self.all = false;
            }
        }
    }

    /// Whether `id` may be injected.
    pub fn allows(&self, id: u64) -> bool {
        self.all || self.allowed.contains(&id)
    }
}

/// One TVM.
#[derive(Debug)]
pub struct Tvm {
    /// Guest id (CREATE_TVM's return value).
    pub id: u64,
    /// State.
    pub state: TvmState,
    /// The 16 KiB page directory.
    pub pgd: u64,
    /// The TVM state pages.
    pub state_pa: u64,
    /// Page-table pages not yet used.
    pub pgt_free: Vec<u64>,
    /// Page-table pages holding tables.
    pub pgt_used: Vec<u64>,
    /// Page-table nodes present: (level, index) for levels 2..0 of Sv48x4.
    pt_nodes: BTreeSet<(u8, u64)>,
    /// Guest-physical regions.
    pub regions: Vec<Region>,
    /// G-stage mappings, keyed by guest page address.
    pub map: BTreeMap<u64, Mapping>,
    /// vCPUs by id.
    pub vcpus: BTreeMap<u64, VcpuState>,
    /// Measurement registers.
    pub measurement: TvmMeasurement,
    /// Measured events, in order (runtime extensions beyond
    /// [`super::atst::MAX_LOGGED_RUNTIME_EXTENDS`] are counted, not logged).
    pub log: MeasurementLog,
    /// Runtime extensions applied so far (logged or not).
    pub runtime_extends: u64,
    /// ISA configuration.
    pub isa: TvmIsa,
    /// Whether any vCPU has run (ISA configuration is fixed from then on).
    pub ran: bool,
    /// External interrupt policy.
    pub ext_irq: ExtIrqPolicy,
    /// AIA parameters (COVI TVM_AIA_INIT).
    pub aia: Option<TvmAiaParams>,
    /// TVM fence version (TVM_INITIATE_FENCE).
    pub fence_version: u64,
    /// SEED entropy.
    pub drbg: Drbg,
}

fn node_keys(gpa: u64) -> [(u8, u64); 3] {
    // Sv48x4: root covers 2^50; level-2 tables cover 512 GiB, level-1 1 GiB, level-0 2 MiB
    // (Privileged spec "Hypervisor Extension", G-stage address translation).
    [(2, gpa >> 39), (1, gpa >> 30), (0, gpa >> 21)]
}

impl Tvm {
    /// A new TVM (CREATE_TVM).
    pub fn new(id: u64, pgd: u64, state_pa: u64) -> Self {
        Self {
            id,
            state: TvmState::Initializing,
            pgd,
            state_pa,
            pgt_free: Vec::new(),
            pgt_used: Vec::new(),
            pt_nodes: BTreeSet::new(),
            regions: Vec::new(),
            map: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            measurement: TvmMeasurement::new(),
            log: MeasurementLog::new(HashAlgorithm::Sha384),
            runtime_extends: 0,
            isa: TvmIsa::default(),
            ran: false,
            ext_irq: ExtIrqPolicy::default(),
            aia: None,
            fence_version: 0,
            drbg: Drbg::new(id),
        }
    }

    fn require(&self, state: TvmState) -> Result<(), SbiError> {
        if self.state == state {
            Ok(())
        } else {
            Err(SbiError::InvalidParam)
        }
    }

    /// The region containing `[gpa, gpa + len)`.
    pub fn region_of(&self, gpa: u64, len: u64) -> Option<Region> {
        let end = gpa.checked_add(len)?;
        self.regions
            .iter()
            .find(|r| gpa >= r.gpa && end <= r.end())
            .copied()
    }

    fn overlaps(&self, gpa: u64, end: u64) -> bool {
        self.regions.iter().any(|r| gpa < r.end() && r.gpa < end)
    }

    /// Validates a guest range: non-empty, 4 KiB aligned, inside the GPA space.
    pub fn check_gpa_range(gpa: u64, len: u64) -> Result<u64, SbiError> {
        if len == 0 || gpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(SbiError::InvalidParam);
        }
        let end = gpa.checked_add(len).ok_or(SbiError::InvalidAddress)?;
        if end > 1u64 << GPA_BITS {
            return Err(SbiError::InvalidAddress);
        }
        Ok(end)
    }

    /// Adds a region of `kind`; refuses overlaps.
    pub fn add_region(&mut self, gpa: u64, len: u64, kind: RegionKind) -> Result<(), SbiError> {
        let end = Self::check_gpa_range(gpa, len)?;
        if self.overlaps(gpa, end) {
            return Err(SbiError::InvalidAddress);
        }
        self.regions.push(Region { gpa, len, kind });
        self.regions.sort_by_key(|r| r.gpa);
        Ok(())
    }

    /// Retypes `[gpa, gpa + len)` (wholly inside regions of kind `from`) to `to`, splitting.
    pub fn retype(
        &mut self,
        gpa: u64,
        len: u64,
        from: RegionKind,
        to: RegionKind,
    ) -> Result<(), SbiError> {
        let end = Self::check_gpa_range(gpa, len)?;
        let mut pos = gpa;
        while pos < end {
            let r = self
                .region_of(pos, PAGE_SIZE)
                .filter(|r| r.kind == from)
                .ok_or(SbiError::InvalidAddress)?;
            pos = r.end().min(end);
        }
        let mut out = Vec::new();
        for r in self.regions.drain(..) {
            if r.kind != from || r.end() <= gpa || r.gpa >= end {
                out.push(r);
                continue;
            }
            if r.gpa < gpa {
                out.push(Region {
                    gpa: r.gpa,
                    len: gpa - r.gpa,
                    kind: r.kind,
                });
            }
            if r.end() > end {
                out.push(Region {
                    gpa: end,
                    len: r.end() - end,
                    kind: r.kind,
                });
            }
        }
        out.push(Region { gpa, len, kind: to });
        out.sort_by_key(|r| r.gpa);
        // Merge adjacent regions of the same kind.
        let mut merged: Vec<Region> = Vec::new();
        for r in out {
            match merged.last_mut() {
                Some(l) if l.kind == r.kind && l.end() == r.gpa => l.len += r.len,
                _ => merged.push(r),
            }
        }
        self.regions = merged;
        Ok(())
    }

    /// Removes the exact region `[gpa, gpa + len)` of `kind`.
    pub fn remove_region(&mut self, gpa: u64, len: u64, kind: RegionKind) -> Result<(), SbiError> {
        let i = self
            .regions
            .iter()
            .position(|r| r.gpa == gpa && r.len == len && r.kind == kind)
            .ok_or(SbiError::InvalidParam)?;
        self.regions.remove(i);
        Ok(())
    }

    /// Page-table pages needed to map `gpa`.
    fn tables_needed(&self, gpa: u64) -> usize {
        node_keys(gpa)
            .iter()
            .filter(|k| !self.pt_nodes.contains(k))
            .count()
    }

    /// Maps guest page `gpa` to `pa`, consuming page-table pages from the pool. The caller
    /// checked `gpa` is unmapped and has enough table pages.
    fn map_page(&mut self, gpa: u64, pa: u64, shared: bool) {
        for k in node_keys(gpa) {
            if self.pt_nodes.insert(k) {
                if let Some(p) = self.pgt_free.pop() {
                    self.pgt_used.push(p);
                }
            }
        }
        self.map.insert(
            gpa,
            Mapping {
                pa,
                shared,
                blocked_at: None,
            },
        );
    }

    /// Checks that `n` pages from `gpa` can be mapped in a region of `kind`: inside one such
    /// region, unmapped, and enough page-table pages in the pool. spec-now names
    /// SBI_ERR_OUT_OF_PTPAGES without a value; the model returns SBI_ERR_FAILED.
    fn check_mappable(&self, gpa: u64, n: u64, kind: RegionKind) -> Result<(), SbiError> {
        let len = n.checked_mul(PAGE_SIZE).ok_or(SbiError::InvalidParam)?;
        Self::check_gpa_range(gpa, len)?;
        match self.region_of(gpa, len) {
            Some(r) if r.kind == kind => {}
            _ => return Err(SbiError::InvalidAddress),
        }
        let mut nodes = BTreeSet::new();
        for i in 0..n {
            let g = gpa + i * PAGE_SIZE;
            if self.map.contains_key(&g) {
                return Err(SbiError::InvalidAddress);
            }
            for k in node_keys(g) {
                if !self.pt_nodes.contains(&k) {
                    nodes.insert(k);
                }
            }
        }
        if nodes.len() > self.pgt_free.len() {
            return Err(SbiError::Failed);
        }
        Ok(())
    }

    /// TVM_ADD_MEMORY_REGION (Initializing only).
    pub fn add_memory_region(&mut self, gpa: u64, len: u64) -> Result<u64, SbiError> {
        self.require(TvmState::Initializing)?;
        self.add_region(gpa, len, RegionKind::Confidential)?;
        Ok(0)
    }

    /// TVM_ADD_PGT_PAGES (any state): converted pages become TVM state.
    pub fn add_pgt_pages(&mut self, mem: &mut PhysMem, pa: u64, n: u64) -> Result<u64, SbiError> {
        mem.assign(pa, n, PageState::VmState(self.id))?;
        for p in PhysMem::range(pa, n)? {
            self.pgt_free.push(p);
        }
        Ok(0)
    }

    /// TVM_ADD_MEASURED_PAGES (Initializing only): copy each source page, map it and extend
    /// PCR2 with `le64(gpa) || page` (Salus `src/vm.rs guest_add_measured_pages`).
    pub fn add_measured_pages(
        &mut self,
        mem: &mut PhysMem,
        src: u64,
        dest: u64,
        page_type: u64,
        n: u64,
        gpa: u64,
    ) -> Result<u64, SbiError> {
        self.require(TvmState::Initializing)?;
        check_page_type(page_type)?;
        mem.check_converted(dest, n)?;
        self.check_mappable(gpa, n, RegionKind::Confidential)?;
        let src_len = n.checked_mul(PAGE_SIZE).ok_or(SbiError::InvalidParam)?;
        if src % PAGE_SIZE != 0 {
            return Err(SbiError::InvalidParam);
        }
        mem.check_host_access(src, src_len as usize)
            .map_err(|_| SbiError::InvalidAddress)?;
        for i in 0..n {
            let mut page = vec![0u8; PAGE_SIZE as usize];
            mem.read(src + i * PAGE_SIZE, &mut page)
                .map_err(|_| SbiError::InvalidAddress)?;
            let d = dest + i * PAGE_SIZE;
            let g = gpa + i * PAGE_SIZE;
            mem.assign(d, 1, PageState::Mapped(self.id))?;
            mem.write(d, &page).map_err(|_| SbiError::Failed)?;
            self.map_page(g, d, false);
            record(
                &mut self.log,
                &mut self.measurement,
                MeasurementEvent::MeasuredPages {
                    gpa: g,
                    content: Content::bytes(page),
                },
            )
            .map_err(|_| SbiError::Failed)?;
        }
        Ok(n)
    }

    /// TVM_ADD_ZERO_PAGES (Finalized only; "may be added only post TVM finalization").
    pub fn add_zero_pages(
        &mut self,
        mem: &mut PhysMem,
        pa: u64,
        page_type: u64,
        n: u64,
        gpa: u64,
    ) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        check_page_type(page_type)?;
        mem.check_converted(pa, n)?;
        self.check_mappable(gpa, n, RegionKind::Confidential)?;
        for i in 0..n {
            mem.assign(pa + i * PAGE_SIZE, 1, PageState::Mapped(self.id))?;
            self.map_page(gpa + i * PAGE_SIZE, pa + i * PAGE_SIZE, false);
        }
        Ok(n)
    }

    /// TVM_ADD_SHARED_PAGES (Finalized only; only into TVM-declared shared regions; 4 KiB only
    /// in Salus).
    pub fn add_shared_pages(
        &mut self,
        mem: &mut PhysMem,
        pa: u64,
        page_type: u64,
        n: u64,
        gpa: u64,
    ) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        if page_type != 0 {
            return Err(SbiError::InvalidParam);
        }
        // The host pages first: that check ends at the first page that is not host memory,
        // so a huge `n` fails fast. `check_mappable` walks every guest page, and a shared
        // region may be as large as the GPA space (2^38 pages): checking it first let one
        // call with `n` = 2^37 stall the TSM. (ADD_ZERO/MEASURED_PAGES check their converted
        // pages first for the same reason.)
        mem.check_shareable(pa, n)?;
        self.check_mappable(gpa, n, RegionKind::Shared)?;
        for i in 0..n {
            if let Err(e) = mem.share(pa + i * PAGE_SIZE) {
                for j in 0..i {
                    mem.unshare(pa + j * PAGE_SIZE);
                }
                return Err(e);
            }
        }
        for i in 0..n {
            self.map_page(gpa + i * PAGE_SIZE, pa + i * PAGE_SIZE, true);
        }
        Ok(n)
    }

    /// TVM_CREATE_VCPU (Initializing only).
    pub fn create_vcpu(
        &mut self,
        mem: &mut PhysMem,
        id: u64,
        state_pa: u64,
    ) -> Result<u64, SbiError> {
        self.require(TvmState::Initializing)?;
        if id >= MAX_VCPUS || self.vcpus.contains_key(&id) {
            return Err(SbiError::InvalidParam);
        }
        mem.assign(state_pa, VCPU_STATE_PAGES, PageState::VmState(self.id))?;
        self.vcpus.insert(id, VcpuState::new(id, state_pa));
        Ok(0)
    }

    /// FINALIZE_TVM: measure entry pc and arg into PCR3, lock, power on vCPU 0 with
    /// sepc = entry, a0 = 0, a1 = arg (Salus `VmCpuArchState::new`, `VmCpu::power_on`).
    pub fn finalize(&mut self, entry: u64, arg: u64) -> Result<u64, SbiError> {
        self.require(TvmState::Initializing)?;
        if !self.vcpus.contains_key(&0) {
            return Err(SbiError::InvalidParam);
        }
        record(
            &mut self.log,
            &mut self.measurement,
            MeasurementEvent::Finalize {
                entry_pc: entry,
                entry_arg: arg,
            },
        )
        .map_err(|_| SbiError::InvalidParam)?;
        if let Some(v) = self.vcpus.get_mut(&0) {
            v.power_on(entry, arg);
        }
        self.state = TvmState::Runnable;
        Ok(0)
    }

    /// TVM_INITIATE_FENCE: completes when every vCPU of the TVM that was running has trapped
    /// into the TSM (spec-2023 FID 15). In the model no vCPU runs while the host makes a COVH
    /// call, so the fence completes at once.
    pub fn initiate_fence(&mut self) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        self.fence_version += 1;
        Ok(0)
    }

    fn check_range_in_regions(&self, gpa: u64, len: u64) -> Result<u64, SbiError> {
        let end = Self::check_gpa_range(gpa, len)?;
        let mut pos = gpa;
        while pos < end {
            let r = self
                .region_of(pos, PAGE_SIZE)
                .filter(|r| r.kind != RegionKind::Mmio)
                .ok_or(SbiError::InvalidAddress)?;
            pos = r.end().min(end);
        }
        Ok(end)
    }

    /// TVM_INVALIDATE_PAGES (Salus `TvmBlockPages`): mapped pages in the range become blocked
    /// at the current TVM fence version; faults on them are reported to the host.
    pub fn invalidate(&mut self, gpa: u64, len: u64) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        let end = self.check_range_in_regions(gpa, len)?;
        let v = self.fence_version;
        for (_, m) in self.map.range_mut(gpa..end) {
            m.blocked_at.get_or_insert(v);
        }
        Ok(0)
    }

    /// TVM_VALIDATE_PAGES (Salus `TvmUnblockPages`): reverts an invalidation.
    pub fn validate(&mut self, gpa: u64, len: u64) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        let end = self.check_range_in_regions(gpa, len)?;
        for (_, m) in self.map.range_mut(gpa..end) {
            m.blocked_at = None;
        }
        Ok(0)
    }

    /// TVM_REMOVE_PAGES: only blocked pages whose TVM fence has completed (spec/cove.md
    /// appendix); confidential pages go back to the host still converted, shared pages drop a
    /// reference.
    pub fn remove(&mut self, mem: &mut PhysMem, gpa: u64, len: u64) -> Result<u64, SbiError> {
        self.require(TvmState::Runnable)?;
        let end = self.check_range_in_regions(gpa, len)?;
        for (_, m) in self.map.range(gpa..end) {
            match m.blocked_at {
                Some(v) if self.fence_version > v => {}
                _ => return Err(SbiError::InvalidParam),
            }
        }
        let pages: Vec<(u64, Mapping)> = self.map.range(gpa..end).map(|(g, m)| (*g, *m)).collect();
        for (g, m) in pages {
            self.map.remove(&g);
            if m.shared {
                mem.unshare(m.pa);
            } else {
                mem.release(m.pa);
            }
        }
        Ok(0)
    }

    /// DESTROY_TVM: every TVM page returns to the host, still confidential (must be reclaimed);
    /// shared pages drop their reference.
    pub fn destroy(self, mem: &mut PhysMem) {
        for m in self.map.values() {
            if m.shared {
                mem.unshare(m.pa);
            } else {
                mem.release(m.pa);
            }
        }
        for p in self.pgt_free.iter().chain(self.pgt_used.iter()) {
            mem.release(*p);
        }
        for v in self.vcpus.values() {
            for i in 0..VCPU_STATE_PAGES {
                mem.release(v.state_pa + i * PAGE_SIZE);
            }
        }
        for i in 0..PGD_PAGES {
            mem.release(self.pgd + i * PAGE_SIZE);
        }
        for i in 0..TVM_STATE_PAGES {
            mem.release(self.state_pa + i * PAGE_SIZE);
        }
    }

    /// Reads guest memory through the G-stage (for TSM handlers). `Err(gpa)` names the first
    /// unmapped or blocked page.
    pub fn guest_read(&self, mem: &PhysMem, gpa: u64, buf: &mut [u8]) -> Result<(), u64> {
        let mut pos = 0usize;
        while pos < buf.len() {
            let a = gpa.checked_add(pos as u64).ok_or(gpa)?;
            let page = a & !(PAGE_SIZE - 1);
            let off = (a - page) as usize;
            let n = (PAGE_SIZE as usize - off).min(buf.len() - pos);
            let m = self
                .map
                .get(&page)
                .filter(|m| m.blocked_at.is_none())
                .ok_or(page)?;
            mem.read(m.pa + off as u64, &mut buf[pos..pos + n])
                .map_err(|_| page)?;
            pos += n;
        }
        Ok(())
    }

    /// Writes guest memory through the G-stage (for TSM handlers).
    pub fn guest_write(&self, mem: &mut PhysMem, gpa: u64, data: &[u8]) -> Result<(), u64> {
        let mut pos = 0usize;
        while pos < data.len() {
            let a = gpa.checked_add(pos as u64).ok_or(gpa)?;
            let page = a & !(PAGE_SIZE - 1);
            let off = (a - page) as usize;
            let n = (PAGE_SIZE as usize - off).min(data.len() - pos);
            let m = self
                .map
                .get(&page)
                .filter(|m| m.blocked_at.is_none())
                .ok_or(page)?;
            mem.write(m.pa + off as u64, &data[pos..pos + n])
                .map_err(|_| page)?;
            pos += n;
        }
        Ok(())
    }

    /// Whether mapping `gpa` would need more page-table pages than the pool has.
    pub fn out_of_tables(&self, gpa: u64) -> bool {
        self.tables_needed(gpa) > self.pgt_free.len()
    }

    /// A fresh CPU for vCPU power-on.
    pub fn fresh_cpu() -> Rv64Cpu {
        Rv64Cpu::new()
    }
}

/// `page_type`: 0 = 4 KiB; 1..3 are valid types the model does not support; others invalid
/// (sbi-rs `TsmPageType::from_reg`).
fn check_page_type(t: u64) -> Result<(), SbiError> {
    match t {
        0 => Ok(()),
        1..=3 => Err(SbiError::NotSupported),
        _ => Err(SbiError::InvalidParam),
    }
}
