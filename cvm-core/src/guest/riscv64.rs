//! RV64 lowering (S-mode / VS-mode, RV64I + Zicsr only, no compressed instructions).
//!
//! Every MMIO access is one plain LB/LH/LW/LD/LBU/LHU/LWU/SB/SH/SW/SD (the TSM emulates only
//! those). Constants are built with LUI/ADDI/SLLI; long jumps use `JAL x0` (backward loop
//! branches are `BEQ` over a `JAL`, so bodies of any size work).
//!
//! Registers: platform steps may use x0–x17 (ra, sp, gp, tp, t0–t2, s0, s1, a0–a7). The
//! lowering owns
//!
//! | reg | use |
//! |---|---|
//! | s2 (x18) | data page base |
//! | s3 (x19) | doorbell base (device view) |
//! | s4 (x20) | address of the current access; `stvec` value at start |
//! | s5 (x21) | value of the current access |
//! | s6 (x22) | comparison constant |
//! | s7–s10 (x23–x26) | `Repeat` counters, one per nesting level |
//! | s11 (x27) | entropy retry counter |
//!
//! CSRs (by their dynasm names): seed 0x015, stvec 0x105, sepc 0x141, scause 0x142, stval 0x143.
//!
//! Image: `JAL x0, main`, the exception handler at code + 4 (`stvec` = code + 4, direct mode;
//! on a second exception it loops on a doorbell VALUE write, so the host's exit budget ends the
//! run), then `main`.

// dynasm! expands operands as `X(r).into()` and `imm as u32`; for our `u8`/`u32` operands
// those are no-ops.
#![allow(clippy::useless_conversion, clippy::unnecessary_cast)]

use dynasmrt::riscv::RiscvRelocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::doorbell::{self, Command};
use super::lower::{Emitter, LowerError, Src, DATA_EXCEPTION_FLAG};
use super::platform::{Conduit, EntropySource, Layout};

const DATA: u8 = 18;
const BELL: u8 = 19;
const ADDR: u8 = 20;
const VAL: u8 = 21;
const TMP: u8 = 22;
const COUNTER0: u8 = 23;
const RETRY: u8 = 27;

/// One instruction of a constant's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RvConst {
    /// `addi rd, x0, imm`.
    Li(i32),
    /// `lui rd, imm` (imm has its low 12 bits clear; the result is sign-extended).
    Lui(i32),
    /// `addi rd, rd, imm`.
    Addi(i32),
    /// `slli rd, rd, shamt`.
    Slli(u32),
}

/// LUI/ADDI/SLLI sequence that builds `value` (the recursive scheme LLVM's RISCVMatInt uses,
/// with ADDI instead of ADDIW).
pub(crate) fn const_plan(value: u64) -> Vec<RvConst> {
    let mut plan = Vec::new();
    plan_into(value as i64, &mut plan);
    plan
}

fn plan_into(v: i64, plan: &mut Vec<RvConst>) {
    let lo = (v << 52) >> 52; // sign-extended low 12 bits
    if v == lo {
        plan.push(RvConst::Li(lo as i32));
        return;
    }
    if let Ok(v32) = i32::try_from(v) {
        let hi = v32.wrapping_sub(lo as i32);
        if i64::from(hi) + lo == v {
            plan.push(RvConst::Lui(hi));
            if lo != 0 {
                plan.push(RvConst::Addi(lo as i32));
            }
            return;
        }
    }
    // v = (hi << shift) + lo, with hi odd and shorter than v.
    let hi = (i128::from(v) - i128::from(lo)) >> 12;
    let tz = hi.trailing_zeros();
    plan_into((hi >> tz) as i64, plan);
    plan.push(RvConst::Slli(12 + tz));
    if lo != 0 {
        plan.push(RvConst::Addi(lo as i32));
    }
}

/// The RV64 emitter.
pub(crate) struct Rv64 {
    ops: VecAssembler<RiscvRelocation>,
    code: u64,
}

impl Rv64 {
    pub(crate) fn new(code: u64) -> Self {
        Self {
            ops: VecAssembler::new(0),
            code,
        }
    }

    fn li(&mut self, rd: u8, value: u64) {
        for step in const_plan(value) {
            match step {
                RvConst::Li(imm) => dynasm!(self.ops ; .arch riscv64i ; addi X(rd), x0, imm),
                RvConst::Lui(imm) => dynasm!(self.ops ; .arch riscv64i ; lui X(rd), imm),
                RvConst::Addi(imm) => dynasm!(self.ops ; .arch riscv64i ; addi X(rd), X(rd), imm),
                RvConst::Slli(sh) => dynasm!(self.ops ; .arch riscv64i ; slli X(rd), X(rd), sh),
            }
        }
    }

    fn sd_data(&mut self, rs: u8, offset: u16) {
        let offset = i32::from(offset);
        dynasm!(self.ops ; .arch riscv64i ; sd X(rs), [X(DATA), offset]);
    }

    fn sd_bell(&mut self, rs: u8, offset: u64) {
        let offset = offset as i32;
        dynasm!(self.ops ; .arch riscv64i ; sd X(rs), [X(BELL), offset]);
    }

    fn load_src(&mut self, src: Src) -> u8 {
        match src {
            Src::Imm(v) => {
                self.li(VAL, v);
                VAL
            }
            Src::Data(at) => {
                let at = i32::from(at);
                dynasm!(self.ops ; .arch riscv64i ; ld X(VAL), [X(DATA), at]);
                VAL
            }
            Src::Reg(r) => r,
        }
    }
}

impl Emitter for Rv64 {
    fn platform_reg_ok(&self, reg: u8) -> bool {
        reg < DATA
    }

    fn new_label(&mut self) -> DynamicLabel {
        self.ops.new_dynamic_label()
    }

    fn bind(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch riscv64i ; =>label);
    }

    fn jump(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch riscv64i ; jal x0, =>label);
    }

    fn start(&mut self, layout: &Layout, doorbell_addr: u64, power_off: DynamicLabel) {
        let (main, first, stuck) = (self.new_label(), self.new_label(), self.new_label());
        dynasm!(self.ops ; .arch riscv64i ; jal x0, =>main);
        let handler = self.code + self.ops.offset().0 as u64;
        let flag = i32::from(DATA_EXCEPTION_FLAG);
        dynasm!(self.ops ; .arch riscv64i ; .feature zicsr
            ; ld X(VAL), [X(DATA), flag]
            ; beq X(VAL), x0, =>first
            ; jal x0, =>stuck
            ; =>first
            ; addi X(VAL), x0, 1
            ; sd X(VAL), [X(DATA), flag]
            ; csrrs X(VAL), scause, x0
        );
        self.sd_bell(VAL, doorbell::VALUE);
        dynasm!(self.ops ; .arch riscv64i ; .feature zicsr ; csrrs X(VAL), sepc, x0);
        self.sd_bell(VAL, doorbell::AUX);
        dynasm!(self.ops ; .arch riscv64i ; .feature zicsr ; csrrs X(VAL), stval, x0);
        self.sd_bell(VAL, doorbell::AUX2);
        self.li(VAL, doorbell::encode(Command::Exception, 0, 0, 0));
        self.sd_bell(VAL, doorbell::CMD);
        dynasm!(self.ops ; .arch riscv64i ; jal x0, =>power_off ; =>stuck);
        // A second exception (powering off faulted too): keep exiting to the host, whose exit
        // budget ends the run, rather than spin silently.
        self.sd_bell(VAL, doorbell::VALUE);
        dynasm!(self.ops ; .arch riscv64i ; jal x0, =>stuck ; =>main);
        self.li(DATA, layout.data);
        self.li(BELL, doorbell_addr);
        self.li(ADDR, handler);
        dynasm!(self.ops ; .arch riscv64i ; .feature zicsr ; csrrw x0, stvec, X(ADDR));
    }

    fn store(&mut self, addr: u64, size: u8, value: u64) {
        self.li(ADDR, addr);
        self.li(VAL, value);
        match size {
            1 => dynasm!(self.ops ; .arch riscv64i ; sb X(VAL), [X(ADDR), 0]),
            2 => dynasm!(self.ops ; .arch riscv64i ; sh X(VAL), [X(ADDR), 0]),
            4 => dynasm!(self.ops ; .arch riscv64i ; sw X(VAL), [X(ADDR), 0]),
            _ => dynasm!(self.ops ; .arch riscv64i ; sd X(VAL), [X(ADDR), 0]),
        }
    }

    fn load(&mut self, addr: u64, size: u8, signed: bool, dest: u16) {
        self.li(ADDR, addr);
        match (size, signed) {
            (1, false) => dynasm!(self.ops ; .arch riscv64i ; lbu X(VAL), [X(ADDR), 0]),
            (1, true) => dynasm!(self.ops ; .arch riscv64i ; lb X(VAL), [X(ADDR), 0]),
            (2, false) => dynasm!(self.ops ; .arch riscv64i ; lhu X(VAL), [X(ADDR), 0]),
            (2, true) => dynasm!(self.ops ; .arch riscv64i ; lh X(VAL), [X(ADDR), 0]),
            (4, false) => dynasm!(self.ops ; .arch riscv64i ; lwu X(VAL), [X(ADDR), 0]),
            (4, true) => dynasm!(self.ops ; .arch riscv64i ; lw X(VAL), [X(ADDR), 0]),
            _ => dynasm!(self.ops ; .arch riscv64i ; ld X(VAL), [X(ADDR), 0]),
        }
        self.sd_data(VAL, dest);
    }

    fn doorbell(&mut self, offset: u64, src: Src) {
        let rs = self.load_src(src);
        self.sd_bell(rs, offset);
    }

    fn branch_eq(&mut self, src: Src, value: u64, target: DynamicLabel) {
        let rs = self.load_src(src);
        self.li(TMP, value);
        dynasm!(self.ops ; .arch riscv64i ; beq X(rs), X(TMP), =>target);
    }

    fn repeat_start(&mut self, depth: usize, count: u32) -> DynamicLabel {
        let top = self.new_label();
        self.li(COUNTER0 + depth as u8, u64::from(count));
        self.bind(top);
        top
    }

    fn repeat_end(&mut self, depth: usize, top: DynamicLabel) {
        let counter = COUNTER0 + depth as u8;
        let out = self.new_label();
        dynasm!(self.ops ; .arch riscv64i
            ; addi X(counter), X(counter), -1
            ; beq X(counter), x0, =>out
            ; jal x0, =>top
            ; =>out
        );
    }

    fn call(&mut self, conduit: Conduit, args: &[(u8, u64)]) -> Result<(), String> {
        if conduit != Conduit::Ecall {
            return Err(format!("conduit {conduit:?}"));
        }
        for &(reg, value) in args {
            self.li(reg, value);
        }
        dynasm!(self.ops ; .arch riscv64i ; ecall);
        Ok(())
    }

    fn save(&mut self, reg: u8, dest: u16) {
        self.sd_data(reg, dest);
    }

    fn entropy(
        &mut self,
        source: EntropySource,
        dest: u16,
        fail: DynamicLabel,
    ) -> Result<(), String> {
        if source != EntropySource::Seed {
            return Err(format!("entropy source {source:?}"));
        }
        let (top, ok) = (self.new_label(), self.new_label());
        self.li(RETRY, u64::from(doorbell::ENTROPY_RETRIES));
        // OPST = bits 31:30; ES16 = 0b10; the entropy is bits 15:0.
        dynasm!(self.ops ; .arch riscv64i ; .feature zicsr
            ; =>top
            ; csrrw X(VAL), seed, x0
            ; srli X(TMP), X(VAL), 30
            ; addi X(ADDR), x0, 2
            ; beq X(TMP), X(ADDR), =>ok
            ; addi X(RETRY), X(RETRY), -1
            ; bne X(RETRY), x0, =>top
        );
        self.sd_data(VAL, dest);
        dynasm!(self.ops ; .arch riscv64i
            ; jal x0, =>fail
            ; =>ok
            ; slli X(VAL), X(VAL), 48
            ; srli X(VAL), X(VAL), 48
        );
        self.sd_data(VAL, dest);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, LowerError> {
        self.ops
            .finalize()
            .map_err(|e| LowerError::Assemble(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::{const_plan, RvConst};

    #[test]
    fn const_plans_build_every_value_with_lui_addi_slli() {
        for value in crate::guest::aarch64::tests::values().into_iter().chain([
            0x7fff_f800,
            0x7fff_ffff,
            0x8000_0000,
            i64::MAX as u64,
        ]) {
            let plan = const_plan(value);
            assert!(!plan.is_empty() && plan.len() <= 8, "{value:#x}: {plan:?}");
            let mut rd = 0u64;
            for (i, step) in plan.iter().enumerate() {
                rd = match *step {
                    RvConst::Li(imm) if i == 0 && (-2048..2048).contains(&imm) => imm as i64 as u64,
                    RvConst::Lui(imm) if i == 0 && imm & 0xfff == 0 => imm as i64 as u64,
                    RvConst::Addi(imm) if i > 0 && (-2048..2048).contains(&imm) => {
                        rd.wrapping_add(imm as i64 as u64)
                    }
                    RvConst::Slli(sh) if i > 0 && sh < 64 => rd << sh,
                    _ => panic!("{value:#x}: bad plan {plan:?}"),
                };
            }
            assert_eq!(rd, value, "{plan:?}");
        }
    }
}
