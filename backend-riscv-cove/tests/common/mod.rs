//! Shared test helpers: a tiny RV64 assembler (encodings checked against
//! `riscv64-linux-gnu-as` in `encodings_match_gnu_as`), a failure-injecting / spying `Covh`
//! wrapper, and a launch harness.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use backend_riscv_cove::abi::{
    self, covh, csr, nacl_csr_offset, nacl_gpr_offset, SbiError, SbiRet,
};
use backend_riscv_cove::covh::{Covh, HostMemError, TrapCsrs};
use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::{CoveBackend, CoveVm, ModelConfig, TsmModel};
use cvm_core::vm_memory::GuestMemoryMmap;
use cvm_core::{
    Confidentiality, ManagedVm, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig, VmExit,
};

pub const RAM: u64 = 0x8000_0000;
pub const RAM_SIZE: u64 = 0x20_0000;
pub const DOORBELL: u64 = 0x1000_0000;
pub const DATA: u64 = RAM + 0x10_0000;

// Registers.
pub const ZERO: u8 = 0;
pub const RA: u8 = 1;
pub const T0: u8 = 5;
pub const T1: u8 = 6;
pub const T2: u8 = 7;
pub const S0: u8 = 8;
pub const S1: u8 = 9;
pub const A0: u8 = 10;
pub const A1: u8 = 11;
pub const A2: u8 = 12;
pub const A3: u8 = 13;
pub const A6: u8 = 16;
pub const A7: u8 = 17;
pub const S2: u8 = 18;
pub const S3: u8 = 19;

/// A minimal RV64 assembler.
#[derive(Default, Clone)]
pub struct Asm {
    pub words: Vec<u32>,
}

fn i_type(imm: i32, rs1: u8, f3: u32, rd: u8, op: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (u32::from(rs1) << 15) | (f3 << 12) | (u32::from(rd) << 7) | op
}

fn s_type(imm: i32, rs2: u8, rs1: u8, f3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7f) << 25)
        | (u32::from(rs2) << 20)
        | (u32::from(rs1) << 15)
        | (f3 << 12)
        | ((imm & 0x1f) << 7)
        | 0x23
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn here(&self) -> usize {
        self.words.len() * 4
    }
    pub fn emit(&mut self, w: u32) -> &mut Self {
        self.words.push(w);
        self
    }
    pub fn addi(&mut self, rd: u8, rs1: u8, imm: i32) -> &mut Self {
        self.emit(i_type(imm, rs1, 0, rd, 0x13))
    }
    pub fn addiw(&mut self, rd: u8, rs1: u8, imm: i32) -> &mut Self {
        self.emit(i_type(imm, rs1, 0, rd, 0x1b))
    }
    pub fn slli(&mut self, rd: u8, rs1: u8, sh: u32) -> &mut Self {
        self.emit(i_type(sh as i32, rs1, 1, rd, 0x13))
    }
    pub fn lui(&mut self, rd: u8, imm20: u32) -> &mut Self {
        self.emit((imm20 << 12) | (u32::from(rd) << 7) | 0x37)
    }
    pub fn add(&mut self, rd: u8, rs1: u8, rs2: u8) -> &mut Self {
        self.emit((u32::from(rs2) << 20) | (u32::from(rs1) << 15) | (u32::from(rd) << 7) | 0x33)
    }
    pub fn mv(&mut self, rd: u8, rs: u8) -> &mut Self {
        self.addi(rd, rs, 0)
    }
    /// Loads any 64-bit constant.
    pub fn li(&mut self, rd: u8, v: u64) -> &mut Self {
        let v = v as i64;
        if (-(1i64 << 31)..(1i64 << 31)).contains(&v) {
            let lo = ((v << 52) >> 52) as i32;
            let hi = (((v - i64::from(lo)) >> 12) & 0xfffff) as u32;
            if hi != 0 {
                self.lui(rd, hi);
                if lo != 0 {
                    self.addiw(rd, rd, lo);
                }
            } else {
                self.addi(rd, ZERO, lo);
            }
            return self;
        }
        let lo = ((v << 52) >> 52) as i32;
        let hi = (v - i64::from(lo)) >> 12;
        self.li(rd, hi as u64);
        self.slli(rd, rd, 12);
        if lo != 0 {
            self.addi(rd, rd, lo);
        }
        self
    }
    pub fn load(&mut self, f3: u32, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.emit(i_type(off, rs1, f3, rd, 0x03))
    }
    pub fn lb(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(0, rd, rs1, off)
    }
    pub fn lh(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(1, rd, rs1, off)
    }
    pub fn lw(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(2, rd, rs1, off)
    }
    pub fn ld(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(3, rd, rs1, off)
    }
    pub fn lbu(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(4, rd, rs1, off)
    }
    pub fn lhu(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(5, rd, rs1, off)
    }
    pub fn lwu(&mut self, rd: u8, rs1: u8, off: i32) -> &mut Self {
        self.load(6, rd, rs1, off)
    }
    pub fn sb(&mut self, rs2: u8, rs1: u8, off: i32) -> &mut Self {
        self.emit(s_type(off, rs2, rs1, 0))
    }
    pub fn sh(&mut self, rs2: u8, rs1: u8, off: i32) -> &mut Self {
        self.emit(s_type(off, rs2, rs1, 1))
    }
    pub fn sw(&mut self, rs2: u8, rs1: u8, off: i32) -> &mut Self {
        self.emit(s_type(off, rs2, rs1, 2))
    }
    pub fn sd(&mut self, rs2: u8, rs1: u8, off: i32) -> &mut Self {
        self.emit(s_type(off, rs2, rs1, 3))
    }
    pub fn ecall(&mut self) -> &mut Self {
        self.emit(0x73)
    }
    pub fn wfi(&mut self) -> &mut Self {
        self.emit(0x1050_0073)
    }
    pub fn csr(&mut self, f3: u32, rd: u8, csr: u16, rs1: u8) -> &mut Self {
        self.emit(i_type(i32::from(csr), rs1, f3, rd, 0x73))
    }
    pub fn csrrw(&mut self, rd: u8, csr: u16, rs1: u8) -> &mut Self {
        self.csr(1, rd, csr, rs1)
    }
    pub fn csrrs(&mut self, rd: u8, csr: u16, rs1: u8) -> &mut Self {
        self.csr(2, rd, csr, rs1)
    }
    /// `jal x0, off` (relative, bytes).
    pub fn j(&mut self, off: i32) -> &mut Self {
        let o = off as u32;
        self.emit(
            (((o >> 20) & 1) << 31)
                | (((o >> 1) & 0x3ff) << 21)
                | (((o >> 11) & 1) << 20)
                | (((o >> 12) & 0xff) << 12)
                | 0x6f,
        )
    }
    /// SBI call: a7 = eid, a6 = fid, a0.. = args, ecall.
    pub fn sbi(&mut self, eid: u32, fid: u32, args: &[u64]) -> &mut Self {
        self.li(A7, u64::from(eid));
        self.li(A6, u64::from(fid));
        for (i, &a) in args.iter().enumerate() {
            self.li(A0 + i as u8, a);
        }
        self.ecall()
    }
    /// s0 = DOORBELL and register it as MMIO (COVG ADD_MMIO_REGION); report a0 (expect 0).
    pub fn prologue(&mut self) -> &mut Self {
        self.sbi(
            abi::EID_COVG,
            abi::covg::ADD_MMIO_REGION,
            &[DOORBELL, 0x1000],
        );
        self.li(S0, DOORBELL);
        self.sd(A0, S0, 0)
    }
    /// Reports register `r` through an 8-byte MMIO store to the doorbell.
    pub fn report(&mut self, r: u8) -> &mut Self {
        self.sd(r, S0, 0)
    }
    /// SRST shutdown.
    pub fn off(&mut self) -> &mut Self {
        self.sbi(abi::EID_SRST, 0, &[0, 0])
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

/// What the spy saw after one TVM_VCPU_RUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSnapshot {
    pub ret: i64,
    pub scause: u64,
    pub stval: u64,
    pub htval: u64,
    pub htinst: u64,
    pub a0: u64,
}

/// A `Covh` wrapper that fails the Nth call (1-based) once and records VCPU_RUN exits.
pub struct Spy {
    pub inner: Arc<TsmModel>,
    pub fail_at: Option<usize>,
    pub calls: AtomicUsize,
    pub nacl: Mutex<Vec<(usize, u64)>>,
    pub runs: Mutex<Vec<RunSnapshot>>,
    pub failed: Mutex<Option<(u32, u32)>>,
}

impl Spy {
    pub fn new(inner: Arc<TsmModel>, fail_at: Option<usize>) -> Self {
        Self {
            inner,
            fail_at,
            calls: AtomicUsize::new(0),
            nacl: Mutex::new(Vec::new()),
            runs: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
        }
    }

    fn read(&self, pa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.inner.host_read(pa, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

impl Covh for Spy {
    fn harts(&self) -> usize {
        self.inner.harts()
    }
    fn host_ram(&self) -> (u64, u64) {
        self.inner.host_ram()
    }
    fn ecall(&self, hart: usize, eid: u32, fid: u32, args: [u64; 6]) -> SbiRet {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if Some(n) == self.fail_at {
            *self.failed.lock().unwrap() = Some((eid, fid));
            return SbiRet::err(SbiError::Failed);
        }
        let r = self.inner.ecall(hart, eid, fid, args);
        if eid == abi::EID_NACL && fid == abi::nacl::SET_SHMEM && r.error == 0 {
            self.nacl.lock().unwrap().push((hart, args[0]));
        }
        if eid == abi::EID_COVH && fid == covh::TVM_VCPU_RUN && r.error == 0 {
            let pa = self
                .nacl
                .lock()
                .unwrap()
                .iter()
                .find(|(h, _)| *h == hart)
                .map(|(_, p)| *p)
                .unwrap();
            let t = self.inner.trap_csrs(hart);
            self.runs.lock().unwrap().push(RunSnapshot {
                ret: r.value as i64,
                scause: t.scause,
                stval: t.stval,
                htval: self.read(pa + nacl_csr_offset(csr::HTVAL) as u64),
                htinst: self.read(pa + nacl_csr_offset(csr::HTINST) as u64),
                a0: self.read(pa + nacl_gpr_offset(A0) as u64),
            });
        }
        r
    }
    fn trap_csrs(&self, hart: usize) -> TrapCsrs {
        self.inner.trap_csrs(hart)
    }
    fn host_read(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.inner.host_read(pa, buf)
    }
    fn host_write(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.inner.host_write(pa, data)
    }
    fn pin_user_memory(
        &self,
        mem: &GuestMemoryMmap,
        gpa: u64,
        size: u64,
    ) -> Result<u64, HostMemError> {
        self.inner.pin_user_memory(mem, gpa, size)
    }
    fn unpin_user_memory(&self, pa: u64) -> Result<(), HostMemError> {
        self.inner.unpin_user_memory(pa)
    }
}

pub fn model() -> Arc<TsmModel> {
    Arc::new(TsmModel::new(ModelConfig::default()))
}

pub fn config() -> VmConfig {
    let mut c = VmConfig::new(Confidentiality::RiscvCove);
    c.vcpus = 2;
    c
}

/// A launched TVM: private RAM at `RAM` with `code` measured at `RAM`, vCPU 0 entering there
/// with a1 = `DATA`, finalized.
pub fn launch(
    backend: &CoveBackend,
    cfg: &VmConfig,
    code: &[u8],
) -> (ManagedVm<CoveVm>, Box<dyn Vcpu>) {
    let vm = backend.create_cove_vm(cfg).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, code, Measure::Yes).unwrap();
    let v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, DATA])).unwrap();
    vm.finalize().unwrap();
    (vm, v0)
}

/// Runs until SystemOff, answering MMIO loads with `read(gpa, size)` and collecting the
/// doorbell (8-byte) writes. Panics on anything else.
pub fn run_collect(v: &mut dyn Vcpu, mut read: impl FnMut(u64, u8) -> u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut resume = Resume::Done;
    for _ in 0..1000 {
        match v.run(resume).unwrap() {
            VmExit::Mmio { write: Some(x), .. } => {
                out.push(x);
                resume = Resume::Done;
            }
            VmExit::Mmio {
                gpa,
                size,
                write: None,
            } => resume = Resume::MmioRead(read(gpa, size)),
            VmExit::SystemOff => return out,
            other => panic!("unexpected exit {other:?} after reports {out:x?}"),
        }
    }
    panic!("no system off");
}

pub fn backend_with(model: &Arc<TsmModel>, isa: HostIsa) -> CoveBackend {
    CoveBackend::with_model(Arc::clone(model), isa)
}
