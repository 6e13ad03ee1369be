//! The TSM: one machine (N harts, host RAM, the TVMs) behind the [`Covh`] ECALL interface.
//!
//! Dispatch by EID: BASE (host probes), COVH (spec/cove.md §1.2), COVI (§1.4), NACL (§5) and
//! the model's own configuration extension ([`crate::abi::cvm_model`]). Everything runs
//! under one lock, so the model is deterministic: the same calls give the same results.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use cvm_core::vm_memory::GuestMemoryMmap;
use cvm_core::{Measurement, MeasurementLog, Stats, StatsRecorder};
use zerocopy::{FromBytes, IntoBytes};

use super::covi;
use super::nacl;
use super::pages::{PageState, PhysMem};
use super::tvm::{self, Tvm, TvmIsa, TvmState, PGD_PAGES, TVM_STATE_PAGES};
use super::vcpu::{self, VcpuStatus};
use crate::abi::{
    self, covh, covh_name, cvm_model, tsm_state, SbiError, SbiRet, TsmInfo, TvmCreateParams,
    NACL_SHMEM_PAGES, PAGE_SIZE,
};
use crate::covh::{Covh, HostMemError, TrapCsrs};

/// Shape of the modelled machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Physical harts.
    pub harts: usize,
    /// Host RAM base.
    pub ram_base: u64,
    /// Host RAM pages.
    pub ram_pages: usize,
    /// Guest instructions one TVM_VCPU_RUN may retire before the TSM returns with a host
    /// timer interrupt (the host timer's period; at least 1).
    pub run_budget: u64,
}

impl Default for ModelConfig {
    /// 4 harts, 64 MiB of host RAM at 0x1_0000_0000, [`vcpu::RUN_BUDGET`] instructions per
    /// run.
    fn default() -> Self {
        Self {
            harts: 4,
            ram_base: 0x1_0000_0000,
            ram_pages: 16384,
            run_budget: vcpu::RUN_BUDGET,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Hart {
    nacl: Option<u64>,
    trap: TrapCsrs,
}

#[derive(Debug)]
struct Machine {
    harts: Vec<Hart>,
    mem: PhysMem,
    tvms: BTreeMap<u64, Tvm>,
    next_id: u64,
    run_budget: u64,
}

/// The in-process TSM model (Salus-faithful) implementing [`Covh`].
#[derive(Debug)]
pub struct TsmModel {
    m: Mutex<Machine>,
    stats: StatsRecorder,
    config: ModelConfig,
}

impl Default for TsmModel {
    fn default() -> Self {
        Self::new(ModelConfig::default())
    }
}

impl TsmModel {
    /// A machine of `config`'s shape with the TSM READY.
    pub fn new(config: ModelConfig) -> Self {
        let harts = config.harts.max(1);
        Self {
            m: Mutex::new(Machine {
                harts: vec![Hart::default(); harts],
                mem: PhysMem::new(config.ram_base, config.ram_pages, harts),
                tvms: BTreeMap::new(),
                next_id: 1,
                run_budget: config.run_budget.max(1),
            }),
            stats: StatsRecorder::new(),
            config: ModelConfig { harts, ..config },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Machine> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine's shape.
    pub fn config(&self) -> ModelConfig {
        self.config
    }

    /// Host RAM pages that are not host-owned (converting, converted, TVM state, mapped).
    /// Zero after every TVM was destroyed and its pages reclaimed.
    pub fn confidential_pages(&self) -> usize {
        self.lock().mem.confidential_pages()
    }

    /// Host pages currently shared with TVMs.
    pub fn shared_pages(&self) -> usize {
        self.lock().mem.shared_pages()
    }

    /// Ranges of VMM (user) memory the host has pinned and not unpinned. Zero after every
    /// TVM was torn down.
    pub fn pinned_user_ranges(&self) -> usize {
        self.lock().mem.pinned_ranges()
    }

    /// Live TVMs.
    pub fn tvm_count(&self) -> usize {
        self.lock().tvms.len()
    }

    /// The TSM's own view of a TVM's measurement (model inspection; no ABI exposes it to the
    /// host).
    pub fn tvm_measurement(&self, guest: u64) -> Option<Measurement> {
        self.lock()
            .tvms
            .get(&guest)
            .map(|t| t.measurement.to_measurement())
    }

    /// The TSM's log of a TVM's measured events (model inspection).
    pub fn tvm_log(&self, guest: u64) -> Option<MeasurementLog> {
        self.lock().tvms.get(&guest).map(|t| t.log.clone())
    }

    /// External interrupts delivered into vCPU `vcpu` of TVM `guest` (model inspection).
    pub fn ext_interrupts_delivered(&self, guest: u64, vcpu: u64) -> Option<u64> {
        self.lock()
            .tvms
            .get(&guest)
            .and_then(|t| t.vcpus.get(&vcpu))
            .map(|v| v.ext_delivered)
    }

    /// Checks the model's internal consistency (model inspection, used by the robustness
    /// tests after every call): every page has exactly one state and one owner — each page a
    /// TVM holds (page directory, TVM/vCPU state, page-table pool, confidential mappings) is
    /// `VmState`/`Mapped` of that TVM and claimed once, no `VmState`/`Mapped` page belongs to
    /// a TVM that does not hold it (a leak), share counts equal the shared mappings, no
    /// conversion records a TLB version from the future, NACL shared memory is never
    /// confidential, and every TVM's regions are sorted, aligned, disjoint and inside the GPA
    /// space. `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.lock().check_invariants()
    }

    /// Calls by name and counters of the whole machine.
    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }
}

fn eid_fid_name(eid: u32, fid: u32) -> &'static str {
    match eid {
        abi::EID_COVH => covh_name(fid),
        abi::EID_COVI => "COVI",
        abi::EID_NACL => "NACL",
        abi::EID_BASE => "BASE",
        abi::EID_CVM_MODEL => "CVM_MODEL",
        _ => "UNKNOWN",
    }
}

impl Machine {
    fn check_invariants(&self) -> Result<(), String> {
        use std::collections::HashMap;
        // What the TVMs say each RAM page is (indexed by page), and shared mappings by page.
        let pages = self.mem.page_count();
        let mut expect: Vec<Option<PageState>> = vec![None; pages];
        let mut held = 0usize;
        let mut shared: HashMap<u64, u32> = HashMap::new();
        let mut claim = |pa: u64, s: PageState, what: &str| -> Result<(), String> {
            let slot = self
                .mem
                .page_index(pa)
                .and_then(|i| expect.get_mut(i))
                .ok_or_else(|| format!("a TVM holds {pa:#x} ({what}), outside host RAM"))?;
            if let Some(prev) = slot.replace(s) {
                return Err(format!(
                    "page {pa:#x} held twice ({prev:?} and {s:?} as {what})"
                ));
            }
            held += 1;
            Ok(())
        };
        for (&id, t) in &self.tvms {
            if t.id != id {
                return Err(format!("TVM {id} records id {}", t.id));
            }
            let st = PageState::VmState(id);
            for i in 0..PGD_PAGES {
                claim(t.pgd + i * PAGE_SIZE, st, "page directory")?;
            }
            for i in 0..TVM_STATE_PAGES {
                claim(t.state_pa + i * PAGE_SIZE, st, "TVM state")?;
            }
            for &p in t.pgt_free.iter().chain(&t.pgt_used) {
                claim(p, st, "page-table page")?;
            }
            for (&vid, v) in &t.vcpus {
                if v.id != vid {
                    return Err(format!("TVM {id} vCPU {vid} records id {}", v.id));
                }
                for i in 0..tvm::VCPU_STATE_PAGES {
                    claim(v.state_pa + i * PAGE_SIZE, st, "vCPU state")?;
                }
            }
            for (&gpa, mp) in &t.map {
                if gpa % PAGE_SIZE != 0 || gpa >= 1 << tvm::GPA_BITS {
                    return Err(format!("TVM {id} maps bad gpa {gpa:#x}"));
                }
                if mp.shared {
                    *shared.entry(mp.pa).or_default() += 1;
                } else {
                    claim(mp.pa, PageState::Mapped(id), "confidential mapping")?;
                }
            }
            let mut end = 0u64;
            for r in &t.regions {
                if r.len == 0 || r.gpa % PAGE_SIZE != 0 || r.len % PAGE_SIZE != 0 {
                    return Err(format!("TVM {id} has bad region {r:?}"));
                }
                if r.gpa < end {
                    return Err(format!("TVM {id} regions overlap or are unsorted at {r:?}"));
                }
                end = r
                    .gpa
                    .checked_add(r.len)
                    .filter(|&e| e <= 1 << tvm::GPA_BITS)
                    .ok_or_else(|| format!("TVM {id} region {r:?} leaves the GPA space"))?;
            }
        }
        let version = self.mem.fence_version();
        let mut seen = 0usize;
        for (pa, s) in self.mem.pages() {
            match s {
                PageState::Host | PageState::Converted => {}
                PageState::Converting(v) if v <= version => {}
                PageState::Converting(v) => {
                    return Err(format!("page {pa:#x} converting at future version {v}"))
                }
                PageState::Shared(n) => {
                    let want = shared.get(&pa).copied().unwrap_or(0);
                    if n != want || n == 0 {
                        return Err(format!(
                            "page {pa:#x} shared {n} times but mapped {want} times"
                        ));
                    }
                }
                PageState::VmState(_) | PageState::Mapped(_) => {}
            }
            let want = self
                .mem
                .page_index(pa)
                .and_then(|i| expect.get(i).copied().flatten());
            match want {
                Some(want) if want != s => {
                    return Err(format!("page {pa:#x} is {s:?}, its holder says {want:?}"))
                }
                Some(_) => seen += 1,
                None if matches!(s, PageState::VmState(_) | PageState::Mapped(_)) => {
                    return Err(format!("page {pa:#x} is {s:?} but no TVM holds it (leak)"))
                }
                None => {}
            }
        }
        if seen != held {
            return Err(format!("{held} pages held by TVMs, {seen} in those states"));
        }
        self.mem.check_window_shares(&shared)?;
        for (h, hart) in self.harts.iter().enumerate() {
            if let Some(pa) = hart.nacl {
                for i in 0..NACL_SHMEM_PAGES {
                    let p = pa + i * PAGE_SIZE;
                    if !matches!(
                        self.mem.state(p),
                        Some(PageState::Host | PageState::Shared(_))
                    ) {
                        return Err(format!(
                            "hart {h} NACL page {p:#x} is {:?}",
                            self.mem.state(p)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn nacl_ranges(&self) -> Vec<(u64, u64)> {
        self.harts
            .iter()
            .filter_map(|h| h.nacl)
            .map(|pa| (pa, NACL_SHMEM_PAGES * PAGE_SIZE))
            .collect()
    }

    fn tvm(&mut self, id: u64) -> Result<(&mut Tvm, &mut PhysMem), SbiError> {
        let Machine { tvms, mem, .. } = self;
        let t = tvms.get_mut(&id).ok_or(SbiError::InvalidParam)?;
        Ok((t, mem))
    }

    fn covh(&mut self, hart: usize, fid: u32, a: [u64; 6]) -> Result<u64, SbiError> {
        match fid {
            covh::TSM_GET_INFO => {
                let info = TsmInfo {
                    tsm_state: tsm_state::READY,
                    tsm_version: 0,
                    tvm_state_pages: TVM_STATE_PAGES,
                    tvm_max_vcpus: tvm::MAX_VCPUS,
                    tvm_vcpu_state_pages: tvm::VCPU_STATE_PAGES,
                };
                let bytes = info.as_bytes();
                // Salus `get_tsm_info`: len < sizeof → INVALID_PARAM; returns bytes written.
                if a[1] < bytes.len() as u64 {
                    return Err(SbiError::InvalidParam);
                }
                self.mem
                    .check_host_access(a[0], bytes.len())
                    .map_err(|_| SbiError::InvalidAddress)?;
                self.mem
                    .write(a[0], bytes)
                    .map_err(|_| SbiError::InvalidAddress)?;
                Ok(bytes.len() as u64)
            }
            covh::TSM_CONVERT_PAGES => {
                let ex = self.nacl_ranges();
                self.mem.convert(a[0], a[1], &ex)
            }
            covh::TSM_RECLAIM_PAGES => self.mem.reclaim(a[0], a[1]),
            covh::TSM_INITIATE_FENCE => self.mem.fence.initiate(hart).map(|_| 0),
            covh::TSM_LOCAL_FENCE => self.mem.fence.local(hart).map(|_| 0),
            covh::CREATE_TVM => self.create_tvm(a[0], a[1]),
            covh::FINALIZE_TVM => self.tvm(a[0])?.0.finalize(a[1], a[2]),
            covh::DESTROY_TVM => {
                let t = self.tvms.remove(&a[0]).ok_or(SbiError::InvalidParam)?;
                t.destroy(&mut self.mem);
                Ok(0)
            }
            covh::TVM_ADD_MEMORY_REGION => self.tvm(a[0])?.0.add_memory_region(a[1], a[2]),
            covh::TVM_ADD_PGT_PAGES => {
                let (t, m) = self.tvm(a[0])?;
                t.add_pgt_pages(m, a[1], a[2])
            }
            covh::TVM_ADD_MEASURED_PAGES => {
                let (t, m) = self.tvm(a[0])?;
                t.add_measured_pages(m, a[1], a[2], a[3], a[4], a[5])
            }
            covh::TVM_ADD_ZERO_PAGES => {
                let (t, m) = self.tvm(a[0])?;
                t.add_zero_pages(m, a[1], a[2], a[3], a[4])
            }
            covh::TVM_ADD_SHARED_PAGES => {
                let (t, m) = self.tvm(a[0])?;
                t.add_shared_pages(m, a[1], a[2], a[3], a[4])
            }
            covh::TVM_CREATE_VCPU => {
                let (t, m) = self.tvm(a[0])?;
                t.create_vcpu(m, a[1], a[2])
            }
            covh::TVM_VCPU_RUN => self.run_vcpu(hart, a[0], a[1]),
            covh::TVM_INITIATE_FENCE => self.tvm(a[0])?.0.initiate_fence(),
            covh::TVM_INVALIDATE_PAGES => self.tvm(a[0])?.0.invalidate(a[1], a[2]),
            covh::TVM_VALIDATE_PAGES => self.tvm(a[0])?.0.validate(a[1], a[2]),
            // Promotion/demotion need 2 MiB / 1 GiB mappings, which the model does not have.
            covh::TVM_PROMOTE_PAGE | covh::TVM_DEMOTE_PAGE => {
                self.tvm(a[0])?;
                Err(SbiError::NotSupported)
            }
            covh::TVM_REMOVE_PAGES => {
                let (t, m) = self.tvm(a[0])?;
                t.remove(m, a[1], a[2])
            }
            _ => Err(SbiError::NotSupported),
        }
    }

    /// CREATE_TVM (Salus `add_guest`): len < 16 → INVALID_PARAM; the 16 KiB page directory
    /// (16 KiB aligned) and the state pages must be fenced converted pages, else
    /// INVALID_ADDRESS.
    fn create_tvm(&mut self, params_pa: u64, len: u64) -> Result<u64, SbiError> {
        if len < 16 {
            return Err(SbiError::InvalidParam);
        }
        let mut buf = [0u8; 16];
        self.mem
            .check_host_access(params_pa, 16)
            .map_err(|_| SbiError::InvalidAddress)?;
        self.mem
            .read(params_pa, &mut buf)
            .map_err(|_| SbiError::InvalidAddress)?;
        let p = TvmCreateParams::read_from_bytes(&buf).map_err(|_| SbiError::InvalidParam)?;
        let pgd = p.tvm_page_directory_addr;
        let st = p.tvm_state_addr;
        if pgd % (PGD_PAGES * PAGE_SIZE) != 0 || st % PAGE_SIZE != 0 {
            return Err(SbiError::InvalidAddress);
        }
        let pgd_end = pgd
            .checked_add(PGD_PAGES * PAGE_SIZE)
            .ok_or(SbiError::InvalidAddress)?;
        let st_end = st
            .checked_add(TVM_STATE_PAGES * PAGE_SIZE)
            .ok_or(SbiError::InvalidAddress)?;
        if pgd < st_end && st < pgd_end {
            return Err(SbiError::InvalidAddress);
        }
        self.mem.check_converted(pgd, PGD_PAGES)?;
        self.mem.check_converted(st, TVM_STATE_PAGES)?;
        let id = self.next_id;
        self.mem.assign(pgd, PGD_PAGES, PageState::VmState(id))?;
        self.mem
            .assign(st, TVM_STATE_PAGES, PageState::VmState(id))?;
        self.next_id += 1;
        self.tvms.insert(id, Tvm::new(id, pgd, st));
        Ok(id)
    }

    /// TVM_VCPU_RUN (spec/cove.md §4.1; RFC 23/48): needs the hart's NACL shared memory
    /// (else SBI_ERR_NO_SHMEM), a finalized TVM and a runnable vCPU. Returns 0 for a
    /// resumable exit, 1 when the vCPU terminated.
    fn run_vcpu(&mut self, hart: usize, guest: u64, vcpu_id: u64) -> Result<u64, SbiError> {
        let shmem = self
            .harts
            .get(hart)
            .ok_or(SbiError::InvalidParam)?
            .nacl
            .ok_or(SbiError::NoShmem)?;
        let budget = self.run_budget;
        let Machine {
            tvms, mem, harts, ..
        } = self;
        let t = tvms.get_mut(&guest).ok_or(SbiError::InvalidParam)?;
        if t.state != TvmState::Runnable {
            return Err(SbiError::InvalidParam);
        }
        match t.vcpus.get(&vcpu_id) {
            Some(v) if v.status == VcpuStatus::Runnable => {}
            _ => return Err(SbiError::InvalidParam),
        }
        let mut v = t.vcpus.remove(&vcpu_id).ok_or(SbiError::InvalidParam)?;
        t.ran = true;
        let ans = nacl::read_answer(mem, shmem);
        let report = vcpu::run(t, mem, &mut v, ans, budget);
        let vsie = v.cpu.csr(super::cpu::csr::SIE).unwrap_or(0);
        t.vcpus.insert(vcpu_id, v);
        nacl::write_exit(mem, shmem, &report, vsie)?;
        if let Some(h) = harts.get_mut(hart) {
            h.trap = TrapCsrs {
                scause: report.scause,
                stval: report.stval,
            };
        }
        Ok(u64::from(report.terminated))
    }

    fn model_call(&mut self, fid: u32, a: [u64; 6]) -> Result<u64, SbiError> {
        match fid {
            cvm_model::TVM_SET_ISA => {
                let (t, _) = self.tvm(a[0])?;
                if t.ran {
                    return Err(SbiError::Denied);
                }
                if a[3] > 1 {
                    return Err(SbiError::InvalidParam);
                }
                t.isa = TvmIsa {
                    hidden: u128::from(a[1]) | (u128::from(a[2]) << 64),
                    forward_seed: a[3] == 1,
                };
                Ok(0)
            }
            _ => Err(SbiError::NotSupported),
        }
    }

    fn ecall(&mut self, hart: usize, eid: u32, fid: u32, a: [u64; 6]) -> Result<u64, SbiError> {
        if hart >= self.harts.len() {
            return Err(SbiError::InvalidParam);
        }
        match eid {
            abi::EID_BASE => match fid {
                abi::base::GET_SPEC_VERSION => Ok(2 << 24),
                abi::base::PROBE_EXTENSION => Ok(u64::from(matches!(
                    u32::try_from(a[0]).unwrap_or(0),
                    abi::EID_BASE | abi::EID_COVH | abi::EID_COVI | abi::EID_NACL
                ))),
                _ => Err(SbiError::NotSupported),
            },
            abi::EID_COVH => self.covh(hart, fid, a),
            abi::EID_COVI => match fid {
                abi::covi::TVM_CONVERT_IMSIC => {
                    let ex = self.nacl_ranges();
                    self.mem.convert(a[0], 1, &ex)
                }
                abi::covi::TVM_RECLAIM_IMSIC => self.mem.reclaim(a[0], 1),
                _ => {
                    let (t, m) = self.tvm(a[0])?;
                    covi::call(t, m, fid, a)
                }
            },
            abi::EID_NACL => {
                let Machine { harts, mem, .. } = self;
                let h = harts.get_mut(hart).ok_or(SbiError::InvalidParam)?;
                let mut shmem = h.nacl;
                let r = nacl::call(mem, &mut shmem, fid, a);
                h.nacl = shmem;
                r
            }
            abi::EID_CVM_MODEL => self.model_call(fid, a),
            // COVG is only valid from a TVM (Salus: host → NOT_SUPPORTED).
            _ => Err(SbiError::NotSupported),
        }
    }
}

impl Covh for TsmModel {
    fn harts(&self) -> usize {
        self.config.harts
    }

    fn host_ram(&self) -> (u64, u64) {
        self.lock().mem.ram()
    }

    fn ecall(&self, hart: usize, eid: u32, fid: u32, args: [u64; 6]) -> SbiRet {
        self.stats.call(eid_fid_name(eid, fid));
        let r = self.lock().ecall(hart, eid, fid, args);
        tracing::trace!(hart, eid, fid, ?args, ?r, "tsm ecall");
        SbiRet::from_result(r)
    }

    fn trap_csrs(&self, hart: usize) -> TrapCsrs {
        self.lock()
            .harts
            .get(hart)
            .map(|h| h.trap)
            .unwrap_or_default()
    }

    fn host_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        let m = self.lock();
        m.mem.check_host_access(pa, buf.len())?;
        m.mem.read(pa, buf)
    }

    fn host_write(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        let mut m = self.lock();
        m.mem.check_host_access(pa, data.len())?;
        m.mem.write(pa, data)
    }

    fn pin_user_memory(
        &self,
        mem: &GuestMemoryMmap,
        gpa: u64,
        size: u64,
    ) -> Result<u64, HostMemError> {
        self.lock().mem.pin(mem, gpa, size)
    }

    fn unpin_user_memory(&self, pa: u64) -> Result<(), HostMemError> {
        self.lock().mem.unpin(pa)
    }
}
