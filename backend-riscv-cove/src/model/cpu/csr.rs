//! The VS-level CSR file and guest CSR-instruction semantics.
//!
//! Privileged spec: "CSR Address Mapping Conventions" (bits 11:10 read-only, bits 9:8 lowest
//! privilege), "Supervisor CSRs", "Hypervisor and Virtual Supervisor CSRs" (with V=1 the
//! S-level CSR numbers access the VS CSRs; VS CSR/HS CSR numbers raise virtual-instruction)
//! and the H-extension "Traps" list of virtual-instruction conditions. Zkr: Cryptography
//! Extensions Vol. I, "4.1 The seed CSR" and "4.3" access control.

use super::decode::{CsrAccess, CsrOp, CsrSrc};
use super::trap::Cur;
use super::{Mode, Rv64Cpu, Trap};

/// `sstatus`.
pub const SSTATUS: u16 = 0x100;
/// `sie`.
pub const SIE: u16 = 0x104;
/// `stvec`.
pub const STVEC: u16 = 0x105;
/// `scounteren`.
pub const SCOUNTEREN: u16 = 0x106;
/// `senvcfg`.
pub const SENVCFG: u16 = 0x10A;
/// `sscratch`.
pub const SSCRATCH: u16 = 0x140;
/// `sepc`.
pub const SEPC: u16 = 0x141;
/// `scause`.
pub const SCAUSE: u16 = 0x142;
/// `stval`.
pub const STVAL: u16 = 0x143;
/// `sip`.
pub const SIP: u16 = 0x144;
/// `satp`.
pub const SATP: u16 = 0x180;
/// `seed` (Zkr).
pub const SEED: u16 = 0x015;
/// `cycle` (read-only).
pub const CYCLE: u16 = 0xC00;
/// `time` (read-only).
pub const TIME: u16 = 0xC01;
/// `instret` (read-only).
pub const INSTRET: u16 = 0xC02;

/// `sstatus.SIE`.
pub const SSTATUS_SIE: u64 = 1 << 1;
/// `sstatus.SPIE`.
pub const SSTATUS_SPIE: u64 = 1 << 5;
/// `sstatus.SPP`.
pub const SSTATUS_SPP: u64 = 1 << 8;
/// `sstatus.SUM`.
pub const SSTATUS_SUM: u64 = 1 << 18;
/// `sstatus.MXR`.
pub const SSTATUS_MXR: u64 = 1 << 19;
/// `sstatus.UXL` = 2 (64-bit), read-only.
pub const SSTATUS_UXL64: u64 = 2 << 32;
/// Writable `sstatus` bits: FS/VS/XS are read-only 0 (no F/V), UBE is read-only 0
/// (little-endian only), UXL read-only 64-bit.
const SSTATUS_WMASK: u64 = SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_SPP | SSTATUS_SUM | SSTATUS_MXR;
/// SSIE/SSIP, STIE/STIP, SEIE/SEIP.
const SI_MASK: u64 = (1 << 1) | (1 << 5) | (1 << 9);
/// The guest may only write `sip.SSIP` (STIP/SEIP are read-only, driven by the hypervisor).
const SIP_GUEST_WMASK: u64 = 1 << 1;
/// `senvcfg.FIOM`.
const SENVCFG_FIOM: u64 = 1;
/// `senvcfg.PMM` (Ssnpm, bits 33:32).
const SENVCFG_PMM: u64 = 3 << 32;

/// H-extension and VS CSRs an HS-mode hypervisor implements on RV64: accessing them from
/// V=1 raises virtual-instruction (when HS could do the same access).
const HYPERVISOR_CSRS: &[u16] = &[
    0x600, 0x602, 0x603, 0x604, 0x605, 0x606, 0x607, 0x60A, 0x643, 0x644, 0x645, 0x64A, 0x680,
    0xE12, // hgeip (read-only)
    0x200, 0x204, 0x205, 0x240, 0x241, 0x242, 0x243, 0x244, 0x280,
];

/// Outcome of the privilege check of a CSR access.
enum Check {
    Ok,
    Illegal,
    Virtual,
}

impl Rv64Cpu {
    /// The value of a CSR this CPU implements (the view the guest would read), or `None`.
    pub(crate) fn csr_value(&self, csr: u16) -> Option<u64> {
        Some(match csr {
            SSTATUS => self.sstatus | SSTATUS_UXL64,
            SIE => self.sie,
            STVEC => self.stvec,
            SCOUNTEREN => self.scounteren,
            SENVCFG => self.senvcfg,
            SSCRATCH => self.sscratch,
            SEPC => self.sepc,
            SCAUSE => self.scause,
            STVAL => self.stval,
            SIP => self.sip,
            SATP => 0,
            CYCLE => self.cycle,
            TIME => self.time,
            INSTRET => self.instret,
            _ => return None,
        })
    }

    /// WARL write of an implemented CSR. `guest` selects the guest-visible write masks (the
    /// host may also set `sip` STIP/SEIP and the counters). Returns false for unknown CSRs
    /// and for values the CSR cannot hold (`satp` other than Bare = 0).
    pub(crate) fn csr_store(&mut self, csr: u16, v: u64, guest: bool) -> bool {
        match csr {
            SSTATUS => self.sstatus = v & SSTATUS_WMASK,
            SIE => self.sie = v & SI_MASK,
            // MODE (bits 1:0) >= 2 is reserved: WARL, folded onto Direct/Vectored.
            STVEC => self.stvec = v & !2,
            // Only CY, TM, IR exist (no hpmcounters).
            SCOUNTEREN => self.scounteren = v & 7,
            SENVCFG => {
                // PMM = 01 is reserved (WARL): keep the previous PMM then.
                let pmm = if v & SENVCFG_PMM == 1 << 32 {
                    self.senvcfg & SENVCFG_PMM
                } else {
                    v & SENVCFG_PMM
                };
                self.senvcfg = (v & SENVCFG_FIOM) | pmm;
            }
            SSCRATCH => self.sscratch = v,
            // IALIGN = 16: sepc[0] is always zero.
            SEPC => self.sepc = v & !1,
            SCAUSE => self.scause = v,
            STVAL => self.stval = v,
            SIP => {
                let mask = if guest { SIP_GUEST_WMASK } else { SI_MASK };
                self.sip = (self.sip & !mask) | (v & mask);
            }
            // Only Bare is supported. "If satp is written with an unsupported MODE, the
            // entire write has no effect"; a Bare write must have zero remaining fields.
            SATP => return v == 0,
            CYCLE | TIME | INSTRET if !guest => match csr {
                CYCLE => self.cycle = v,
                TIME => self.time = v,
                _ => self.instret = v,
            },
            _ => return false,
        }
        true
    }

    /// Privilege / existence check of a guest access (seed is handled separately).
    fn check(&self, csr: u16, writes: bool) -> Check {
        let read_only = csr >> 10 == 0b11;
        match (csr >> 8) & 3 {
            // M-level CSRs: illegal below M-mode.
            0b11 => Check::Illegal,
            // Hypervisor and VS CSRs from V=1: virtual instruction if implemented and the
            // same access would be allowed in HS-mode, else illegal.
            0b10 => {
                if HYPERVISOR_CSRS.contains(&csr) && !(read_only && writes) {
                    Check::Virtual
                } else {
                    Check::Illegal
                }
            }
            0b01 => {
                if self.csr_value(csr).is_none() {
                    Check::Illegal
                } else if self.mode == Mode::User {
                    // VU-mode accessing an implemented supervisor CSR.
                    Check::Virtual
                } else {
                    Check::Ok
                }
            }
            _ => {
                if self.csr_value(csr).is_none() || (read_only && writes) {
                    return Check::Illegal;
                }
                // Counters in VU-mode are gated by the guest's scounteren (hcounteren is
                // taken to enable them all); a clear bit raises illegal instruction.
                if self.mode == Mode::User && (self.scounteren >> (csr & 0x1F)) & 1 == 0 {
                    return Check::Illegal;
                }
                Check::Ok
            }
        }
    }

    /// Executes a Zicsr instruction.
    pub(crate) fn exec_csr(&mut self, cur: &Cur, a: CsrAccess) -> Result<(), Trap> {
        let writes = a.writes();
        if a.csr == SEED {
            // Crypto §4.1: seed must be accessed with a read-write instruction; CSRRS/CSRRC
            // with rs1 = x0 and CSRRSI/CSRRCI with uimm = 0 raise illegal instruction.
            // §4.3: from VS-mode with mseccfg.SSEED = 1 a read-write access raises virtual
            // instruction, so the TSM decides (illegal if the TVM lacks Zkr, else it answers).
            // VU-mode would need mseccfg.USEED, which a TSM does not grant: illegal.
            if !writes || self.mode == Mode::User {
                return Err(cur.illegal());
            }
            return Err(cur.virtual_insn());
        }
        match self.check(a.csr, writes) {
            Check::Ok => {}
            Check::Illegal => return Err(cur.illegal()),
            Check::Virtual => return Err(cur.virtual_insn()),
        }
        let old = self.csr_value(a.csr).unwrap_or(0);
        let src = match a.src {
            CsrSrc::Reg(r) => self.x(r),
            CsrSrc::Imm(u) => u64::from(u),
        };
        if writes {
            let new = match a.op {
                CsrOp::Rw => src,
                CsrOp::Rs => old | src,
                CsrOp::Rc => old & !src,
            };
            // Read-only CSRs were rejected above; satp ignores unsupported values.
            let _ = self.csr_store(a.csr, new, true);
        }
        self.set_x(a.rd, old);
        Ok(())
    }
}
