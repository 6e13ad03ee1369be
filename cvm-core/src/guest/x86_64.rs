//! x86-64 lowering (64-bit long mode, no stack, no IDT).
//!
//! The vCPU setup must provide: long mode (CS.L = 1), paging with an identity map covering
//! every address the layout names (code, data page, doorbell, devices — `[0, 4 GiB)` for
//! [`Layout::standard`]), RFLAGS.IF = 0. No stack is used. Without an IDT there is no
//! exception handler: a fault becomes a triple fault, which KVM reports as a shutdown.
//!
//! Registers: platform steps may use rax, rcx, rdx, rbx, rsi, rdi. The lowering owns
//!
//! | reg | use |
//! |---|---|
//! | r8 | data page base |
//! | r9 | doorbell base |
//! | r10 | address of the current access |
//! | r11 | value of the current access |
//! | rbp | comparison constant; entropy retry counter |
//! | r12–r15 | `Repeat` counters, one per nesting level |
//!
//! MMIO and RAM accesses are one `mov`/`movzx`/`movsx`/`movsxd` through r10, which KVM's
//! instruction emulator decodes.

// dynasm! expands dynamic registers as `X(r).into()`; for `u8` operands that is a no-op.
#![allow(clippy::useless_conversion)]

use dynasmrt::x64::X64Relocation;
use dynasmrt::{dynasm, DynamicLabel, DynasmApi, DynasmLabelApi, VecAssembler};

use super::doorbell;
use super::lower::{Emitter, LowerError, Src};
use super::platform::{x86_reg, Conduit, EntropySource, Layout};

const DATA: u8 = 8;
const BELL: u8 = 9;
const ADDR: u8 = 10;
const VAL: u8 = 11;
const TMP: u8 = 5; // rbp
const COUNTER0: u8 = 12;

/// The x86-64 emitter.
pub(crate) struct X64 {
    ops: VecAssembler<X64Relocation>,
}

impl X64 {
    pub(crate) fn new(_code: u64) -> Self {
        Self {
            ops: VecAssembler::new(0),
        }
    }

    /// The shortest `mov` that leaves `value` in `reg`.
    fn mov_imm(&mut self, reg: u8, value: u64) {
        if let Ok(v) = u32::try_from(value) {
            // mov r32, imm32 zero-extends.
            let v = v as i32;
            dynasm!(self.ops ; .arch x64 ; mov Rd(reg), DWORD v);
        } else if let Ok(v) = i32::try_from(value as i64) {
            dynasm!(self.ops ; .arch x64 ; mov Rq(reg), DWORD v);
        } else {
            let v = value as i64;
            dynasm!(self.ops ; .arch x64 ; mov Rq(reg), QWORD v);
        }
    }

    fn load_src(&mut self, src: Src) -> u8 {
        match src {
            Src::Imm(v) => {
                self.mov_imm(VAL, v);
                VAL
            }
            Src::Data(at) => {
                let at = i32::from(at);
                dynasm!(self.ops ; .arch x64 ; mov r11, QWORD [r8 + at]);
                VAL
            }
            Src::Reg(r) => r,
        }
    }

    fn str_data(&mut self, reg: u8, dest: u16) {
        let dest = i32::from(dest);
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r8 + dest], Rq(reg));
    }
}

impl Emitter for X64 {
    fn platform_reg_ok(&self, reg: u8) -> bool {
        matches!(
            reg,
            x86_reg::RAX | x86_reg::RCX | x86_reg::RDX | x86_reg::RBX | x86_reg::RSI | x86_reg::RDI
        )
    }

    fn new_label(&mut self) -> DynamicLabel {
        self.ops.new_dynamic_label()
    }

    fn bind(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch x64 ; =>label);
    }

    fn jump(&mut self, label: DynamicLabel) {
        dynasm!(self.ops ; .arch x64 ; jmp =>label);
    }

    fn start(&mut self, layout: &Layout, doorbell_addr: u64, _power_off: DynamicLabel) {
        self.mov_imm(DATA, layout.data);
        self.mov_imm(BELL, doorbell_addr);
    }

    fn store(&mut self, addr: u64, size: u8, value: u64) {
        self.mov_imm(ADDR, addr);
        self.mov_imm(VAL, value);
        match size {
            1 => dynasm!(self.ops ; .arch x64 ; mov BYTE [r10], r11b),
            2 => dynasm!(self.ops ; .arch x64 ; mov WORD [r10], r11w),
            4 => dynasm!(self.ops ; .arch x64 ; mov DWORD [r10], r11d),
            _ => dynasm!(self.ops ; .arch x64 ; mov QWORD [r10], r11),
        }
    }

    fn load(&mut self, addr: u64, size: u8, signed: bool, dest: u16) {
        self.mov_imm(ADDR, addr);
        match (size, signed) {
            (1, false) => dynasm!(self.ops ; .arch x64 ; movzx r11d, BYTE [r10]),
            (1, true) => dynasm!(self.ops ; .arch x64 ; movsx r11, BYTE [r10]),
            (2, false) => dynasm!(self.ops ; .arch x64 ; movzx r11d, WORD [r10]),
            (2, true) => dynasm!(self.ops ; .arch x64 ; movsx r11, WORD [r10]),
            (4, false) => dynasm!(self.ops ; .arch x64 ; mov r11d, DWORD [r10]),
            (4, true) => dynasm!(self.ops ; .arch x64 ; movsxd r11, DWORD [r10]),
            _ => dynasm!(self.ops ; .arch x64 ; mov r11, QWORD [r10]),
        }
        self.str_data(VAL, dest);
    }

    fn doorbell(&mut self, offset: u64, src: Src) {
        let reg = self.load_src(src);
        let offset = offset as i32;
        dynasm!(self.ops ; .arch x64 ; mov QWORD [r9 + offset], Rq(reg));
    }

    fn branch_eq(&mut self, src: Src, value: u64, target: DynamicLabel) {
        let reg = self.load_src(src);
        self.mov_imm(TMP, value);
        dynasm!(self.ops ; .arch x64 ; cmp Rq(reg), rbp ; je =>target);
    }

    fn repeat_start(&mut self, depth: usize, count: u32) -> DynamicLabel {
        let top = self.new_label();
        self.mov_imm(COUNTER0 + depth as u8, u64::from(count));
        self.bind(top);
        top
    }

    fn repeat_end(&mut self, depth: usize, top: DynamicLabel) {
        let counter = COUNTER0 + depth as u8;
        dynasm!(self.ops ; .arch x64 ; sub Rq(counter), 1 ; jnz =>top);
    }

    fn call(&mut self, conduit: Conduit, args: &[(u8, u64)]) -> Result<(), String> {
        if !matches!(conduit, Conduit::Vmcall | Conduit::Hlt) {
            return Err(format!("conduit {conduit:?}"));
        }
        for &(reg, value) in args {
            self.mov_imm(reg, value);
        }
        match conduit {
            Conduit::Hlt => dynasm!(self.ops ; .arch x64 ; hlt),
            _ => dynasm!(self.ops ; .arch x64 ; vmcall),
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
        if source != EntropySource::Rdrand {
            return Err(format!("entropy source {source:?}"));
        }
        let (top, ok) = (self.new_label(), self.new_label());
        self.mov_imm(TMP, u64::from(doorbell::ENTROPY_RETRIES));
        // RDRAND sets CF on success.
        dynasm!(self.ops ; .arch x64
            ; =>top
            ; rdrand r11
            ; jc =>ok
            ; sub rbp, 1
            ; jnz =>top
        );
        self.str_data(VAL, dest);
        dynasm!(self.ops ; .arch x64 ; jmp =>fail ; =>ok);
        self.str_data(VAL, dest);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<Vec<u8>, LowerError> {
        self.ops
            .finalize()
            .map_err(|e| LowerError::Assemble(e.to_string()))
    }
}
