//! C4.1.87 "Branches, Exception Generating and System instructions".

use super::decode::{bit, bits, condition_holds, sext};
use super::{esr, Aarch64Cpu, Exit, Flow, SysReg, M_EL1H, M_EL1T};

impl Aarch64Cpu {
    /// Branches, exception generating and system instructions (op0 = 101x).
    pub(crate) fn branch_sys(&mut self, insn: u32) -> Flow {
        let pc = self.pc();
        // C6.2.26 B / C6.2.34 BL: `op 00101 imm26`.
        if insn & 0x7C00_0000 == 0x1400_0000 {
            let off = sext(u64::from(bits(insn, 25, 0)) << 2, 28);
            if bit(insn, 31) {
                self.xw(30, pc.wrapping_add(4));
            }
            return Flow::Branch(pc.wrapping_add(off));
        }
        // C6.2.61 CBZ / C6.2.60 CBNZ: `sf 011010 op imm19 Rt`.
        if insn & 0x7E00_0000 == 0x3400_0000 {
            let mut v = self.xr(bits(insn, 4, 0));
            if !bit(insn, 31) {
                v &= 0xFFFF_FFFF;
            }
            let take = (v == 0) != bit(insn, 24);
            return self.cond_branch(take, bits(insn, 23, 5), 19);
        }
        // C6.2.373 TBZ / C6.2.372 TBNZ: `b5 011011 op b40 imm14 Rt`.
        if insn & 0x7E00_0000 == 0x3600_0000 {
            let bitpos = (bits(insn, 31, 31) << 5) | bits(insn, 23, 19);
            let set = (self.xr(bits(insn, 4, 0)) >> bitpos) & 1 != 0;
            let take = set == bit(insn, 24);
            return self.cond_branch(take, bits(insn, 18, 5), 14);
        }
        // C6.2.27 B.cond: `01010100 imm19 o0=0 cond` (o0=1 is BC.cond, FEAT_HBC: not implemented).
        if insn & 0xFF00_0010 == 0x5400_0000 {
            let take = condition_holds(bits(insn, 3, 0), self.nzcv());
            return self.cond_branch(take, bits(insn, 23, 5), 19);
        }
        // Exception generation: `11010100 opc imm16 op2 LL`.
        if insn & 0xFF00_0000 == 0xD400_0000 {
            return self.exception_gen(insn);
        }
        // System instructions: `1101010100 L op0 op1 CRn CRm op2 Rt`.
        if insn & 0xFFC0_0000 == 0xD500_0000 {
            return self.system(insn);
        }
        // Unconditional branch (register): `1101011 opc op2 op3 Rn op4`.
        if insn & 0xFE00_0000 == 0xD600_0000 {
            return self.branch_reg(insn);
        }
        Flow::Undefined
    }

    /// Taken: PC + SignExtend(imm:'00'); not taken: next instruction.
    #[inline]
    fn cond_branch(&self, take: bool, imm: u32, width: u32) -> Flow {
        if take {
            let off = sext(u64::from(imm) << 2, width + 2);
            Flow::Branch(self.pc().wrapping_add(off))
        } else {
            Flow::Next
        }
    }

    /// SVC / HVC / SMC / BRK (C6.2.365 SVC, C6.2.136 HVC, C6.2.315 SMC, C6.2.42 BRK).
    fn exception_gen(&mut self, insn: u32) -> Flow {
        let opc = bits(insn, 23, 21);
        let ll = bits(insn, 1, 0);
        if bits(insn, 4, 2) != 0 {
            return Flow::Undefined;
        }
        let imm = bits(insn, 20, 5) as u16;
        let pc = self.pc();
        match (opc, ll) {
            // SVC: Supervisor Call taken to EL1 (EC 0x15), preferred return = next instruction.
            (0b000, 0b01) => {
                let e = esr::build(esr::EC_SVC64, true, u64::from(imm));
                self.exception_entry(e, None, pc.wrapping_add(4));
                Flow::Exception
            }
            // HVC from EL1 goes to EL2; preferred return = next instruction.
            (0b000, 0b10) => Flow::ExitAfter(Exit::Hvc { imm }),
            // SMC trapped to EL2 (HCR_EL2.TSC): preferred return = the SMC itself.
            (0b000, 0b11) => Flow::Exit(Exit::Smc { imm }),
            // BRK: Breakpoint Instruction exception to EL1 (EC 0x3C), ELR = the BRK.
            (0b001, 0b00) => {
                let e = esr::build(esr::EC_BRK64, true, u64::from(imm));
                self.exception_entry(e, None, pc);
                Flow::Exception
            }
            // HLT (halting debug disabled), DCPSx (not in Debug state): UNDEFINED.
            _ => Flow::Undefined,
        }
    }

    /// C6.2.37 BR / C6.2.35 BLR / C6.2.254 RET / C6.2.111 ERET.
    fn branch_reg(&mut self, insn: u32) -> Flow {
        let opc = bits(insn, 24, 21);
        let rn = bits(insn, 9, 5);
        if bits(insn, 20, 16) != 0b11111 || bits(insn, 15, 10) != 0 || bits(insn, 4, 0) != 0 {
            // Pointer-authentication variants (BRAA, RETAA, ERETAA...) and reserved encodings.
            return Flow::Undefined;
        }
        match opc {
            0b0000 | 0b0010 => Flow::Branch(self.xr(rn)),
            0b0001 => {
                let target = self.xr(rn);
                self.xw(30, self.pc().wrapping_add(4));
                Flow::Branch(target)
            }
            0b0100 if rn == 31 => self.eret(),
            _ => Flow::Undefined,
        }
    }

    /// C6.2.111 ERET: PC = ELR_EL1, PSTATE = SPSR_EL1. Only returns to EL1t/EL1h in AArch64 are
    /// supported (the CPU models EL1 only); any other SPSR_EL1.M exits as UNDEFINED instead of
    /// modelling the illegal-return / EL0 paths.
    fn eret(&mut self) -> Flow {
        let spsr = self.sysreg(SysReg::SpsrEl1);
        let m = spsr & 0x1F;
        if m != M_EL1H && m != M_EL1T {
            return Flow::Undefined;
        }
        let target = self.sysreg(SysReg::ElrEl1);
        self.set_pstate(spsr);
        Flow::Branch(target)
    }
}
