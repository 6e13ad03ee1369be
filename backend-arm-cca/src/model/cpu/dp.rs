//! Data processing: C4.1.86 "Data Processing -- Immediate" and C4.1.88 "Data Processing --
//! Register" encoding groups.

use super::decode::{
    add_with_carry, bit, bits, condition_holds, decode_bit_masks, dmask, dsize, extend_reg,
    logic_flags, ror, sext, shift_reg,
};
use super::{Aarch64Cpu, Flow};

impl Aarch64Cpu {
    /// Data Processing -- Immediate (op0 = 100x), selected by bits \[25:23\].
    pub(crate) fn dp_imm(&mut self, insn: u32) -> Flow {
        match bits(insn, 25, 23) {
            0b000 | 0b001 => self.adr(insn),
            0b010 => self.add_sub_imm(insn),
            0b100 => self.logical_imm(insn),
            0b101 => self.move_wide(insn),
            0b110 => self.bitfield(insn),
            0b111 => self.extract(insn),
            // 0b011: Add/subtract (immediate, with tags) -- FEAT_MTE, not implemented.
            _ => Flow::Undefined,
        }
    }

    /// C6.2.10 ADR / C6.2.11 ADRP: `op immlo 10000 immhi Rd`.
    fn adr(&mut self, insn: u32) -> Flow {
        let rd = bits(insn, 4, 0);
        let imm = (u64::from(bits(insn, 23, 5)) << 2) | u64::from(bits(insn, 30, 29));
        let imm = sext(imm, 21);
        let pc = self.pc();
        let v = if bit(insn, 31) {
            (pc & !0xFFF).wrapping_add(imm << 12)
        } else {
            pc.wrapping_add(imm)
        };
        self.xw(rd, v);
        Flow::Next
    }

    /// C6.2.4 ADD (immediate), C6.2.8 ADDS (immediate), C6.2.356 SUB (immediate), SUBS
    /// (immediate): `sf op S 100010 sh imm12 Rn Rd`. Rn is SP-capable; Rd is SP-capable unless S.
    fn add_sub_imm(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let sub = bit(insn, 30);
        let s = bit(insn, 29);
        let imm = u64::from(bits(insn, 21, 10)) << if bit(insn, 22) { 12 } else { 0 };
        let rn = bits(insn, 9, 5);
        let rd = bits(insn, 4, 0);
        let op1 = self.xr_sp(rn);
        let (r, nzcv) = if sub {
            add_with_carry(op1, !imm, true, sf)
        } else {
            add_with_carry(op1, imm, false, sf)
        };
        if s {
            self.set_nzcv(nzcv);
            self.xw(rd, r);
        } else {
            self.xw_sp(rd, r);
        }
        Flow::Next
    }

    /// C6.2.12 AND / C6.2.14 ANDS / EOR / ORR (immediate): `sf opc 100100 N immr imms Rn Rd`.
    fn logical_imm(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let opc = bits(insn, 30, 29);
        let n = bits(insn, 22, 22);
        if !sf && n == 1 {
            return Flow::Undefined;
        }
        let Some((imm, _)) =
            decode_bit_masks(n, bits(insn, 15, 10), bits(insn, 21, 16), true, dsize(sf))
        else {
            return Flow::Undefined;
        };
        let rn = bits(insn, 9, 5);
        let rd = bits(insn, 4, 0);
        let op1 = self.xr(rn) & dmask(sf);
        let r = match opc {
            0b00 | 0b11 => op1 & imm,
            0b01 => op1 | imm,
            _ => op1 ^ imm,
        };
        if opc == 0b11 {
            self.set_nzcv(logic_flags(r, sf));
            self.xw(rd, r);
        } else {
            self.xw_sp(rd, r);
        }
        Flow::Next
    }

    /// C6.2.226 MOVN / MOVZ / MOVK: `sf opc 100101 hw imm16 Rd`.
    fn move_wide(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let opc = bits(insn, 30, 29);
        let hw = bits(insn, 22, 21);
        if opc == 0b01 || (!sf && hw >= 2) {
            return Flow::Undefined;
        }
        let pos = hw * 16;
        let imm = u64::from(bits(insn, 20, 5)) << pos;
        let rd = bits(insn, 4, 0);
        let r = match opc {
            0b00 => !imm,
            0b10 => imm,
            _ => (self.xr(rd) & !(0xFFFFu64 << pos)) | imm,
        };
        self.xw(rd, r & dmask(sf));
        Flow::Next
    }

    /// C6.2.302 SBFM / C6.2.37 BFM / C6.2.377 UBFM: `sf opc 100110 N immr imms Rn Rd`
    /// (aliases LSL/LSR/ASR (immediate), SXTB/SXTH/SXTW, UXTB/UXTH, SBFX/UBFX/BFI/BFXIL...).
    fn bitfield(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let opc = bits(insn, 30, 29);
        let n = bits(insn, 22, 22);
        let immr = bits(insn, 21, 16);
        let imms = bits(insn, 15, 10);
        if opc == 0b11 || (sf && n == 0) || (!sf && (n == 1 || immr >= 32 || imms >= 32)) {
            return Flow::Undefined;
        }
        let size = dsize(sf);
        let Some((wmask, tmask)) = decode_bit_masks(n, imms, immr, false, size) else {
            return Flow::Undefined;
        };
        let rn = bits(insn, 9, 5);
        let rd = bits(insn, 4, 0);
        let src = self.xr(rn) & dmask(sf);
        let rotated = ror(src, immr, size);
        let r = match opc {
            // SBFM: top = Replicate(src<S>).
            0b00 => {
                let bot = rotated & wmask;
                let top = if (src >> imms) & 1 != 0 { dmask(sf) } else { 0 };
                (top & !tmask) | (bot & tmask)
            }
            // BFM.
            0b01 => {
                let dst = self.xr(rd) & dmask(sf);
                let bot = (dst & !wmask) | (rotated & wmask);
                (dst & !tmask) | (bot & tmask)
            }
            // UBFM.
            _ => rotated & wmask & tmask,
        };
        self.xw(rd, r & dmask(sf));
        Flow::Next
    }

    /// C6.2.113 EXTR (alias ROR (immediate)): `sf op21 100111 N o0 Rm imms Rn Rd`.
    fn extract(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let n = bit(insn, 22);
        let imms = bits(insn, 15, 10);
        if bits(insn, 30, 29) != 0 || bit(insn, 21) || n != sf || (!sf && imms >= 32) {
            return Flow::Undefined;
        }
        let hi = self.xr(bits(insn, 9, 5));
        let lo = self.xr(bits(insn, 20, 16));
        let r = if sf {
            if imms == 0 {
                lo
            } else {
                (lo >> imms) | (hi << (64 - imms))
            }
        } else {
            let concat = ((hi & 0xFFFF_FFFF) << 32) | (lo & 0xFFFF_FFFF);
            (concat >> imms) & 0xFFFF_FFFF
        };
        self.xw(bits(insn, 4, 0), r);
        Flow::Next
    }

    /// Data Processing -- Register (op0 = x101): op1 = bit 28, op2 = bits \[24:21\].
    pub(crate) fn dp_reg(&mut self, insn: u32) -> Flow {
        let op2 = bits(insn, 24, 21);
        if !bit(insn, 28) {
            if op2 & 0b1000 == 0 {
                self.logical_shifted(insn)
            } else if op2 & 1 == 0 {
                self.add_sub_shifted(insn)
            } else {
                self.add_sub_extended(insn)
            }
        } else {
            match op2 {
                0b0000 => self.adc_sbc(insn),
                0b0010 => self.cond_compare(insn),
                0b0100 => self.cond_select(insn),
                0b0110 => {
                    if bit(insn, 30) {
                        self.dp_1src(insn)
                    } else {
                        self.dp_2src(insn)
                    }
                }
                0b1000..=0b1111 => self.dp_3src(insn),
                _ => Flow::Undefined,
            }
        }
    }

    /// C6.2.13 AND / BIC / ORR / ORN / EOR / EON / ANDS / BICS (shifted register):
    /// `sf opc 01010 shift N Rm imm6 Rn Rd` (aliases MOV (register), MVN, TST).
    fn logical_shifted(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let imm6 = bits(insn, 15, 10);
        if !sf && imm6 >= 32 {
            return Flow::Undefined;
        }
        let opc = bits(insn, 30, 29);
        let mask = dmask(sf);
        let mut op2 = shift_reg(
            self.xr(bits(insn, 20, 16)) & mask,
            bits(insn, 23, 22),
            imm6,
            sf,
        );
        if bit(insn, 21) {
            op2 = !op2 & mask;
        }
        let op1 = self.xr(bits(insn, 9, 5)) & mask;
        let r = match opc {
            0b00 | 0b11 => op1 & op2,
            0b01 => op1 | op2,
            _ => op1 ^ op2,
        };
        if opc == 0b11 {
            self.set_nzcv(logic_flags(r, sf));
        }
        self.xw(bits(insn, 4, 0), r);
        Flow::Next
    }

    /// C6.2.5 ADD / ADDS / SUB / SUBS (shifted register): `sf op S 01011 shift 0 Rm imm6 Rn Rd`
    /// (aliases CMP, CMN, NEG, NEGS). Rn and Rd are XZR when 31.
    fn add_sub_shifted(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let shift = bits(insn, 23, 22);
        let imm6 = bits(insn, 15, 10);
        if shift == 0b11 || (!sf && imm6 >= 32) {
            return Flow::Undefined;
        }
        let mask = dmask(sf);
        let op2 = shift_reg(self.xr(bits(insn, 20, 16)) & mask, shift, imm6, sf);
        let op1 = self.xr(bits(insn, 9, 5));
        let (r, nzcv) = if bit(insn, 30) {
            add_with_carry(op1, !op2, true, sf)
        } else {
            add_with_carry(op1, op2, false, sf)
        };
        if bit(insn, 29) {
            self.set_nzcv(nzcv);
        }
        self.xw(bits(insn, 4, 0), r);
        Flow::Next
    }

    /// C6.2.3 ADD / ADDS / SUB / SUBS (extended register):
    /// `sf op S 01011 opt=00 1 Rm option imm3 Rn Rd`. Rn is SP-capable; Rd is SP-capable unless S.
    fn add_sub_extended(&mut self, insn: u32) -> Flow {
        let sf = bit(insn, 31);
        let imm3 = bits(insn, 12, 10);
        if bits(insn, 23, 22) != 0 || imm3 > 4 {
            return Flow::Undefined;
        }
        let op2 = extend_reg(self.xr(bits(insn, 20, 16)), bits(insn, 15, 13), imm3);
        let op1 = self.xr_sp(bits(insn, 9, 5));
        let (r, nzcv) = if bit(insn, 30) {
            add_with_carry(op1, !op2, true, sf)
        } else {
            add_with_carry(op1, op2, false, sf)
        };
        let rd = bits(insn, 4, 0);
        if bit(insn, 29) {
            self.set_nzcv(nzcv);
            self.xw(rd, r);
        } else {
            self.xw_sp(rd, r);
        }
        Flow::Next
    }

    /// C6.2.1 ADC / ADCS / SBC / SBCS: `sf op S 11010000 Rm 000000 Rn Rd`.
    fn adc_sbc(&mut self, insn: u32) -> Flow {
        if bits(insn, 15, 10) != 0 {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let op1 = self.xr(bits(insn, 9, 5));
        let mut op2 = self.xr(bits(insn, 20, 16));
        if bit(insn, 30) {
            op2 = !op2;
        }
        let (r, nzcv) = add_with_carry(op1, op2, self.nzcv() & 2 != 0, sf);
        if bit(insn, 29) {
            self.set_nzcv(nzcv);
        }
        self.xw(bits(insn, 4, 0), r);
        Flow::Next
    }

    /// C6.2.64 CCMN / C6.2.66 CCMP (register and immediate):
    /// `sf op 1 11010010 Rm|imm5 cond imm o2=0 Rn o3=0 nzcv`.
    fn cond_compare(&mut self, insn: u32) -> Flow {
        if !bit(insn, 29) || bit(insn, 10) || bit(insn, 4) {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let field = bits(insn, 20, 16);
        let y = if bit(insn, 11) {
            u64::from(field)
        } else {
            self.xr(field)
        };
        let nzcv = if condition_holds(bits(insn, 15, 12), self.nzcv()) {
            let x = self.xr(bits(insn, 9, 5));
            if bit(insn, 30) {
                add_with_carry(x, !y, true, sf).1
            } else {
                add_with_carry(x, y, false, sf).1
            }
        } else {
            bits(insn, 3, 0) as u8
        };
        self.set_nzcv(nzcv);
        Flow::Next
    }

    /// C6.2.69 CSEL / CSINC / CSINV / CSNEG: `sf op S=0 11010100 Rm cond 0 o2 Rn Rd`
    /// (aliases CSET, CSETM, CINC, CINV, CNEG).
    fn cond_select(&mut self, insn: u32) -> Flow {
        if bit(insn, 29) || bit(insn, 11) {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let r = if condition_holds(bits(insn, 15, 12), self.nzcv()) {
            self.xr(bits(insn, 9, 5))
        } else {
            let m = self.xr(bits(insn, 20, 16));
            let m = if bit(insn, 30) { !m } else { m };
            if bit(insn, 10) {
                m.wrapping_add(1)
            } else {
                m
            }
        };
        self.xw(bits(insn, 4, 0), r & dmask(sf));
        Flow::Next
    }

    /// Data-processing (2 source): `sf 0 S=0 11010110 Rm opcode Rn Rd` -- C6.2.383 UDIV,
    /// C6.2.299 SDIV, LSLV, LSRV, ASRV, RORV.
    fn dp_2src(&mut self, insn: u32) -> Flow {
        if bit(insn, 29) {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let mask = dmask(sf);
        let a = self.xr(bits(insn, 9, 5)) & mask;
        let b = self.xr(bits(insn, 20, 16)) & mask;
        let r = match bits(insn, 15, 10) {
            0b000010 => a.checked_div(b).unwrap_or(0),
            0b000011 => {
                if b == 0 {
                    0
                } else if sf {
                    (a as i64).wrapping_div(b as i64) as u64
                } else {
                    ((a as u32 as i32).wrapping_div(b as u32 as i32)) as u32 as u64
                }
            }
            op @ 0b001000..=0b001011 => {
                let amount = (b % u64::from(dsize(sf))) as u32;
                shift_reg(a, op & 3, amount, sf)
            }
            _ => return Flow::Undefined,
        };
        self.xw(bits(insn, 4, 0), r & mask);
        Flow::Next
    }

    /// Data-processing (1 source): `sf 1 S=0 11010110 opcode2=00000 opcode Rn Rd` -- RBIT,
    /// REV16, REV32, REV, CLZ, CLS.
    fn dp_1src(&mut self, insn: u32) -> Flow {
        if bit(insn, 29) || bits(insn, 20, 16) != 0 {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let v = self.xr(bits(insn, 9, 5));
        let r = match (bits(insn, 15, 10), sf) {
            (0, true) => v.reverse_bits(),
            (0, false) => u64::from((v as u32).reverse_bits()),
            (1, _) => ((v & 0x00FF_00FF_00FF_00FF) << 8) | ((v >> 8) & 0x00FF_00FF_00FF_00FF),
            (2, true) => {
                u64::from((v as u32).swap_bytes())
                    | (u64::from(((v >> 32) as u32).swap_bytes()) << 32)
            }
            (2, false) => u64::from((v as u32).swap_bytes()),
            (3, true) => v.swap_bytes(),
            (4, true) => u64::from(v.leading_zeros()),
            (4, false) => u64::from((v as u32).leading_zeros()),
            (5, true) => u64::from(((v >> 1) ^ (v & (u64::MAX >> 1))).leading_zeros() - 1),
            (5, false) => {
                let w = v as u32;
                u64::from(((w >> 1) ^ (w & (u32::MAX >> 1))).leading_zeros() - 1)
            }
            _ => return Flow::Undefined,
        };
        self.xw(bits(insn, 4, 0), r & dmask(sf));
        Flow::Next
    }

    /// Data-processing (3 source): `sf op54=00 11011 op31 Rm o0 Ra Rn Rd` -- C6.2.218 MADD,
    /// MSUB (MUL, MNEG), SMADDL/SMSUBL, SMULH, UMADDL/UMSUBL, UMULH.
    fn dp_3src(&mut self, insn: u32) -> Flow {
        if bits(insn, 30, 29) != 0 {
            return Flow::Undefined;
        }
        let sf = bit(insn, 31);
        let o0 = bit(insn, 15);
        let ra = bits(insn, 14, 10);
        let n = self.xr(bits(insn, 9, 5));
        let m = self.xr(bits(insn, 20, 16));
        let a = self.xr(ra);
        let r = match (bits(insn, 23, 21), sf) {
            (0b000, _) => {
                let p = n.wrapping_mul(m);
                if o0 {
                    a.wrapping_sub(p)
                } else {
                    a.wrapping_add(p)
                }
            }
            (0b001, true) | (0b101, true) => {
                let p = if bits(insn, 23, 21) == 0b001 {
                    (i64::from(n as u32 as i32)).wrapping_mul(i64::from(m as u32 as i32)) as u64
                } else {
                    (n & 0xFFFF_FFFF).wrapping_mul(m & 0xFFFF_FFFF)
                };
                if o0 {
                    a.wrapping_sub(p)
                } else {
                    a.wrapping_add(p)
                }
            }
            (0b010, true) if !o0 && ra == 31 => {
                ((i128::from(n as i64) * i128::from(m as i64)) >> 64) as u64
            }
            (0b110, true) if !o0 && ra == 31 => ((u128::from(n) * u128::from(m)) >> 64) as u64,
            _ => return Flow::Undefined,
        };
        self.xw(bits(insn, 4, 0), r & dmask(sf));
        Flow::Next
    }
}
