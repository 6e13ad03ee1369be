//! AArch64 lowering (EL1, MMU off).
//!
//! Only instructions the in-process CPU model implements are emitted: MOVZ/MOVK/MOVN, LDR/STR
//! family with an unsigned offset (so every MMIO data abort has ISV = 1), CMP, SUBS, B, B.cond,
//! CBNZ, SMC, HVC, MRS, MSR.
//!
//! Registers: platform steps may use x0–x18. The lowering owns
//!
//! | reg | use |
//! |---|---|
//! | x19 | data page base |
//! | x20 | doorbell base (device alias applied) |
//! | x21 | address of the current access; `VBAR_EL1` value at start |
//! | x22 | value of the current access |
//! | x23 | comparison constant |
//! | x24–x27 | `Repeat` counters, one per nesting level |
//! | x28 | entropy retry counter |
//!
//! Image: `B main`, zero padding to +0x800, the 16-entry vector table (each entry `B handler`),
//! the handler (on a second exception it loops on a doorbell VALUE write, so the host's exit
//! budget ends the run), then `main`. `VBAR_EL1` = code + 0x800. There is no ISB after the `MSR` (not in
//! the model's instruction list); the first exception the handler could matter for comes many
//! instructions later.

// dynasm! expands dynamic registers as `X(r).into()`; for `u8` operands that is a no-op.
#![allow(clippy::useless_conversion)]

use dynasmrt::aarch64::Aarch64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::doorbell::{self, Command};
use super::lower::{Emitter, LowerError, Src, DATA_EXCEPTION_FLAG};
use super::platform::{Conduit, EntropySource, Layout};

const DATA: u8 = 19;
const BELL: u8 = 20;
const ADDR: u8 = 21;
const VAL: u8 = 22;
const TMP: u8 = 23;
const COUNTER0: u8 = 24;
const RETRY: u8 = 28;

/// `MRS`/`MSR` system-register operands: `o0:op1:CRn:CRm:op2` (instruction bits 19:5).
pub(crate) mod sysreg {
    const fn enc(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
        (op0 - 2) << 14 | op1 << 11 | crn << 7 | crm << 3 | op2
    }
    /// RNDR (S3_3_C2_C4_0).
    pub const RNDR: u32 = enc(3, 3, 2, 4, 0);
    /// ESR_EL1 (S3_0_C5_C2_0).
    pub const ESR_EL1: u32 = enc(3, 0, 5, 2, 0);
    /// ELR_EL1 (S3_0_C4_C0_1).
    pub const ELR_EL1: u32 = enc(3, 0, 4, 0, 1);
    /// FAR_EL1 (S3_0_C6_C0_0).
    pub const FAR_EL1: u32 = enc(3, 0, 6, 0, 0);
    /// VBAR_EL1 (S3_0_C12_C0_0).
    pub const VBAR_EL1: u32 = enc(3, 0, 12, 0, 0);
}

/// A move-wide instruction in a constant's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MovWide {
    /// MOVZ: rd = imm << shift.
    Z,
    /// MOVN: rd = !(imm << shift).
    N,
    /// MOVK: insert imm at shift.
    K,
}

/// MOVZ/MOVN + MOVKs that build `value` (1–4 instructions).
pub(crate) fn const_plan(value: u64) -> Vec<(MovWide, u16, u8)> {
    let chunks: Vec<u16> = (0..4).map(|i| (value >> (16 * i)) as u16).collect();
    let ones = chunks.iter().filter(|&&c| c == 0xffff).count();
    let zeros = chunks.iter().filter(|&&c| c == 0).count();
    let (filler, first) = if ones > zeros {
        (0xffff, MovWide::N)
    } else {
        (0, MovWide::Z)
    };
    let mut plan = Vec::new();
    for (i, &c) in chunks.iter().enumerate() {
        if c == filler {
            continue;
        }
        let shift = 16 * i as u8;
        if plan.is_empty() {
            let imm = if first == MovWide::N { !c } else { c };
            plan.push((first, imm, shift));
        } else {
            plan.push((MovWide::K, c, shift));
        }
    }
    if plan.is_empty() {
        plan.push((first, 0, 0));
    }
    plan
}

/// The AArch64 emitter.
pub(crate) struct A64 {
    ops: VecAssembler<Aarch64Relocation>,
    code: u64,
}

impl A64 {
    pub(crate) fn new(code: u64) -> Self {
        Self {
            ops: VecAssembler::new(0),
            code,
        }
    }

    fn mov_imm(&mut self, rd: u8, value: u64) {
        for (kind, imm, shift) in const_plan(value) {
            let (imm, shift) = (u32::from(imm), u32::from(shift));
            match kind {
                MovWide::Z => dynasm!(self.ops ; .arch aarch64 ; movz X(rd), imm, lsl shift),
                MovWide::N => dynasm!(self.ops ; .arch aarch64 ; movn X(rd), imm, lsl shift),
                MovWide::K => dynasm!(self.ops ; .arch aarch64 ; movk X(rd), imm, lsl shift),
            }
        }
    }

    fn str_data(&mut self, rt: u8, offset: u16) {
        let offset = u32::from(offset);
        dynasm!(self.ops ; .arch aarch64 ; str X(rt), [X(DATA), offset]);
    }

    fn str_bell(&mut self, rt: u8, offset: u64) {
        let offset = offset as u32;
        dynasm!(self.ops ; .arch aarch64 ; str X(rt), [X(BELL), offset]);
    }
}

impl Emitter for A64 {
    fn platform_reg_ok(&self, reg: u8) -> bool {
        reg < DATA
    }

    fn new_label(&mut self) -> DynamicLabel {
        self.ops.new_dynamic_label()
    }

    fn bind(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch aarch64 ; =>label);
    }

    fn jump(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch aarch64 ; b =>label);
    }

    fn start(&mut self, layout: &Layout, doorbell_addr: u64, power_off: DynamicLabel) {
        let (main, handler, stuck) = (self.new_label(), self.new_label(), self.new_label());
        dynasm!(self.ops ; .arch aarch64 ; b =>main ; .align 0x800);
        let vectors = self.code + self.ops.offset().0 as u64;
        for _ in 0..16 {
            dynasm!(self.ops ; .arch aarch64 ; b =>handler ; .align 0x80);
        }
        let flag = u32::from(DATA_EXCEPTION_FLAG);
        dynasm!(self.ops ; .arch aarch64
            ; =>handler
            ; ldr X(VAL), [X(DATA), flag]
            ; cbnz X(VAL), =>stuck
            ; movz X(VAL), 1
            ; str X(VAL), [X(DATA), flag]
            ; mrs X(VAL), sysreg::ESR_EL1
        );
        self.str_bell(VAL, doorbell::VALUE);
        dynasm!(self.ops ; .arch aarch64 ; mrs X(VAL), sysreg::ELR_EL1);
        self.str_bell(VAL, doorbell::AUX);
        dynasm!(self.ops ; .arch aarch64 ; mrs X(VAL), sysreg::FAR_EL1);
        self.str_bell(VAL, doorbell::AUX2);
        self.mov_imm(VAL, doorbell::encode(Command::Exception, 0, 0, 0));
        self.str_bell(VAL, doorbell::CMD);
        dynasm!(self.ops ; .arch aarch64 ; b =>power_off ; =>stuck);
        // A second exception (powering off faulted too): keep exiting to the host, whose exit
        // budget ends the run, rather than spin silently.
        self.str_bell(VAL, doorbell::VALUE);
        dynasm!(self.ops ; .arch aarch64 ; b =>stuck ; =>main);
        self.mov_imm(DATA, layout.data);
        self.mov_imm(BELL, doorbell_addr);
        self.mov_imm(ADDR, vectors);
        dynasm!(self.ops ; .arch aarch64 ; msr sysreg::VBAR_EL1, X(ADDR));
    }

    fn store(&mut self, addr: u64, size: u8, value: u64) {
        self.mov_imm(ADDR, addr);
        self.mov_imm(VAL, value);
        match size {
            1 => dynasm!(self.ops ; .arch aarch64 ; strb W(VAL), [X(ADDR)]),
            2 => dynasm!(self.ops ; .arch aarch64 ; strh W(VAL), [X(ADDR)]),
            4 => dynasm!(self.ops ; .arch aarch64 ; str W(VAL), [X(ADDR)]),
            _ => dynasm!(self.ops ; .arch aarch64 ; str X(VAL), [X(ADDR)]),
        }
    }

    fn load(&mut self, addr: u64, size: u8, signed: bool, dest: u16) {
        self.mov_imm(ADDR, addr);
        match (size, signed) {
            (1, false) => dynasm!(self.ops ; .arch aarch64 ; ldrb W(VAL), [X(ADDR)]),
            (1, true) => dynasm!(self.ops ; .arch aarch64 ; ldrsb X(VAL), [X(ADDR)]),
            (2, false) => dynasm!(self.ops ; .arch aarch64 ; ldrh W(VAL), [X(ADDR)]),
            (2, true) => dynasm!(self.ops ; .arch aarch64 ; ldrsh X(VAL), [X(ADDR)]),
            (4, false) => dynasm!(self.ops ; .arch aarch64 ; ldr W(VAL), [X(ADDR)]),
            (4, true) => dynasm!(self.ops ; .arch aarch64 ; ldrsw X(VAL), [X(ADDR)]),
            _ => dynasm!(self.ops ; .arch aarch64 ; ldr X(VAL), [X(ADDR)]),
        }
        self.str_data(VAL, dest);
    }

    fn doorbell(&mut self, offset: u64, src: Src) {
        let rt = match src {
            Src::Imm(v) => {
                self.mov_imm(VAL, v);
                VAL
            }
            Src::Data(at) => {
                let at = u32::from(at);
                dynasm!(self.ops ; .arch aarch64 ; ldr X(VAL), [X(DATA), at]);
                VAL
            }
            Src::Reg(r) => r,
        };
        self.str_bell(rt, offset);
    }

    fn branch_eq(&mut self, src: Src, value: u64, target: DynamicLabel) {
        let rn = match src {
            Src::Imm(v) => {
                self.mov_imm(VAL, v);
                VAL
            }
            Src::Data(at) => {
                let at = u32::from(at);
                dynasm!(self.ops ; .arch aarch64 ; ldr X(VAL), [X(DATA), at]);
                VAL
            }
            Src::Reg(r) => r,
        };
        self.mov_imm(TMP, value);
        dynasm!(self.ops ; .arch aarch64 ; cmp X(rn), X(TMP) ; b.eq =>target);
    }

    fn repeat_start(&mut self, depth: usize, count: u32) -> DynamicLabel {
        let top = self.new_label();
        self.mov_imm(COUNTER0 + depth as u8, u64::from(count));
        self.bind(top);
        top
    }

    fn repeat_end(&mut self, depth: usize, top: DynamicLabel) {
        let counter = COUNTER0 + depth as u8;
        dynasm!(self.ops ; .arch aarch64 ; subs X(counter), XSP(counter), 1 ; b.ne =>top);
    }

    fn call(&mut self, conduit: Conduit, args: &[(u8, u64)]) -> Result<(), String> {
        let imm = match conduit {
            Conduit::Smc(imm) | Conduit::Hvc(imm) => u32::from(imm),
            other => return Err(format!("conduit {other:?}")),
        };
        for &(reg, value) in args {
            self.mov_imm(reg, value);
        }
        match conduit {
            Conduit::Hvc(_) => dynasm!(self.ops ; .arch aarch64 ; hvc imm),
            _ => dynasm!(self.ops ; .arch aarch64 ; smc imm),
        }
        Ok(())
    }

    fn save(&mut self, reg: u8, dest: u16) {
        self.str_data(reg, dest);
    }

    fn entropy(
        &mut self,
        source: EntropySource,
        dest: u16,
        fail: DynamicLabel,
    ) -> Result<(), String> {
        if source != EntropySource::Rndr {
            return Err(format!("entropy source {source:?}"));
        }
        let (top, ok) = (self.new_label(), self.new_label());
        self.mov_imm(RETRY, u64::from(doorbell::ENTROPY_RETRIES));
        // RNDR sets NZCV to 0b0000 on success and 0b0100 (Z) on failure.
        dynasm!(self.ops ; .arch aarch64
            ; =>top
            ; mrs X(VAL), sysreg::RNDR
            ; b.ne =>ok
            ; subs X(RETRY), XSP(RETRY), 1
            ; b.ne =>top
        );
        self.str_data(VAL, dest);
        dynasm!(self.ops ; .arch aarch64 ; b =>fail ; =>ok);
        self.str_data(VAL, dest);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, LowerError> {
        self.ops
            .finalize()
            .map_err(|e| LowerError::Assemble(e.to_string()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{const_plan, MovWide};

    /// Values worth checking: edges, single bits, masks, and a pseudo-random sweep.
    pub(crate) fn values() -> Vec<u64> {
        let mut v = vec![0, 1, u64::MAX, u64::MAX - 1, 0xffff, 0x1_0000, 0x8000_0000];
        v.extend((0..64).map(|i| 1u64 << i));
        v.extend((0..64).map(|i| !(1u64 << i)));
        v.extend((1..64).map(|i| (1u64 << i) - 1));
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push(x);
            v.push(x & 0xffff_0000_ffff);
            v.push(x | 0xffff_ffff_0000_0000);
            v.push(x as u32 as u64);
            v.push(x as i32 as i64 as u64);
        }
        v
    }

    #[test]
    fn const_plans_build_every_value_in_at_most_four_instructions() {
        for value in values() {
            let plan = const_plan(value);
            assert!(!plan.is_empty() && plan.len() <= 4, "{value:#x}: {plan:?}");
            let mut rd = 0u64;
            for (i, (kind, imm, shift)) in plan.iter().enumerate() {
                let imm = u64::from(*imm) << shift;
                rd = match kind {
                    MovWide::Z if i == 0 => imm,
                    MovWide::N if i == 0 => !imm,
                    MovWide::K if i > 0 => (rd & !(0xffff << shift)) | imm,
                    _ => panic!("{value:#x}: bad plan {plan:?}"),
                };
            }
            assert_eq!(rd, value, "{plan:?}");
        }
    }
}
