//! Running a REC and turning what the guest CPU raises into REC exits — TF-RMM
//! `runtime/core/exit.c` (`handle_realm_exit`, `handle_data_abort`, `handle_instruction_abort`),
//! `runtime/core/sysregs.c`; spec/cca.md §3.2.
//!
//! | CPU exit | RMM action |
//! |---|---|
//! | data abort, IPA ≥ 2^s2sz or protected with RIPAS EMPTY | inject SEA into the realm, no exit |
//! | data abort, external (DFSC SEA) | exit SYNC, esr & NONEMU, far = hpfar = 0; SEA injected too |
//! | data abort, protected (RAM unassigned, DESTROYED) | exit SYNC, esr & NONEMU, far 0, hpfar raw |
//! | data abort, unprotected, ISV = 1 | exit SYNC, esr & EMU, far & 0xFFF, hpfar raw, gprs\[0\] = write value |
//! | data abort, unprotected, ISV = 0 | exit SYNC, esr & NONEMU, far 0, hpfar raw |
//! | instruction abort, protected RAM unassigned | exit SYNC, esr & NONEMU, hpfar raw |
//! | instruction abort, elsewhere | inject instruction-abort SEA, no exit |
//! | SMC | RSI / PSCI / SMCCC ([`super::rsi`]) |
//! | HVC | inject UNDEF (spec/cca.md §4) |
//! | WFI / WFE | exit SYNC (EC WFx) if the host set TRAP_WFI / TRAP_WFE, else a no-op |
//! | MRS of an ID register (Op0 3, Op1 0, CRn 0, CRm 1..7) | exit SYNC (EC 0x18, Rt cleared) |
//! | MRS MIDR / MPIDR / REVIDR | answered by the RMM |
//! | MRS RNDR / RNDRRS (trapped or undefined) | answered from the model DRBG |
//! | any other trap or UNDEFINED instruction | inject UNDEF |
//! | instruction budget spent | exit IRQ (the host timer) |

use std::collections::BTreeMap;

use crate::abi::{
    esr, exit_reason, fault_ipa, sas_mask, RecExit, Ripas, ESR_EMU_MASK, ESR_NONEMU_MASK,
    GRANULE_SIZE,
};
use crate::model::cpu::{Bus, BusFault, Exit};
use crate::model::granule::PhysMem;
use crate::model::realm::Realm;
use crate::model::rec::{LastExit, Rec};
use crate::model::rmm::RmmState;
use crate::model::rtt::{map_size, walk_in, Rtt, Rtte, DESC_OA_MASK, PAGE_LEVEL};

/// Exceptions the RMM may inject in one REC_ENTER before it gives the host an IRQ exit (a
/// realm stuck in a fault loop never starves the host).
const MAX_EVENTS: u32 = 4096;

/// MIDR_EL1 the model reports (Arm Ltd, architecture "see ID registers", a made-up part).
pub const MODEL_MIDR: u64 = 0x410F_D490;

/// Where an IPA leads for a CPU access.
enum Target {
    /// Realm DATA granule memory at this PA.
    Realm(u64),
    /// Host memory at this PA (ASSIGNED_NS).
    Ns(u64),
    /// Stage-2 translation fault at this level.
    Fault(u8),
}

fn translate(rtts: &BTreeMap<u64, Rtt>, realm: &Realm, ipa: u64) -> Target {
    let Some(w) = walk_in(rtts, realm, ipa, PAGE_LEVEL) else {
        return Target::Fault(0);
    };
    let off = ipa & (map_size(w.level) - 1);
    match w.entry {
        Rtte::Assigned {
            pa,
            ripas: Ripas::Ram,
        } => Target::Realm(pa + off),
        Rtte::AssignedNs { desc } => Target::Ns((desc & DESC_OA_MASK) + off),
        _ => Target::Fault(w.level.max(0) as u8),
    }
}

/// The realm's stage 2 as the guest CPU sees it.
struct RealmBus<'a> {
    rtts: &'a BTreeMap<u64, Rtt>,
    realm: &'a Realm,
    mem: &'a mut PhysMem,
}

impl RealmBus<'_> {
    fn access(&mut self, addr: u64, buf: &mut [u8], write: Option<&[u8]>) -> Result<(), BusFault> {
        let len = buf.len() as u64;
        if (addr % GRANULE_SIZE) + len > GRANULE_SIZE {
            // Crosses a granule: byte by byte (each byte translated on its own).
            for i in 0..buf.len() {
                let a = addr.wrapping_add(i as u64);
                let w = write.map(|w| &w[i..=i]);
                self.access(a, &mut buf[i..=i], w)?;
            }
            return Ok(());
        }
        match translate(self.rtts, self.realm, addr) {
            Target::Realm(pa) => {
                let base = pa & !(GRANULE_SIZE - 1);
                let off = (pa - base) as usize;
                let done = match write {
                    Some(w) => self.mem.write_granule(base, off, w),
                    None => self.mem.read_granule(base, off, buf),
                };
                if done {
                    Ok(())
                } else {
                    Err(BusFault::External)
                }
            }
            Target::Ns(pa) => match write {
                Some(w) => self.mem.ns_write(pa, w).map_err(|_| BusFault::External),
                None => self.mem.ns_read(pa, buf).map_err(|_| BusFault::External),
            },
            Target::Fault(level) => Err(BusFault::Translation { level }),
        }
    }
}

impl Bus for RealmBus<'_> {
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault> {
        let mut b = [0u8; 8];
        let n = usize::from(size.clamp(1, 8));
        self.access(addr, &mut b[..n], None)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault> {
        let n = usize::from(size.clamp(1, 8));
        let bytes = value.to_le_bytes();
        let mut scratch = [0u8; 8];
        self.access(addr, &mut scratch[..n], Some(&bytes[..n]))
    }

    fn fetch(&mut self, addr: u64) -> Result<u32, BusFault> {
        // Unprotected (NS) memory is never executable for a realm: only realm RAM is fetched.
        match translate(self.rtts, self.realm, addr) {
            Target::Realm(_) => self.read(addr, 4).map(|v| v as u32),
            Target::Ns(_) => Err(BusFault::Translation {
                level: PAGE_LEVEL as u8,
            }),
            Target::Fault(level) => Err(BusFault::Translation { level }),
        }
    }
}

/// What the RMM does after handling one CPU exit.
pub(crate) enum Step {
    /// Resume the realm.
    Continue,
    /// Return to the host with the exit filled in.
    Exit,
}

impl RmmState {
    /// Runs `rec` until something needs the host; returns the REC exit (zeroed first).
    pub(crate) fn run_rec(&mut self, rec: &mut Rec) -> RecExit {
        let mut exit = RecExit::zeroed();
        // The instruction budget is per REC_ENTER, shared by every run between the events the
        // RMM handles in place (RmmConfig::budget): a realm that traps every few thousand
        // instructions must not run MAX_EVENTS budgets before the host's timer exit.
        let mut left = self.cfg.budget;
        for _ in 0..MAX_EVENTS {
            if left == 0 {
                break;
            }
            let before = rec.cpu.instructions_retired();
            let cpu_exit = {
                let Some(realm) = self.realms.get(&rec.rd) else {
                    exit.exit_reason = exit_reason::IRQ;
                    return exit;
                };
                let mut bus = RealmBus {
                    rtts: &self.rtts,
                    realm,
                    mem: &mut self.mem,
                };
                rec.cpu.run(&mut bus, left)
            };
            // Every event costs at least one step, even one that retired nothing.
            let ran = rec.cpu.instructions_retired().wrapping_sub(before);
            left = left.saturating_sub(ran.max(1));
            let step = match cpu_exit {
                Exit::Budget => {
                    exit.exit_reason = exit_reason::IRQ;
                    Step::Exit
                }
                Exit::DataAbort { esr, far, hpfar } => {
                    self.data_abort(rec, &mut exit, esr, far, hpfar)
                }
                Exit::InstructionAbort { esr, far, hpfar } => {
                    self.instruction_abort(rec, &mut exit, esr, far, hpfar)
                }
                Exit::Smc { .. } => self.handle_smc(rec, &mut exit),
                Exit::Hvc { .. } => {
                    // HVC from a realm: UNDEF at the HVC (its preferred return address).
                    rec.cpu.set_pc(rec.cpu.pc().wrapping_sub(4));
                    rec.cpu.inject_undef();
                    Step::Continue
                }
                Exit::Wfx { wfe } => {
                    rec.cpu.set_pc(rec.cpu.pc().wrapping_add(4));
                    if (wfe && rec.trap_wfe) || (!wfe && rec.trap_wfi) {
                        exit.exit_reason = exit_reason::SYNC;
                        exit.esr = esr::build(esr::EC_WFX, true, u64::from(wfe))
                            & (crate::abi::ESR_EC_MASK | 1);
                        Step::Exit
                    } else {
                        // Not trapped: WFI/WFE may complete at once (no interrupt model).
                        Step::Continue
                    }
                }
                Exit::SysReg { esr } => self.sysreg_trap(rec, &mut exit, esr),
                Exit::Undefined { insn, .. } => {
                    if let Some(rt) = rndr_target(insn) {
                        self.rndr(rec, rt);
                    } else {
                        rec.cpu.inject_undef();
                    }
                    Step::Continue
                }
            };
            if let Step::Exit = step {
                return exit;
            }
        }
        exit.exit_reason = exit_reason::IRQ;
        exit
    }

    fn ripas_at(&self, realm: &Realm, ipa: u64) -> Option<Ripas> {
        match self.walk(realm, ipa, PAGE_LEVEL)?.entry {
            Rtte::Unassigned(r) | Rtte::Assigned { ripas: r, .. } => Some(r),
            _ => None,
        }
    }

    /// `handle_data_abort` (spec/cca.md §3.2).
    fn data_abort(
        &mut self,
        rec: &mut Rec,
        exit: &mut RecExit,
        esr: u64,
        far: u64,
        hpfar: u64,
    ) -> Step {
        let ipa = fault_ipa(hpfar, far);
        let Some(realm) = self.realms.get(&rec.rd) else {
            return Step::Continue;
        };
        if ipa >= realm.ipa_size() {
            rec.cpu.inject_sea(far);
            return Step::Continue;
        }
        let protected = realm.in_par(ipa);
        if protected && self.ripas_at(realm, ipa) == Some(Ripas::Empty) {
            rec.cpu.inject_sea(far);
            return Step::Continue;
        }
        exit.exit_reason = exit_reason::SYNC;
        rec.last = LastExit::Abort { esr, far, hpfar };
        if esr::dfsc(esr) == esr::DFSC_SEA {
            // External abort: reported without FAR/HPFAR; the realm takes the SEA too.
            exit.esr = esr & ESR_NONEMU_MASK;
            rec.cpu.inject_sea(far);
            rec.last = LastExit::None;
            return Step::Exit;
        }
        exit.hpfar = hpfar;
        if !protected && esr::isv(esr) {
            exit.esr = esr & ESR_EMU_MASK;
            exit.far = far & 0xFFF;
            let srt = esr::srt(esr);
            if esr::wnr(esr) && srt != 31 {
                exit.gprs[0] = rec.cpu.x(srt) & sas_mask(esr::sas(esr));
            }
        } else {
            exit.esr = esr & ESR_NONEMU_MASK;
        }
        Step::Exit
    }

    /// `handle_instruction_abort`: a fetch from unassigned protected RAM goes to the host;
    /// anything else (EMPTY, unprotected, beyond the IPA space) is an SEA in the realm.
    fn instruction_abort(
        &mut self,
        rec: &mut Rec,
        exit: &mut RecExit,
        esr: u64,
        far: u64,
        hpfar: u64,
    ) -> Step {
        let ipa = fault_ipa(hpfar, far);
        let host = self.realms.get(&rec.rd).is_some_and(|realm| {
            ipa < realm.ipa_size()
                && realm.in_par(ipa)
                && matches!(
                    self.ripas_at(realm, ipa),
                    Some(Ripas::Ram | Ripas::Destroyed)
                )
        });
        if host && esr::dfsc(esr) != esr::DFSC_SEA {
            exit.exit_reason = exit_reason::SYNC;
            exit.esr = esr & ESR_NONEMU_MASK;
            exit.hpfar = hpfar;
            rec.last = LastExit::Abort { esr, far, hpfar };
            return Step::Exit;
        }
        let sea = esr::build(esr::EC_IABT_CUR, true, u64::from(esr::DFSC_SEA));
        rec.cpu.take_exception_el1(sea, far);
        Step::Continue
    }

    /// Trapped MSR/MRS (EC 0x18) — `sysregs.c`.
    fn sysreg_trap(&mut self, rec: &mut Rec, exit: &mut RecExit, esr: u64) -> Step {
        let key = (
            esr::sysreg_op0(esr),
            esr::sysreg_op1(esr),
            esr::sysreg_crn(esr),
            esr::sysreg_crm(esr),
            esr::sysreg_op2(esr),
        );
        let read = esr::sysreg_is_read(esr);
        let rt = esr::sysreg_rt(esr);
        let advance = |rec: &mut Rec, v: u64| {
            rec.cpu.set_x(rt, v);
            rec.cpu.set_pc(rec.cpu.pc().wrapping_add(4));
        };
        match key {
            // RNDR / RNDRRS.
            (3, 3, 2, 4, 0 | 1) if read => {
                self.rndr(rec, rt);
                Step::Continue
            }
            // MIDR_EL1, MPIDR_EL1 (RES1 bit 31 | the REC's MPIDR), REVIDR_EL1, others RAZ.
            (3, 0, 0, 0, op2) if read => {
                let v = match op2 {
                    0 => MODEL_MIDR,
                    5 => (1 << 31) | rec.mpidr,
                    _ => 0,
                };
                advance(rec, v);
                Step::Continue
            }
            // The feature ID space goes to the host, which answers from the VM's ID registers
            // (the KVM path `rec_exit_sys_reg`; model decision — TF-RMM 1.0 answers these from
            // its own sanitised copy). Rt is cleared: the value travels in GPRS[0].
            (3, 0, 0, 1..=7, _) if read => {
                exit.exit_reason = exit_reason::SYNC;
                exit.esr = esr & !(0x1F << 5) & !esr::IL;
                rec.last = LastExit::SysReg { esr };
                Step::Exit
            }
            _ => {
                rec.cpu.inject_undef();
                Step::Continue
            }
        }
    }

    /// MRS Xt, RNDR: the model's deterministic DRBG (SHA-256 in counter mode over the realm's
    /// VMID). Model decision: on hardware the PE implements FEAT_RNG. NZCV = 0 (success).
    fn rndr(&mut self, rec: &mut Rec, rt: u8) {
        let v = match self.realms.get_mut(&rec.rd) {
            Some(realm) => {
                realm.rng_counter += 1;
                let d = cvm_core::HashAlgorithm::Sha256.digest(&[
                    b"cvm-cca-model-rndr",
                    &realm.vmid.to_le_bytes(),
                    &realm.rng_counter.to_le_bytes(),
                ]);
                let mut w = [0u8; 8];
                w.copy_from_slice(&d[..8]);
                u64::from_le_bytes(w)
            }
            None => 0,
        };
        rec.cpu.set_x(rt, v);
        rec.cpu.set_nzcv(0);
        rec.cpu.set_pc(rec.cpu.pc().wrapping_add(4));
    }
}

/// Rt of `MRS Xt, RNDR` (0xD53B2400 | Rt) or `MRS Xt, RNDRRS` (0xD53B2420 | Rt).
pub fn rndr_target(insn: u32) -> Option<u8> {
    match insn & !0x1F {
        0xD53B_2400 | 0xD53B_2420 => Some((insn & 0x1F) as u8),
        _ => None,
    }
}
