//! SMCs from the realm: RSI 1.0, PSCI 1.1 and SMCCC — TF-RMM `runtime/core/exit.c
//! handle_realm_rsi`, `runtime/rsi/*.c` (`system.c`, `realm_attest.c`, `memory.c`,
//! `host_call.c`, `psci.c`, `config.c`); spec/cca.md §4, §1.6 (PSCI/host-call exits).
//!
//! PC handling: the CPU stops at the SMC; a handled call advances PC by 4. A call that must
//! first have its buffer mapped by the host (RSI_REALM_CONFIG / RSI_HOST_CALL on unassigned
//! RAM) leaves PC at the SMC and exits as a stage-2 data abort, so the realm re-issues it.

use zerocopy::{FromBytes, IntoBytes};

use crate::abi::{
    esr, exit_reason, mpidr_to_rec_idx, psci, rsi, GranuleState, RealmState, RecExit, Ripas,
    RsiHostCall, RsiRealmConfig, ESR_NONEMU_MASK, GRANULE_SIZE, MAX_MEASUREMENT_SIZE,
};
use crate::model::exit::Step;
use crate::model::rec::{LastExit, PsciRequest, Rec, SetRipas};
use crate::model::rmm::RmmState;
use crate::model::rtt::{map_size, Rtte, PAGE_LEVEL};

/// Result of looking up a realm buffer for an RSI call.
enum Buffer {
    /// ASSIGNED_RAM granule.
    Ready(u64),
    /// UNASSIGNED RAM: the host must map it (stage-2 fault at `level`).
    Fault(u8),
    /// Not usable (EMPTY, DESTROYED, unprotected): RSI_ERROR_INPUT.
    Invalid,
}

impl RmmState {
    fn buffer(&self, rd: u64, ipa: u64) -> Buffer {
        let Some(realm) = self.realms.get(&rd) else {
            return Buffer::Invalid;
        };
        if !realm.in_par(ipa) {
            return Buffer::Invalid;
        }
        let Some(w) = self.walk(realm, ipa, PAGE_LEVEL) else {
            return Buffer::Invalid;
        };
        match w.entry {
            Rtte::Assigned {
                pa,
                ripas: Ripas::Ram,
            } => {
                let p = pa + (ipa & (map_size(w.level) - 1));
                if self.mem.is(p & !(GRANULE_SIZE - 1), GranuleState::Data) {
                    Buffer::Ready(p & !(GRANULE_SIZE - 1))
                } else {
                    Buffer::Invalid
                }
            }
            Rtte::Unassigned(Ripas::Ram) => Buffer::Fault(w.level.max(0) as u8),
            _ => Buffer::Invalid,
        }
    }

    /// Emulates a stage-2 data abort on `ipa` so the host maps the realm's buffer (TF-RMM
    /// `rsi_*` "emulate_stage2_data_abort"); PC stays at the SMC.
    fn buffer_fault(rec: &mut Rec, exit: &mut RecExit, ipa: u64, level: u8) -> Step {
        let iss = u64::from(esr::DFSC_TRANSLATION_L0 + (level & 3));
        let raw = esr::build(esr::EC_DABT_LOWER, true, iss);
        let hpfar = esr::hpfar(ipa);
        exit.exit_reason = exit_reason::SYNC;
        exit.esr = raw & ESR_NONEMU_MASK;
        exit.hpfar = hpfar;
        rec.last = LastExit::Abort {
            esr: raw,
            far: ipa,
            hpfar,
        };
        Step::Exit
    }

    /// Handles the SMC the REC stopped at.
    pub(crate) fn handle_smc(&mut self, rec: &mut Rec, exit: &mut RecExit) -> Step {
        let regs: [u64; 11] = core::array::from_fn(|i| rec.cpu.x(i as u8));
        let fid = regs[0];
        let (a1, a2, a3, a4) = (regs[1], regs[2], regs[3], regs[4]);
        let pc = rec.cpu.pc();
        let rd = rec.rd;
        // Results written back to X0..; `None` = not set.
        let mut out: [Option<u64>; 9] = [None; 9];
        let mut step = Step::Continue;
        match fid {
            rsi::VERSION => {
                // `system.c`: SUCCESS iff the requested version is 1.0; X1 = X2 = 1.0.
                out[0] = Some(if a1 == rsi::ABI_VERSION {
                    rsi::SUCCESS
                } else {
                    rsi::ERROR_INPUT
                });
                out[1] = Some(rsi::ABI_VERSION);
                out[2] = Some(rsi::ABI_VERSION);
            }
            rsi::FEATURES => {
                out[0] = Some(rsi::SUCCESS);
                out[1] = Some(0);
            }
            rsi::MEASUREMENT_READ => {
                // `realm_attest.c`: index 0 = RIM, 1..4 = REM; 64 bytes in X1..X8.
                let slot = self.realms.get(&rd).and_then(|r| match a1 {
                    0 => Some(*r.rim.slot()),
                    1..=4 => r.rems.slot(a1 as usize).copied(),
                    _ => None,
                });
                match slot {
                    Some(s) => {
                        out[0] = Some(rsi::SUCCESS);
                        for (i, w) in s.chunks_exact(8).enumerate() {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(w);
                            out[i + 1] = Some(u64::from_le_bytes(b));
                        }
                    }
                    None => out[0] = Some(rsi::ERROR_INPUT),
                }
            }
            rsi::MEASUREMENT_EXTEND => {
                // index 1..4, size <= 64, value in X3..X10 (little-endian words).
                let mut value = [0u8; MAX_MEASUREMENT_SIZE];
                for (chunk, r) in value.chunks_exact_mut(8).zip(&regs[3..11]) {
                    chunk.copy_from_slice(&r.to_le_bytes());
                }
                let r = match (self.realms.get_mut(&rd), usize::try_from(a2)) {
                    (Some(realm), Ok(size)) if size <= MAX_MEASUREMENT_SIZE => {
                        realm.rems.extend(a1, &value[..size]).is_ok()
                    }
                    _ => false,
                };
                out[0] = Some(if r { rsi::SUCCESS } else { rsi::ERROR_INPUT });
            }
            rsi::REALM_CONFIG => {
                // `config.c`: a 4 KiB-aligned protected RAM buffer receives RsiRealmConfig.
                if a1 % GRANULE_SIZE != 0 {
                    out[0] = Some(rsi::ERROR_INPUT);
                } else {
                    match self.buffer(rd, a1) {
                        Buffer::Ready(pa) => {
                            let mut c = RsiRealmConfig::zeroed();
                            if let Some(realm) = self.realms.get(&rd) {
                                c.ipa_width = u64::from(realm.s2sz);
                                c.hash_algo = match realm.algorithm {
                                    cvm_core::HashAlgorithm::Sha512 => 1,
                                    _ => 0,
                                };
                                c.rpv = realm.rpv;
                            }
                            self.mem.write_granule(pa, 0, c.as_bytes());
                            out[0] = Some(rsi::SUCCESS);
                        }
                        Buffer::Fault(level) => return Self::buffer_fault(rec, exit, a1, level),
                        Buffer::Invalid => out[0] = Some(rsi::ERROR_INPUT),
                    }
                }
            }
            rsi::IPA_STATE_SET => {
                // `memory.c`: validate, record set_ripas, exit RIPAS_CHANGE.
                let valid = self.realms.get(&rd).is_some_and(|r| {
                    a1 % GRANULE_SIZE == 0
                        && a2 % GRANULE_SIZE == 0
                        && a2 > a1
                        && a2 <= r.par_size()
                        && a3 <= Ripas::Ram as u64
                        && a4 & !rsi::CHANGE_DESTROYED == 0
                });
                if valid {
                    let ripas = if a3 == Ripas::Ram as u64 {
                        Ripas::Ram
                    } else {
                        Ripas::Empty
                    };
                    rec.set_ripas = SetRipas {
                        base: a1,
                        top: a2,
                        addr: a1,
                        ripas,
                        change_destroyed: a4 & rsi::CHANGE_DESTROYED != 0,
                    };
                    rec.last = LastExit::RipasChange;
                    exit.exit_reason = exit_reason::RIPAS_CHANGE;
                    exit.ripas_base = a1;
                    exit.ripas_top = a2;
                    exit.ripas_value = ripas as u8;
                    step = Step::Exit;
                } else {
                    out[0] = Some(rsi::ERROR_INPUT);
                }
            }
            rsi::IPA_STATE_GET => {
                // RSI 1.0 (base, end) → X1 top of the run with the same RIPAS, X2 the RIPAS.
                match self.ipa_state_get(rd, a1, a2) {
                    Some((top, ripas)) => {
                        out[0] = Some(rsi::SUCCESS);
                        out[1] = Some(top);
                        out[2] = Some(ripas as u64);
                    }
                    None => out[0] = Some(rsi::ERROR_INPUT),
                }
            }
            rsi::HOST_CALL => {
                // `host_call.c`: 256-byte aligned RsiHostCall in protected RAM.
                if a1 % 0x100 != 0 {
                    out[0] = Some(rsi::ERROR_INPUT);
                } else {
                    match self.buffer(rd, a1) {
                        Buffer::Ready(pa) => {
                            let mut block = [0u8; 0x100];
                            self.mem
                                .read_granule(pa, (a1 % GRANULE_SIZE) as usize, &mut block);
                            match RsiHostCall::read_from_bytes(&block) {
                                Ok(hc) => {
                                    exit.exit_reason = exit_reason::HOST_CALL;
                                    exit.imm = u32::from(hc.imm);
                                    exit.gprs = hc.gprs;
                                    rec.last = LastExit::HostCall { ipa: a1 };
                                    step = Step::Exit;
                                }
                                Err(_) => out[0] = Some(rsi::ERROR_INPUT),
                            }
                        }
                        Buffer::Fault(level) => return Self::buffer_fault(rec, exit, a1, level),
                        Buffer::Invalid => out[0] = Some(rsi::ERROR_INPUT),
                    }
                }
            }
            rsi::ATTESTATION_TOKEN_INIT | rsi::ATTESTATION_TOKEN_CONTINUE => {
                // Attestation tokens are not modelled.
                out[0] = Some(rsi::ERROR_UNKNOWN);
            }
            psci::SMCCC_VERSION => out[0] = Some(psci::SMCCC_1_2),
            psci::SMCCC_ARCH_FEATURES => out[0] = Some(psci::NOT_SUPPORTED),
            psci::VERSION => out[0] = Some(psci::PSCI_1_1),
            psci::FEATURES => {
                out[0] = Some(match a1 {
                    psci::VERSION
                    | psci::CPU_SUSPEND_32
                    | psci::CPU_SUSPEND_64
                    | psci::CPU_OFF
                    | psci::CPU_ON_32
                    | psci::CPU_ON_64
                    | psci::AFFINITY_INFO_32
                    | psci::AFFINITY_INFO_64
                    | psci::SYSTEM_OFF
                    | psci::SYSTEM_RESET
                    | psci::FEATURES
                    | psci::SMCCC_VERSION => psci::SUCCESS,
                    _ => psci::NOT_SUPPORTED,
                });
            }
            psci::CPU_SUSPEND_32 | psci::CPU_SUSPEND_64 => {
                // Forwarded to the host as a hint; the realm sees SUCCESS.
                out[0] = Some(psci::SUCCESS);
                psci_exit(exit, [fid, a1, a2, a3]);
                step = Step::Exit;
            }
            psci::CPU_OFF => {
                rec.runnable = false;
                out[0] = Some(psci::SUCCESS);
                psci_exit(exit, [fid, a1, a2, a3]);
                step = Step::Exit;
            }
            psci::SYSTEM_OFF | psci::SYSTEM_RESET => {
                if let Some(r) = self.realms.get_mut(&rd) {
                    r.state = RealmState::SystemOff;
                }
                psci_exit(exit, [fid, a1, a2, a3]);
                step = Step::Exit;
            }
            psci::CPU_ON_32 | psci::CPU_ON_64 | psci::AFFINITY_INFO_32 | psci::AFFINITY_INFO_64 => {
                let is_on = matches!(fid, psci::CPU_ON_32 | psci::CPU_ON_64);
                let (target, entry) = if fid == psci::CPU_ON_32 || fid == psci::AFFINITY_INFO_32 {
                    (a1 & 0xFFFF_FFFF, a2 & 0xFFFF_FFFF)
                } else {
                    (a1, a2)
                };
                let realm = self.realms.get(&rd);
                let target_idx = mpidr_to_rec_idx(target);
                let valid_target = target_idx.zip(realm).is_some_and(|(i, r)| i < r.rec_count);
                // TF-RMM `psci.c psci_cpu_on` / `psci_affinity_info`, in their order: the entry
                // point must be protected (CPU_ON), the lowest affinity level 0
                // (AFFINITY_INFO), the target a REC of the realm; a REC naming itself is
                // answered at once (ALREADY_ON / ON) without a host exit, since RMI_PSCI_COMPLETE
                // cannot name the same REC twice.
                if is_on && !realm.is_some_and(|r| r.in_par(entry)) {
                    // PSCI_INVALID_ADDRESS (-9).
                    out[0] = Some(-9i64 as u64);
                } else if !valid_target || (!is_on && a2 != 0) {
                    out[0] = Some(psci::INVALID_PARAMETERS);
                } else if target_idx == mpidr_to_rec_idx(rec.mpidr) {
                    out[0] = Some(if is_on {
                        psci::ALREADY_ON
                    } else {
                        psci::AFF_ON
                    });
                } else {
                    rec.psci = Some(if is_on {
                        PsciRequest::CpuOn {
                            target,
                            entry,
                            context: a3,
                        }
                    } else {
                        PsciRequest::AffinityInfo { target }
                    });
                    psci_exit(exit, [fid, a1, a2, a3]);
                    step = Step::Exit;
                }
            }
            _ => out[0] = Some(crate::abi::SMC_UNKNOWN),
        }
        for (i, v) in out.iter().enumerate() {
            if let Some(v) = v {
                rec.cpu.set_x(i as u8, *v);
            }
        }
        rec.cpu.set_pc(pc.wrapping_add(4));
        step
    }

    fn ipa_state_get(&self, rd: u64, base: u64, end: u64) -> Option<(u64, Ripas)> {
        let realm = self.realms.get(&rd)?;
        if base % GRANULE_SIZE != 0
            || end % GRANULE_SIZE != 0
            || end <= base
            || end > realm.par_size()
        {
            return None;
        }
        let ripas_of = |ipa: u64| -> Option<(Ripas, u64)> {
            let w = self.walk(realm, ipa, PAGE_LEVEL)?;
            let size = map_size(w.level);
            let r = match w.entry {
                Rtte::Unassigned(r) | Rtte::Assigned { ripas: r, .. } => r,
                _ => Ripas::Empty,
            };
            Some((r, (ipa & !(size - 1)) + size))
        };
        let (first, mut top) = ripas_of(base)?;
        while top < end {
            let (r, next) = ripas_of(top)?;
            if r != first {
                break;
            }
            top = next;
        }
        Some((top.min(end), first))
    }
}

/// PSCI exit: gprs[0..3] = X0..X3 of the call, the rest zero (`psci.c forward_args_to_host`).
fn psci_exit(exit: &mut RecExit, args: [u64; 4]) {
    exit.exit_reason = exit_reason::PSCI;
    exit.gprs[..4].copy_from_slice(&args);
}
