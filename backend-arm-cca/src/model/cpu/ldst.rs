//! C4.1.89 "Loads and Stores": LDR (literal), load/store pair, load/store register
//! (unscaled, pre/post-index, register offset, unsigned immediate).
//!
//! With SCTLR_EL1.M = 0 every data access is to Device-nGnRnE memory (D8.2.x "The effects of
//! disabling an address translation stage"), so every unaligned access takes an Alignment fault
//! (DFSC 0x21). That is a stage-1 fault, taken to EL1 as a Data Abort without a change in EL
//! (EC 0x25). Stage-2 faults reported by the [`Bus`] leave as [`Exit::DataAbort`] with the
//! ESR_EL2 syndrome of D17.2.40 (ISV=1 only for single-register accesses without writeback).

use super::decode::{bit, bits, extend_reg, sext};
use super::esr::AccessSyndrome;
use super::sysreg::SCTLR_SA;
use super::{esr, Aarch64Cpu, Bus, BusFault, Exit, Flow, SysReg};

/// What a single-register load/store does with the data.
#[derive(Clone, Copy)]
enum Op {
    Store,
    /// Load, zero- or sign-extending (`signed`) into a W (`!reg64`) or X register.
    Load {
        signed: bool,
    },
    Prefetch,
}

/// Decoded single-register access: `size` = log2 bytes.
#[derive(Clone, Copy)]
struct Single {
    size: u32,
    op: Op,
    /// The transfer register is an X register (syndrome SF).
    reg64: bool,
}

/// The size/opc table of "Load/store register (...)" for V = 0 (C4.1.89).
fn decode_size_opc(size: u32, opc: u32) -> Option<Single> {
    let (op, reg64) = match (size, opc) {
        (_, 0b00) => (Op::Store, size == 3),
        (_, 0b01) => (Op::Load { signed: false }, size == 3),
        // LDRSB/LDRSH (64-bit), LDRSW.
        (0..=2, 0b10) => (Op::Load { signed: true }, true),
        // LDRSB/LDRSH (32-bit).
        (0 | 1, 0b11) => (Op::Load { signed: true }, false),
        (3, 0b10) => (Op::Prefetch, false),
        _ => return None,
    };
    Some(Single { size, op, reg64 })
}

impl Aarch64Cpu {
    /// Loads and stores (op0 = x1x0).
    pub(crate) fn ldst<B: Bus>(&mut self, bus: &mut B, insn: u32) -> Flow {
        // V = 1: SIMD&FP registers, not supported.
        if bit(insn, 26) {
            return Flow::Undefined;
        }
        match (bits(insn, 29, 27), bits(insn, 25, 24)) {
            (0b011, 0b00) => self.ld_literal(bus, insn),
            (0b101, 0b00 | 0b01) => self.ldst_pair(bus, insn),
            (0b111, 0b01) => {
                let Some(acc) = decode_size_opc(bits(insn, 31, 30), bits(insn, 23, 22)) else {
                    return Flow::Undefined;
                };
                let rn = bits(insn, 9, 5);
                let Some(base) = self.base(rn) else {
                    return Flow::Exception;
                };
                let off = u64::from(bits(insn, 21, 10)) << acc.size;
                self.single(
                    bus,
                    acc,
                    bits(insn, 4, 0),
                    base.wrapping_add(off),
                    true,
                    None,
                )
            }
            (0b111, 0b00) => self.ldst_reg_imm9_or_regoff(bus, insn),
            // Exclusives, load-acquire/store-release, LDAPR/STLUR, atomics, MTE: not supported.
            _ => Flow::Undefined,
        }
    }

    /// C6.2.167 LDR (literal) / LDRSW (literal) / PRFM (literal): `opc 011 0 00 imm19 Rt`.
    fn ld_literal<B: Bus>(&mut self, bus: &mut B, insn: u32) -> Flow {
        let acc = match bits(insn, 31, 30) {
            0b00 => Single {
                size: 2,
                op: Op::Load { signed: false },
                reg64: false,
            },
            0b01 => Single {
                size: 3,
                op: Op::Load { signed: false },
                reg64: true,
            },
            0b10 => Single {
                size: 2,
                op: Op::Load { signed: true },
                reg64: true,
            },
            _ => return Flow::Next,
        };
        let addr = self
            .pc()
            .wrapping_add(sext(u64::from(bits(insn, 23, 5)) << 2, 21));
        self.single(bus, acc, bits(insn, 4, 0), addr, true, None)
    }

    /// Load/store register (unscaled immediate, immediate post-indexed, immediate pre-indexed)
    /// and (register offset): `size 111 0 00 opc ...`.
    fn ldst_reg_imm9_or_regoff<B: Bus>(&mut self, bus: &mut B, insn: u32) -> Flow {
        let Some(acc) = decode_size_opc(bits(insn, 31, 30), bits(insn, 23, 22)) else {
            return Flow::Undefined;
        };
        let rn = bits(insn, 9, 5);
        let rt = bits(insn, 4, 0);
        let op4 = bits(insn, 11, 10);
        if bit(insn, 21) {
            // C6.2.170 LDR (register) etc.: `... 1 Rm option S 10 Rn Rt`; op4 != 10 is atomics
            // (FEAT_LSE) and LDRAA/LDRAB (FEAT_PAuth): not supported.
            let option = bits(insn, 15, 13);
            if op4 != 0b10 || option & 0b010 == 0 {
                return Flow::Undefined;
            }
            let shift = if bit(insn, 12) { acc.size } else { 0 };
            let off = extend_reg(self.xr(bits(insn, 20, 16)), option, shift);
            let Some(base) = self.base(rn) else {
                return Flow::Exception;
            };
            return self.single(bus, acc, rt, base.wrapping_add(off), true, None);
        }
        let imm = sext(u64::from(bits(insn, 20, 12)), 9);
        match op4 {
            // LDUR/STUR/PRFUM (C6.2.200 LDUR ...): syndrome valid, no writeback.
            0b00 => {
                let Some(base) = self.base(rn) else {
                    return Flow::Exception;
                };
                self.single(bus, acc, rt, base.wrapping_add(imm), true, None)
            }
            // Post-index (01) / pre-index (11): ISV = 0.
            0b01 | 0b11 => {
                if matches!(acc.op, Op::Prefetch) {
                    return Flow::Undefined;
                }
                // Writeback with Rn == Rt (not SP): CONSTRAINED UNPREDICTABLE; we choose UNDEFINED.
                if rn == rt && rn != 31 {
                    return Flow::Undefined;
                }
                let Some(base) = self.base(rn) else {
                    return Flow::Exception;
                };
                let new_base = base.wrapping_add(imm);
                let addr = if op4 == 0b11 { new_base } else { base };
                self.single(bus, acc, rt, addr, false, Some((rn, new_base)))
            }
            // LDTR/STTR (unprivileged): not supported.
            _ => Flow::Undefined,
        }
    }

    /// Reads the base register `n` (31 = SP), applying the SP alignment check (D1.3.x "SP
    /// alignment checking", SCTLR_EL1.SA): `None` means an SP alignment fault was taken.
    #[inline]
    fn base(&mut self, n: u32) -> Option<u64> {
        if n != 31 {
            return Some(self.xr(n));
        }
        let sp = self.sp();
        if sp & 0xF != 0 && self.sysreg(SysReg::SctlrEl1) & SCTLR_SA != 0 {
            let pc = self.pc();
            self.exception_entry(esr::build(esr::EC_SP_ALIGN, true, 0), None, pc);
            return None;
        }
        Some(sp)
    }

    /// Alignment fault (DFSC 0x21) to EL1 as a Data Abort without a change in EL (EC 0x25).
    /// ISV = 0 (the ISS instruction syndrome is only architecturally provided for stage-2 aborts
    /// here), FAR_EL1 = the faulting address.
    fn alignment_fault(&mut self, addr: u64, write: bool) -> Flow {
        let iss = esr::data_abort_iss(None, write, esr::DFSC_ALIGNMENT);
        let pc = self.pc();
        self.exception_entry(esr::build(esr::EC_DABT_CUR, true, iss), Some(addr), pc);
        Flow::Exception
    }

    /// Address size fault (DFSC 0x00, level 0) at stage 1 for an address beyond the PA size
    /// with stage 1 disabled ([`super::PA_BITS`]): to EL1 as a Data Abort without a change in
    /// EL (EC 0x25), ISV = 0, FAR_EL1 = the address. Without it, the access would reach stage 2
    /// with an IPA that HPFAR_EL2 truncates, and alias a protected page of the realm.
    fn address_size_fault(&mut self, addr: u64, write: bool) -> Flow {
        let iss = esr::data_abort_iss(None, write, esr::DFSC_ADDR_SIZE_L0);
        let pc = self.pc();
        self.exception_entry(esr::build(esr::EC_DABT_CUR, true, iss), Some(addr), pc);
        Flow::Exception
    }

    /// Stage-2 data abort exit (D17.2.40): `syn` is `Some` for ISV = 1 forms.
    fn stage2_abort(fault: BusFault, addr: u64, write: bool, syn: Option<AccessSyndrome>) -> Flow {
        let iss = esr::data_abort_iss(syn, write, fault.fsc());
        Flow::Exit(Exit::DataAbort {
            esr: esr::build(esr::EC_DABT_LOWER, true, iss),
            far: addr,
            hpfar: esr::hpfar(addr),
        })
    }

    /// Performs a single-register access at `addr`. `valid_syndrome` selects ISV; `writeback`
    /// is `(Rn, new value)` applied after the access succeeded.
    #[inline]
    fn single<B: Bus>(
        &mut self,
        bus: &mut B,
        acc: Single,
        rt: u32,
        addr: u64,
        valid_syndrome: bool,
        writeback: Option<(u32, u64)>,
    ) -> Flow {
        let bytes = 1u8 << acc.size;
        let write = matches!(acc.op, Op::Store);
        if matches!(acc.op, Op::Prefetch) {
            return Flow::Next;
        }
        if !super::pa_in_range(addr) {
            return self.address_size_fault(addr, write);
        }
        if addr & (u64::from(bytes) - 1) != 0 {
            return self.alignment_fault(addr, write);
        }
        let syn = valid_syndrome.then_some(AccessSyndrome {
            sas: acc.size as u8,
            sse: matches!(acc.op, Op::Load { signed: true }),
            srt: rt as u8,
            sf: acc.reg64,
            ar: false,
        });
        match acc.op {
            Op::Store => {
                if let Err(f) = bus.write(addr, bytes, self.xr(rt)) {
                    return Self::stage2_abort(f, addr, true, syn);
                }
            }
            Op::Load { signed } => match bus.read(addr, bytes) {
                Ok(raw) => {
                    let v = load_extend(raw, acc.size, signed, acc.reg64);
                    self.xw(rt, v);
                }
                Err(f) => return Self::stage2_abort(f, addr, false, syn),
            },
            Op::Prefetch => {}
        }
        if let Some((rn, v)) = writeback {
            self.xw_sp(rn, v);
        }
        Flow::Next
    }

    /// C6.2.164 LDP / C6.2.166 LDPSW / C6.2.321 STP / LDNP / STNP:
    /// `opc 101 0 idx L imm7 Rt2 Rn Rt`; idx 00 non-temporal offset, 01 post-index,
    /// 10 signed offset, 11 pre-index. ISV = 0 for every pair form.
    fn ldst_pair<B: Bus>(&mut self, bus: &mut B, insn: u32) -> Flow {
        let opc = bits(insn, 31, 30);
        let idx = bits(insn, 24, 23);
        let load = bit(insn, 22);
        let (size, signed) = match (opc, load, idx) {
            (0b00, _, _) => (2u32, false),
            (0b10, _, _) => (3, false),
            // LDPSW (no non-temporal form); opc=01 with L=0 is STGP (FEAT_MTE).
            (0b01, true, 0b01..=0b11) => (2, true),
            _ => return Flow::Undefined,
        };
        let rt = bits(insn, 4, 0);
        let rt2 = bits(insn, 14, 10);
        let rn = bits(insn, 9, 5);
        let wb = idx == 0b01 || idx == 0b11;
        // CONSTRAINED UNPREDICTABLE cases (LDP with Rt == Rt2; writeback with Rn == Rt/Rt2):
        // we choose UNDEFINED.
        if (load && rt == rt2) || (wb && rn != 31 && (rn == rt || rn == rt2)) {
            return Flow::Undefined;
        }
        let off = sext(u64::from(bits(insn, 21, 15)), 7) << size;
        let Some(base) = self.base(rn) else {
            return Flow::Exception;
        };
        let new_base = base.wrapping_add(off);
        let addr = if idx == 0b01 { base } else { new_base };
        let bytes = 1u8 << size;
        let addr2 = addr.wrapping_add(u64::from(bytes));
        if !super::pa_in_range(addr) || !super::pa_in_range(addr2) {
            let at = if super::pa_in_range(addr) {
                addr2
            } else {
                addr
            };
            return self.address_size_fault(at, !load);
        }
        if addr & (u64::from(bytes) - 1) != 0 {
            return self.alignment_fault(addr, !load);
        }
        if load {
            let a = match bus.read(addr, bytes) {
                Ok(v) => v,
                Err(f) => return Self::stage2_abort(f, addr, false, None),
            };
            let b = match bus.read(addr2, bytes) {
                Ok(v) => v,
                Err(f) => return Self::stage2_abort(f, addr2, false, None),
            };
            let reg64 = size == 3 || signed;
            self.xw(rt, load_extend(a, size, signed, reg64));
            self.xw(rt2, load_extend(b, size, signed, reg64));
        } else {
            if let Err(f) = bus.write(addr, bytes, self.xr(rt)) {
                return Self::stage2_abort(f, addr, true, None);
            }
            if let Err(f) = bus.write(addr2, bytes, self.xr(rt2)) {
                return Self::stage2_abort(f, addr2, true, None);
            }
        }
        if wb {
            self.xw_sp(rn, new_base);
        }
        Flow::Next
    }
}

/// Extends a loaded value of `1 << size` bytes into a W (`!reg64`, upper half zero) or X register.
#[inline]
fn load_extend(raw: u64, size: u32, signed: bool, reg64: bool) -> u64 {
    let width = 8u32 << size;
    let v = if signed {
        sext(raw, width)
    } else {
        raw & super::decode::ones(width)
    };
    if reg64 {
        v
    } else {
        v & 0xFFFF_FFFF
    }
}
