//! Shared helpers for the KVM tests: opening KVM (or skipping), and a tiny x86-64 assembler.
#![allow(dead_code)]
// Test support: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use backend_kvm_plain::KvmBackend;
use cvm_core::{Backend, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig, VmExit};

/// Opens KVM. If it cannot be opened: with `CVM_REQUIRE_KVM=1` the test fails, otherwise it
/// prints "skipped: <reason>" and the caller returns.
pub fn kvm() -> Option<KvmBackend> {
    match KvmBackend::open() {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("CVM_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("CVM_REQUIRE_KVM=1 but KVM is unavailable: {e}");
            }
            println!("skipped: {e}");
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Guest RAM base used by the tests.
pub const RAM: u64 = 0x10_0000;
/// Guest RAM size used by the tests.
pub const RAM_SIZE: u64 = 0x10_0000;
/// An address with no memory behind it (MMIO).
pub const MMIO: u64 = 0x1_0000_0000 + 0x1000;

/// A VM with one shared RAM region holding `code` at `RAM`, one vCPU entering there with
/// `args`, finalized.
pub fn vm_with_code(b: &KvmBackend, code: &[u8], args: &[u64]) -> (Box<dyn Vm>, Box<dyn Vcpu>) {
    let vm = b.create_vm(&VmConfig::default()).expect("create_vm");
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE))
        .expect("add_memory");
    vm.load(RAM, code, Measure::Yes).expect("load");
    let vcpu = vm
        .create_vcpu(VcpuInit::boot(RAM, args))
        .expect("create_vcpu");
    vm.finalize().expect("finalize");
    (vm, vcpu)
}

/// Runs with `resume` and returns the exit, panicking on errors.
pub fn run(vcpu: &mut Box<dyn Vcpu>, resume: Resume) -> VmExit {
    vcpu.run(resume).expect("run")
}

/// Register numbers (ModRM numbering).
pub mod r {
    pub const RAX: u8 = 0;
    pub const RCX: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RBX: u8 = 3;
    pub const RSI: u8 = 6;
    pub const RDI: u8 = 7;
    pub const R8: u8 = 8;
    pub const R9: u8 = 9;
}

/// A minimal x86-64 assembler for hand-written test guests.
#[derive(Default)]
pub struct Asm {
    pub code: Vec<u8>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    fn b(&mut self, bytes: &[u8]) -> &mut Self {
        self.code.extend_from_slice(bytes);
        self
    }
    /// mov reg, imm64
    pub fn mov_imm(&mut self, reg: u8, imm: u64) -> &mut Self {
        let rex = 0x48 | u8::from(reg >= 8);
        self.b(&[rex, 0xb8 + (reg & 7)]);
        self.b(&imm.to_le_bytes())
    }
    /// mov [rdi], rax with `size` bytes.
    pub fn store_rdi(&mut self, size: u8) -> &mut Self {
        match size {
            1 => self.b(&[0x88, 0x07]),
            2 => self.b(&[0x66, 0x89, 0x07]),
            4 => self.b(&[0x89, 0x07]),
            _ => self.b(&[0x48, 0x89, 0x07]),
        }
    }
    /// rax = zero-extended load of `size` bytes at [rdi].
    pub fn load_rdi(&mut self, size: u8) -> &mut Self {
        match size {
            1 => self.b(&[0x48, 0x0f, 0xb6, 0x07]),
            2 => self.b(&[0x48, 0x0f, 0xb7, 0x07]),
            4 => self.b(&[0x8b, 0x07]),
            _ => self.b(&[0x48, 0x8b, 0x07]),
        }
    }
    /// rax = sign-extended load of `size` bytes at [rdi].
    pub fn load_rdi_signed(&mut self, size: u8) -> &mut Self {
        match size {
            1 => self.b(&[0x48, 0x0f, 0xbe, 0x07]),
            2 => self.b(&[0x48, 0x0f, 0xbf, 0x07]),
            4 => self.b(&[0x48, 0x63, 0x07]),
            _ => self.b(&[0x48, 0x8b, 0x07]),
        }
    }
    /// mov [rsi], rax (8 bytes).
    pub fn store_rax_rsi(&mut self) -> &mut Self {
        self.b(&[0x48, 0x89, 0x06])
    }
    /// out dx, al/ax/eax.
    pub fn out(&mut self, size: u8) -> &mut Self {
        match size {
            1 => self.b(&[0xee]),
            2 => self.b(&[0x66, 0xef]),
            _ => self.b(&[0xef]),
        }
    }
    /// in al/ax/eax, dx (zero-extended into rax first: xor eax, eax).
    pub fn inp(&mut self, size: u8) -> &mut Self {
        self.b(&[0x31, 0xc0]);
        match size {
            1 => self.b(&[0xec]),
            2 => self.b(&[0x66, 0xed]),
            _ => self.b(&[0xed]),
        }
    }
    pub fn hlt(&mut self) -> &mut Self {
        self.b(&[0xf4])
    }
    pub fn vmcall(&mut self) -> &mut Self {
        self.b(&[0x0f, 0x01, 0xc1])
    }
    /// ud2
    pub fn ud2(&mut self) -> &mut Self {
        self.b(&[0x0f, 0x0b])
    }
    /// dec rcx; jnz back to `target` (an offset in `code`).
    pub fn loop_rcx(&mut self, target: usize) -> &mut Self {
        self.b(&[0x48, 0xff, 0xc9]);
        let here = self.code.len() + 2;
        let rel = target as i64 - here as i64;
        assert!((-128..=127).contains(&rel));
        self.b(&[0x75, rel as i8 as u8])
    }
    pub fn here(&self) -> usize {
        self.code.len()
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.code.clone()
    }
}
