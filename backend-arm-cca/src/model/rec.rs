//! Realm Execution Contexts: RMI_REC_CREATE / RMI_REC_DESTROY / RMI_REC_AUX_COUNT /
//! RMI_PSCI_COMPLETE and RMI_REC_ENTER — TF-RMM `runtime/rmi/rec.c`, `runtime/rmi/run.c`,
//! `runtime/rsi/psci.c`; spec/cca.md §1.5, §1.6, §3.3.

use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{
    enter_flags, esr, hpfar_to_ipa, mpidr_to_rec_idx, psci, rsi, sas_bytes, sas_mask, GranuleState,
    RealmState, RecEnter, RecExit, RecParams, Ripas, RmiStatus, RsiHostCall, GRANULE_SIZE,
    MAX_REC_AUX_GRANULES, REC_FLAG_RUNNABLE,
};
use crate::model::cpu::Aarch64Cpu;
use crate::model::rmm::{err, ok, ret1, Ret, RmmState};

/// The RIPAS change a REC asked for and how far the host got (TF-RMM `rec->set_ripas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetRipas {
    /// Requested base.
    pub base: u64,
    /// Requested top (0 = none pending).
    pub top: u64,
    /// Progress: first address not yet changed.
    pub addr: u64,
    /// Requested RIPAS.
    pub ripas: Ripas,
    /// RSI_CHANGE_DESTROYED.
    pub change_destroyed: bool,
}

impl Default for SetRipas {
    fn default() -> Self {
        Self {
            base: 0,
            top: 0,
            addr: 0,
            ripas: Ripas::Empty,
            change_destroyed: false,
        }
    }
}

/// What the last exit was, for completing it on the next entry (TF-RMM `rec->last_run_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum LastExit {
    /// Nothing to complete.
    #[default]
    None,
    /// A data/instruction abort with its raw syndrome.
    Abort {
        /// Raw ESR_EL2.
        esr: u64,
        /// Raw FAR_EL2.
        far: u64,
        /// Raw HPFAR_EL2.
        hpfar: u64,
    },
    /// A trapped system-register access forwarded to the host (raw ESR_EL2).
    SysReg {
        /// Raw ESR_EL2.
        esr: u64,
    },
    /// RSI_HOST_CALL with its block at `ipa`.
    HostCall {
        /// IPA of the RsiHostCall block.
        ipa: u64,
    },
    /// RSI_IPA_STATE_SET.
    RipasChange,
}

/// A PSCI request forwarded to the host, waiting for RMI_PSCI_COMPLETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PsciRequest {
    /// CPU_ON(target, entry, context).
    CpuOn {
        /// Target MPIDR.
        target: u64,
        /// Entry point.
        entry: u64,
        /// Context ID (target X0).
        context: u64,
    },
    /// AFFINITY_INFO(target).
    AffinityInfo {
        /// Target MPIDR.
        target: u64,
    },
}

/// A REC, held in its REC granule.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    /// Owning realm's RD.
    pub rd: u64,
    /// MPIDR.
    pub mpidr: u64,
    /// RUNNABLE.
    pub runnable: bool,
    /// Architectural state.
    pub cpu: Aarch64Cpu,
    /// Auxiliary granules.
    pub aux: Vec<u64>,
    /// Completion state of the last exit.
    pub last: LastExit,
    /// Pending RIPAS change.
    pub set_ripas: SetRipas,
    /// Pending PSCI request.
    pub psci: Option<PsciRequest>,
    /// REC_ENTER TRAP_WFI.
    pub trap_wfi: bool,
    /// REC_ENTER TRAP_WFE.
    pub trap_wfe: bool,
}

impl RmmState {
    /// RMI_REC_AUX_COUNT(rd) — TF-RMM always 16 (`MAX_REC_AUX_GRANULES`).
    pub(crate) fn rec_aux_count(&self, rd: u64) -> Ret {
        if !self.realms.contains_key(&rd) {
            return err(RmiStatus::ErrorInput, 0);
        }
        ret1(MAX_REC_AUX_GRANULES as u64)
    }

    /// RMI_REC_CREATE(rd, rec, params_ptr) — TF-RMM `rec.c smc_rec_create`; measured only
    /// when RUNNABLE (spec/cca.md §2.3).
    pub(crate) fn rec_create(&mut self, rd: u64, rec: u64, params_ptr: u64) -> Ret {
        let mut page = [0u8; GRANULE_SIZE as usize];
        if params_ptr % GRANULE_SIZE != 0 || self.mem.ns_read(params_ptr, &mut page).is_err() {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Ok(p) = RecParams::read_from_bytes(&page) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if !self.mem.is(rec, GranuleState::Delegated) || rec == rd {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(realm) = self.realms.get(&rd) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if p.flags & !REC_FLAG_RUNNABLE != 0 {
            return err(RmiStatus::ErrorInput, 0);
        }
        // Aux granules: exactly REC_AUX_COUNT, all DELEGATED and distinct.
        if p.num_aux != MAX_REC_AUX_GRANULES as u64 {
            return err(RmiStatus::ErrorInput, 0);
        }
        let aux = p.aux.to_vec();
        for (i, a) in aux.iter().enumerate() {
            if *a == rec
                || *a == rd
                || !self.mem.is(*a, GranuleState::Delegated)
                || aux[..i].contains(a)
            {
                return err(RmiStatus::ErrorInput, 0);
            }
        }
        // The MPIDR must name the next REC index (rec_idx == rec_count).
        if mpidr_to_rec_idx(p.mpidr) != Some(realm.rec_count) {
            return err(RmiStatus::ErrorInput, 0);
        }
        if realm.state != RealmState::New {
            return err(RmiStatus::ErrorRealm, 0);
        }
        if realm.rec_count >= 1 << self.cfg.max_recs_order {
            return err(RmiStatus::ErrorInput, 0);
        }
        let mut cpu = Aarch64Cpu::new();
        cpu.set_pc(p.pc);
        for (i, v) in p.gprs.iter().enumerate() {
            cpu.set_x(i as u8, *v);
        }
        let runnable = p.flags & REC_FLAG_RUNNABLE != 0;
        if let Some(r) = self.realms.get_mut(&rd) {
            r.rim.extend_rec(p.flags, p.pc, &p.gprs);
            r.rec_count += 1;
            r.recs_alive += 1;
        }
        for a in &aux {
            self.mem.set_state(*a, GranuleState::RecAux);
        }
        self.mem.set_state(rec, GranuleState::Rec);
        self.recs.insert(
            rec,
            Rec {
                rd,
                mpidr: p.mpidr,
                runnable,
                cpu,
                aux,
                last: LastExit::None,
                set_ripas: SetRipas::default(),
                psci: None,
                trap_wfi: false,
                trap_wfe: false,
            },
        );
        ok()
    }

    /// RMI_REC_DESTROY(rec) — TF-RMM `rec.c smc_rec_destroy`.
    pub(crate) fn rec_destroy(&mut self, rec: u64) -> Ret {
        if !self.mem.is(rec, GranuleState::Rec) {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(r) = self.recs.remove(&rec) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        for a in &r.aux {
            self.mem.set_state(*a, GranuleState::Delegated);
        }
        self.mem.set_state(rec, GranuleState::Delegated);
        if let Some(realm) = self.realms.get_mut(&r.rd) {
            realm.recs_alive = realm.recs_alive.saturating_sub(1);
        }
        ok()
    }

    /// RMI_PSCI_COMPLETE(calling, target, status) — TF-RMM `rec.c smc_psci_complete`,
    /// `runtime/rsi/psci.c psci_complete_request`.
    pub(crate) fn psci_complete(&mut self, calling: u64, target: u64, status: u64) -> Ret {
        if calling == target
            || !self.mem.is(calling, GranuleState::Rec)
            || !self.mem.is(target, GranuleState::Rec)
        {
            return err(RmiStatus::ErrorInput, 0);
        }
        let (Some(c), Some(t)) = (self.recs.get(&calling), self.recs.get(&target)) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        if c.rd != t.rd {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Some(req) = c.psci else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let target_mpidr = match req {
            PsciRequest::CpuOn { target, .. } | PsciRequest::AffinityInfo { target } => target,
        };
        if t.mpidr != target_mpidr {
            return err(RmiStatus::ErrorInput, 0);
        }
        // psci_complete_request: CPU_ON may be answered SUCCESS or DENIED, AFFINITY_INFO only
        // SUCCESS.
        let target_on = t.runnable;
        let allowed = match req {
            PsciRequest::CpuOn { .. } => status == psci::SUCCESS || status == psci::DENIED,
            PsciRequest::AffinityInfo { .. } => status == psci::SUCCESS,
        };
        if !allowed {
            return err(RmiStatus::ErrorInput, 0);
        }
        let result = match req {
            PsciRequest::CpuOn { entry, context, .. } => {
                if target_on {
                    psci::ALREADY_ON
                } else if status == psci::SUCCESS {
                    if let Some(t) = self.recs.get_mut(&target) {
                        // psci_reset_rec: the target starts from reset state at `entry`.
                        let mut cpu = Aarch64Cpu::new();
                        cpu.set_pc(entry);
                        cpu.set_x(0, context);
                        t.cpu = cpu;
                        t.runnable = true;
                        t.last = LastExit::None;
                    }
                    psci::SUCCESS
                } else {
                    status
                }
            }
            PsciRequest::AffinityInfo { .. } => {
                if target_on {
                    psci::AFF_ON
                } else {
                    psci::AFF_OFF
                }
            }
        };
        if let Some(c) = self.recs.get_mut(&calling) {
            c.cpu.set_x(0, result);
            c.psci = None;
        }
        ok()
    }

    /// RMI_REC_ENTER(rec, run_ptr) — TF-RMM `run.c smc_rec_enter`. Only the entry half of the
    /// run page is read; the exit half is zeroed at the start and written back only on
    /// success (spec/cca.md §1.6).
    pub(crate) fn rec_enter(&mut self, rec_pa: u64, run_pa: u64) -> Ret {
        let mut page = [0u8; 0x800];
        if !self.mem.is(rec_pa, GranuleState::Rec)
            || run_pa % GRANULE_SIZE != 0
            || self.mem.ns_read(run_pa, &mut page).is_err()
        {
            return err(RmiStatus::ErrorInput, 0);
        }
        let Ok(enter) = RecEnter::read_from_bytes(&page) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let Some(mut rec) = self.recs.remove(&rec_pa) else {
            return err(RmiStatus::ErrorInput, 0);
        };
        let r = self.rec_enter_inner(&mut rec, &enter);
        self.recs.insert(rec_pa, rec);
        match r {
            Ok(exit) => {
                if self.mem.ns_write(run_pa + 0x800, exit.as_bytes()).is_err() {
                    return err(RmiStatus::ErrorInput, 0);
                }
                ok()
            }
            Err(ret) => ret,
        }
    }

    fn rec_enter_inner(&mut self, rec: &mut Rec, enter: &RecEnter) -> Result<RecExit, Ret> {
        let Some(realm) = self.realms.get(&rec.rd) else {
            return Err(err(RmiStatus::ErrorInput, 0));
        };
        match realm.state {
            RealmState::New => return Err(err(RmiStatus::ErrorRealm, 0)),
            RealmState::SystemOff => return Err(err(RmiStatus::ErrorRealm, 1)),
            RealmState::Active => {}
        }
        if !rec.runnable || rec.psci.is_some() {
            return Err(err(RmiStatus::ErrorRec, 0));
        }
        // gic_validate_state: the host may only set the ICH_HCR_EL2 bits it owns (UIE, LRENPIE,
        // NPIE, VGrp{0,1}{E,D}IE: bits [7:1]; TDIR: bit 14) — TF-RMM `lib/gic`.
        if enter.gicv3_hcr & !(0xFE | 1 << 14) != 0 {
            return Err(err(RmiStatus::ErrorRec, 0));
        }
        let flags = enter.flags;
        let abort = match rec.last {
            LastExit::Abort { esr, far, hpfar } if esr::ec(esr) == esr::EC_DABT_LOWER => {
                Some((esr, far, hpfar))
            }
            _ => None,
        };
        // complete_sea_insertion: only for a data abort at an unprotected IPA.
        // complete_mmio_emulation: only for a data abort with ISV; ignored when INJECT_SEA.
        if flags & enter_flags::INJECT_SEA != 0 {
            match abort {
                Some((_, far, hpfar)) if !realm.in_par(hpfar_to_ipa(hpfar)) => {
                    rec.cpu.inject_sea(far);
                }
                _ => return Err(err(RmiStatus::ErrorRec, 0)),
            }
        } else if flags & enter_flags::EMULATED_MMIO != 0 {
            match abort {
                Some((esr, _, _)) if esr::isv(esr) => complete_mmio(rec, esr, enter.gprs[0]),
                _ => return Err(err(RmiStatus::ErrorRec, 0)),
            }
        }
        match rec.last {
            // complete_set_ripas (spec/cca.md §4 step 5).
            LastExit::RipasChange => {
                let s = rec.set_ripas;
                let reject = flags & enter_flags::RIPAS_RESPONSE != 0;
                rec.cpu.set_x(0, rsi::SUCCESS);
                rec.cpu.set_x(1, s.addr);
                let resp = if s.ripas == Ripas::Ram && s.addr != s.top && reject {
                    rsi::REJECT
                } else {
                    rsi::ACCEPT
                };
                rec.cpu.set_x(2, resp);
                rec.set_ripas = SetRipas::default();
            }
            // Sysreg emulation: a read takes entry.gprs[0]; the MRS/MSR completes.
            LastExit::SysReg { esr } => {
                if esr::sysreg_is_read(esr) {
                    rec.cpu.set_x(esr::sysreg_rt(esr), enter.gprs[0]);
                }
                rec.cpu.set_pc(rec.cpu.pc().wrapping_add(4));
            }
            // Host call completion: entry.gprs → the realm's RsiHostCall, X0 = RSI_SUCCESS
            // (`runtime/rsi/host_call.c`).
            LastExit::HostCall { ipa } => {
                let status = match self.realm_pa(rec.rd, ipa) {
                    Some(pa) => {
                        let mut block = [0u8; 0x100];
                        let off = (ipa % GRANULE_SIZE) as usize;
                        self.mem.read_granule(pa, off, &mut block);
                        match RsiHostCall::read_from_bytes(&block) {
                            Ok(mut hc) => {
                                hc.gprs = enter.gprs;
                                self.mem.write_granule(pa, off, hc.as_bytes());
                                rsi::SUCCESS
                            }
                            Err(_) => rsi::ERROR_INPUT,
                        }
                    }
                    None => rsi::ERROR_INPUT,
                };
                rec.cpu.set_x(0, status);
            }
            LastExit::Abort { .. } | LastExit::None => {}
        }
        rec.trap_wfi = flags & enter_flags::TRAP_WFI != 0;
        rec.trap_wfe = flags & enter_flags::TRAP_WFE != 0;
        rec.last = LastExit::None;
        Ok(self.run_rec(rec))
    }

    /// The PA of protected RAM at `ipa` if it is ASSIGNED_RAM (for RMM accesses to realm
    /// memory on the realm's behalf).
    pub(crate) fn realm_pa(&self, rd: u64, ipa: u64) -> Option<u64> {
        let realm = self.realms.get(&rd)?;
        if !realm.in_par(ipa) {
            return None;
        }
        let w = self.walk(realm, ipa, crate::model::rtt::PAGE_LEVEL)?;
        match w.entry {
            crate::model::rtt::Rtte::Assigned {
                pa,
                ripas: Ripas::Ram,
            } => {
                let size = crate::model::rtt::map_size(w.level);
                Some((pa + (ipa & (size - 1))) & !(GRANULE_SIZE - 1))
            }
            _ => None,
        }
    }
}

/// `complete_mmio_emulation` (spec/cca.md §3.3): a read writes `X[SRT]` with the masked,
/// optionally sign-extended value (never XZR); read or write, PC advances by 4.
fn complete_mmio(rec: &mut Rec, esr_raw: u64, value: u64) {
    let srt = esr::srt(esr_raw);
    if !esr::wnr(esr_raw) && srt != 31 {
        let sas = esr::sas(esr_raw);
        let mut v = value & sas_mask(sas);
        if esr::sse(esr_raw) {
            v = cvm_core::sign_extend(v, sas_bytes(sas));
            if !esr::sf(esr_raw) {
                v &= 0xFFFF_FFFF;
            }
        }
        rec.cpu.set_x(srt, v);
    }
    rec.cpu.set_pc(rec.cpu.pc().wrapping_add(4));
}
