//! Robustness of the TSM model and the host flow against hostile input: deterministic, seeded
//! randomized tests (a hand-written xorshift PRNG) plus minimized regressions for every bug
//! they found.
//!
//! * **Hostile guests**: TVMs running random 32-bit words, random 16-bit parcels, and random
//!   streams of what reaches the TSM (SBI ECALLs of every known EID with interesting
//!   arguments, loads/stores to every kind of GPA, CSR accesses incl. SEED in every form,
//!   WFI, SRET), driven through the real host flow ([`CoveBackend`]) with random but valid
//!   answers. Every `run` must return (`Ok` or a typed `Err`) and, after `destroy()` + drop,
//!   the TSM holds no converted page, no shared page, no TVM and no pinned VMM memory.
//! * **Hostile hosts**: random sequences of raw COVH/COVI/NACL/BASE/model ECALLs on the
//!   [`Covh`] implementation, interleaved with valid flows (incl. TVM_VCPU_RUN with random NACL
//!   scratch/CSR contents after each kind of exit). Every return is a valid SBI status, the
//!   model's invariants hold after each call, and a full teardown (DESTROY_TVM, fence,
//!   RECLAIM) returns the TSM to zero converted pages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_riscv_cove::abi::{
    self, covg, covh, covi, csr as ncsr, cvm_model, nacl_csr_offset, nacl_gpr_offset, SbiRet,
    NACL_MODEL_INJECT_FAULT_OFFSET, PAGE_SIZE,
};
use backend_riscv_cove::covh::Covh;
use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::{CoveBackend, ModelConfig, TsmModel};
use common::{Asm, A0, A1, A6, A7, DOORBELL, RAM, RAM_SIZE, T0, T1};
use cvm_core::vm_memory::{GuestAddress, GuestMemoryMmap};
use cvm_core::{
    Confidentiality, EntropyPolicy, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig,
    VmExit,
};

// ---------------------------------------------------------------------------------------------
// PRNG and shared helpers.
// ---------------------------------------------------------------------------------------------

/// xorshift64* (Vigna): deterministic, seedable, no dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut r = Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        if r.0 == 0 {
            r.0 = 1;
        }
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Every EID a guest or host might use, known and unknown.
const DBCN: u32 = 0x4442_434E;

/// `ROBUSTNESS_SCALE=n` multiplies the case counts and time budgets (for longer soaks; the
/// default run stays within a few seconds of a debug build).
fn scale() -> u64 {
    std::env::var("ROBUSTNESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn valid_sbi_status(r: SbiRet) -> bool {
    r.error == 0 || (-14..=-1).contains(&r.error)
}

// ---------------------------------------------------------------------------------------------
// Hostile guests.
// ---------------------------------------------------------------------------------------------

/// A VMM shared region.
const SHARED: u64 = 0x9000_0000;
const SHARED_SIZE: u64 = 0x4000;
/// The guest's trap handler (measured, loaded separately from the code).
const HANDLER: u64 = RAM + 0x1_0000;
/// The handler's trap counter.
const COUNTER: u64 = RAM + 0x1_8000;
/// Traps the handler takes before it shuts the system down.
const MAX_GUEST_TRAPS: i32 = 48;
/// Instructions per TVM_VCPU_RUN (the model's host timer): small, so a spinning guest costs
/// little.
const GUEST_RUN_BUDGET: u64 = 4_000;
/// Code bytes at most (must stay below `HANDLER`).
const MAX_CODE: usize = 0x8000;

/// Output of the guest program builders: code at `RAM`.
struct Prog {
    bytes: Vec<u8>,
}

impl Prog {
    fn new() -> Self {
        Self { bytes: Vec::new() }
    }
    fn asm(&mut self, f: impl FnOnce(&mut Asm)) {
        let mut a = Asm::new();
        f(&mut a);
        self.bytes.extend(a.bytes());
    }
    fn w16(&mut self, h: u16) {
        self.bytes.extend(h.to_le_bytes());
    }
    fn w32(&mut self, w: u32) {
        self.bytes.extend(w.to_le_bytes());
    }
}

fn b_type(f3: u32, rs1: u8, rs2: u8, off: i32) -> u32 {
    let imm = off as u32;
    (((imm >> 12) & 1) << 31)
        | (((imm >> 5) & 0x3F) << 25)
        | (u32::from(rs2) << 20)
        | (u32::from(rs1) << 15)
        | (f3 << 12)
        | (((imm >> 1) & 0xF) << 8)
        | (((imm >> 11) & 1) << 7)
        | 0x63
}

/// The guest's trap handler: counts traps at `COUNTER` (shutting down after
/// `MAX_GUEST_TRAPS`), then skips the trapping instruction (2 or 4 bytes) and SRETs.
fn handler() -> Vec<u8> {
    const T3: u8 = 28;
    const T4: u8 = 29;
    const T5: u8 = 30;
    const T6: u8 = 31;
    let mut a = Asm::new();
    a.li(T3, COUNTER)
        .ld(T4, T3, 0)
        .addi(T4, T4, 1)
        .sd(T4, T3, 0);
    a.li(T5, i64::from(MAX_GUEST_TRAPS) as u64);
    let mut shutdown = Asm::new();
    shutdown
        .li(A7, u64::from(abi::EID_SRST))
        .li(A6, 0)
        .li(A0, 0)
        .li(A1, 0)
        .ecall()
        .j(0);
    // blt t4, t5, over the shutdown.
    a.emit(b_type(4, T4, T5, 4 + shutdown.here() as i32));
    a.words.extend(&shutdown.words);
    a.csr(2, T6, ncsr_sepc(), 0); // csrr t6, sepc
    a.lhu(T5, T6, 0);
    a.emit(0x0030_0000 | (u32::from(T5) << 15) | (7 << 12) | (u32::from(T5) << 7) | 0x13); // andi t5, t5, 3
    a.li(T4, 3);
    a.addi(T6, T6, 2);
    a.emit(b_type(1, T5, T4, 8)); // bne t5, t4, +8
    a.addi(T6, T6, 2);
    a.csr(1, 0, ncsr_sepc(), T6); // csrw sepc, t6
    a.emit(0x1020_0073); // sret
    a.bytes()
}

fn ncsr_sepc() -> u16 {
    0x141
}

/// Sets stvec to the handler and registers the doorbell as MMIO.
fn prologue(p: &mut Prog) {
    p.asm(|a| {
        a.li(T0, HANDLER);
        a.csr(1, 0, 0x105, T0); // csrw stvec, t0
        a.sbi(abi::EID_COVG, covg::ADD_MMIO_REGION, &[DOORBELL, 0x1000]);
    });
}

fn epilogue(p: &mut Prog) {
    p.asm(|a| {
        a.off();
    });
}

/// Guest-physical addresses of every kind: mostly ones that keep the guest running
/// (confidential, shared-region, MMIO-registered), sometimes unmapped, unaligned or beyond the
/// GPA space (those are fatal for plain loads/stores).
fn interesting_gpa(r: &mut Rng) -> u64 {
    gpa_with_bad(r, 1, 4)
}

/// An address that is "bad" (unmapped, unaligned, …) with probability `num / den`.
fn gpa_with_bad(r: &mut Rng, num: u64, den: u64) -> u64 {
    let page = |r: &mut Rng| r.below(RAM_SIZE / PAGE_SIZE) * PAGE_SIZE;
    if !r.chance(num, den) {
        return match r.below(6) {
            0 | 1 => RAM + 0x2_0000 + page(r) / 2,
            2 => RAM + RAM_SIZE - PAGE_SIZE,
            3 => RAM + 0x2_0000 + r.below(8) * PAGE_SIZE,
            4 => DOORBELL + r.below(0x1000) / 8 * 8,
            _ => RAM + 0x2_0000 + page(r) / 2 + r.below(PAGE_SIZE / 8) * 8,
        };
    }
    match r.below(14) {
        0 => 0,
        1 => RAM + RAM_SIZE,
        2 => 0x4000_0000 + page(r),
        3 => u64::MAX,
        4 => !(PAGE_SIZE - 1),
        5 => RAM + page(r) + 1 + r.below(PAGE_SIZE - 1),
        6 => (1 << 50) - PAGE_SIZE,
        7 => 1 << 50,
        8 => RAM - PAGE_SIZE,
        9 => r.next(),
        10 => r.next() & !(PAGE_SIZE - 1) & ((1 << 50) - 1),
        _ => RAM + page(r),
    }
}

/// Lengths: mostly a few pages; sometimes 0, unaligned, huge or overflowing.
fn interesting_len(r: &mut Rng) -> u64 {
    if r.chance(2, 3) {
        return PAGE_SIZE * (1 + r.below(4));
    }
    match r.below(12) {
        0 => 0,
        1 => PAGE_SIZE * (1 + r.below(64)),
        2 => 1 + r.below(PAGE_SIZE * 4),
        3 => RAM_SIZE,
        4 => u64::MAX,
        5 => !(PAGE_SIZE - 1),
        6 => 1 << 49,
        7 => (1 << 50) - PAGE_SIZE,
        8 => 48,
        9 => r.next(),
        10 => 1 << 40,
        _ => 0x1000_0000,
    }
}

fn interesting_arg(r: &mut Rng, i: usize) -> u64 {
    // a0 is mostly an address, a1 mostly a length (the COVG/ATST convention).
    match (i, r.below(6)) {
        (0, 0..=3) | (_, 0) => interesting_gpa(r),
        (1, 0..=3) | (_, 1) => interesting_len(r),
        (_, 2) => r.below(24),
        (_, 3) => r.next(),
        _ => [0, 1, 2, 5, 17, 18, 19, 20, u64::MAX, 0x8000_0000, 48][r.below(11) as usize],
    }
}

const GUEST_EIDS: [u32; 12] = [
    abi::EID_COVG,
    abi::EID_ATST,
    abi::EID_HSM,
    abi::EID_SRST,
    abi::EID_FWFT,
    abi::EID_NACL,
    abi::EID_COVH,
    abi::EID_COVI,
    abi::EID_BASE,
    abi::EID_CVM_HOSTCALL,
    abi::EID_CVM_MODEL,
    DBCN,
];

/// Registers the random streams use (never the handler's t3..t6).
const REGS: [u8; 12] = [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17];

/// One random operation biased to what reaches the TSM.
fn random_op(r: &mut Rng, p: &mut Prog) {
    match r.below(16) {
        // SBI call.
        0..=6 => {
            let eid = if r.chance(1, 8) {
                if r.chance(1, 2) {
                    r.next()
                } else {
                    r.below(1 << 32)
                }
            } else {
                let e = if r.chance(1, 3) {
                    abi::EID_COVG
                } else {
                    r.pick(&GUEST_EIDS)
                };
                // SRST ends the run: keep it rare.
                if e == abi::EID_SRST && r.chance(3, 4) {
                    abi::EID_COVG
                } else {
                    e
                }
                .into()
            };
            let fid = if r.chance(1, 10) {
                r.next()
            } else if eid == u64::from(abi::EID_COVG) && r.chance(2, 3) {
                r.pick(&[
                    covg::SHARE_MEMORY,
                    covg::SHARE_MEMORY,
                    covg::UNSHARE_MEMORY,
                    covg::ADD_MMIO_REGION,
                ])
                .into()
            } else {
                r.below(12)
            };
            let args: Vec<u64> = (0..6).map(|i| interesting_arg(r, i)).collect();
            // HART_START of vCPU 1 at the handler-free code start sometimes, to get it going.
            let args = if eid == u64::from(abi::EID_HSM) && fid == 0 && r.chance(1, 2) {
                vec![1, RAM + 0x4000, r.next(), 0, 0, 0]
            } else {
                args
            };
            p.asm(|a| {
                a.li(A7, eid).li(A6, fid);
                for (i, v) in args.iter().enumerate() {
                    a.li(A0 + i as u8, *v);
                }
                a.ecall();
            });
        }
        // Loads and stores of every width to every kind of address.
        7..=10 => {
            let addr = gpa_with_bad(r, 1, 16);
            let reg = r.pick(&REGS);
            let f3 = r.below(7) as u32;
            let store = r.chance(1, 2);
            let val = r.next();
            p.asm(|a| {
                a.li(T0, addr);
                if store {
                    a.li(T1, val);
                    let f = f3 & 3;
                    match f {
                        0 => a.sb(T1, T0, 0),
                        1 => a.sh(T1, T0, 0),
                        2 => a.sw(T1, T0, 0),
                        _ => a.sd(T1, T0, 0),
                    };
                } else {
                    a.load(f3, reg, T0, 0);
                }
            });
            if r.chance(1, 4) {
                // Compressed forms with s0/s1 as base: c.lw/c.ld/c.sw/c.sd.
                let (base, reg3) = (8u8, r.below(8) as u16);
                p.asm(|a| {
                    a.li(base, addr & !7);
                });
                let op = r.pick(&[0b010u16, 0b011, 0b110, 0b111]);
                p.w16((op << 13) | (reg3 << 2) | (u16::from(base - 8) << 7));
            }
        }
        // CSR accesses: random CSRs and SEED in every form.
        11..=13 => {
            let csr = if r.chance(1, 2) {
                0x015
            } else {
                let any = r.below(4096) as u16;
                r.pick(&[
                    0x100u16, 0x104, 0x105, 0x106, 0x10A, 0x140, 0x141, 0x142, 0x143, 0x144, 0x180,
                    0xC00, 0xC01, 0xC02, 0x200, 0x600, 0x680, 0xE12, 0x300, 0xF14, any,
                ])
            };
            // Never clobber stvec with garbage too often; keep sepc/sstatus writes.
            let f3 = r.pick(&[1u32, 2, 3, 5, 6, 7]);
            let rd = r.pick(&REGS);
            let rs1 = if r.chance(1, 3) { 0 } else { r.pick(&REGS) };
            let val = r.next();
            if csr == 0x105 && r.chance(3, 4) {
                return;
            }
            p.asm(|a| {
                if rs1 != 0 {
                    a.li(rs1, val);
                }
                a.csr(f3, rd, csr, rs1);
            });
        }
        // WFI.
        14 => p.asm(|a| {
            a.wfi();
        }),
        // SRET to the next instruction, possibly into VU-mode.
        _ => {
            let spp = r.chance(1, 2);
            p.asm(|a| {
                // auipc t0, 0; addi t0, t0, 20 → the instruction after sret.
                a.emit(0x0000_0297);
                a.addi(T0, T0, if spp { 24 } else { 20 });
                a.csr(1, 0, 0x141, T0); // csrw sepc, t0
                if spp {
                    a.li(T1, 1 << 8);
                    a.csr(2, 0, 0x100, T1); // csrs sstatus, SPP
                } else {
                    a.li(T1, 1 << 8);
                    a.csr(3, 0, 0x100, T1); // csrc sstatus, SPP
                }
                a.emit(0x1020_0073);
            });
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestKind {
    Words,
    Parcels,
    Stream,
}

fn guest_code(r: &mut Rng, kind: GuestKind) -> Vec<u8> {
    let mut p = Prog::new();
    prologue(&mut p);
    match kind {
        GuestKind::Words => {
            for _ in 0..r.below(64) + 1 {
                let w = match r.below(4) {
                    0 => r.next() as u32,
                    // A valid major opcode with random fields.
                    _ => {
                        let op = r.pick(&[
                            0x03u32, 0x0F, 0x13, 0x17, 0x1B, 0x23, 0x33, 0x37, 0x3B, 0x63, 0x67,
                            0x6F, 0x73,
                        ]);
                        (r.next() as u32 & !0x7F) | op
                    }
                };
                p.w32(w);
            }
        }
        GuestKind::Parcels => {
            for _ in 0..r.below(96) + 1 {
                p.w16(r.next() as u16);
            }
            // Realign before the epilogue.
            if p.bytes.len() % 4 != 0 {
                p.w16(0x0001); // c.nop
            }
        }
        GuestKind::Stream => {
            for _ in 0..r.below(40) + 1 {
                random_op(r, &mut p);
                if p.bytes.len() > MAX_CODE - 256 {
                    break;
                }
            }
        }
    }
    epilogue(&mut p);
    assert!(p.bytes.len() < MAX_CODE);
    p.bytes
}

/// What one hostile-guest case saw.
#[derive(Debug, Default)]
struct GuestStats {
    cases: u64,
    runs: u64,
    exits: [u64; 12],
    errors: u64,
    interrupted: u64,
    /// Fault exits by syndrome (scause).
    faults: std::collections::BTreeMap<u64, u64>,
    /// `run` errors by message.
    error_kinds: std::collections::BTreeMap<String, u64>,
}

/// A random but valid answer to `exit`.
fn answer(r: &mut Rng, exit: &VmExit) -> Resume {
    match exit {
        VmExit::Mmio { write: None, .. } => {
            if r.chance(1, 8) {
                Resume::InjectAbort
            } else {
                Resume::MmioRead(r.next())
            }
        }
        VmExit::Mmio { write: Some(_), .. } => {
            if r.chance(1, 8) {
                Resume::InjectAbort
            } else {
                Resume::Done
            }
        }
        VmExit::ConvertMemory { .. } => Resume::Conversion(r.chance(2, 3)),
        VmExit::HostCall { .. } => Resume::HostCall([r.next(), r.next()]),
        VmExit::SysReg { .. } => {
            if r.chance(1, 8) {
                Resume::InjectAbort
            } else {
                Resume::SysReg(r.next())
            }
        }
        _ => Resume::Done,
    }
}

/// Runs one hostile guest through the host flow and checks the teardown.
fn hostile_guest_case(seed: u64, kind: GuestKind, stats: &mut GuestStats) {
    let mut r = Rng::new(seed);
    let model = Arc::new(TsmModel::new(ModelConfig {
        harts: 1 + r.below(3) as usize,
        run_budget: GUEST_RUN_BUDGET,
        ..ModelConfig::default()
    }));
    let host = if r.chance(1, 4) {
        HostIsa::without(&["zkr"])
    } else {
        HostIsa::default()
    };
    let b = CoveBackend::with_model(Arc::clone(&model), host);
    let mut cfg = VmConfig::new(Confidentiality::RiscvCove);
    cfg.vcpus = 2;
    cfg.entropy = if r.chance(1, 2) {
        EntropyPolicy::ForwardToVmm
    } else {
        EntropyPolicy::Firmware
    };
    if r.chance(1, 3) {
        cfg.cove.disable_extensions = vec!["smnpm".into()];
    }
    let code = guest_code(&mut r, kind);
    {
        let vm = b.create_cove_vm(&cfg).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
        vm.add_memory(MemoryRegion::shared(SHARED, SHARED_SIZE))
            .unwrap();
        vm.load(RAM, &code, Measure::Yes).unwrap();
        vm.load(HANDLER, &handler(), Measure::Yes).unwrap();
        let mut vcpus: Vec<Box<dyn Vcpu>> =
            vec![vm.create_vcpu(VcpuInit::boot(RAM, &[0, r.next()])).unwrap()];
        if r.chance(3, 4) {
            vcpus.push(vm.create_vcpu(VcpuInit::secondary()).unwrap());
        }
        vm.finalize().unwrap();
        stats.cases += 1;
        let mut resume = vec![Resume::Done; vcpus.len()];
        let mut live = vec![true; vcpus.len()];
        for _ in 0..96 {
            let i = if vcpus.len() > 1 && r.chance(1, 3) {
                1
            } else {
                0
            };
            if !live.iter().any(|&l| l) {
                break;
            }
            if !live[i] {
                continue;
            }
            stats.runs += 1;
            match vcpus[i].run(resume[i]) {
                Ok(exit) => {
                    stats.exits[exit.kind().index()] += 1;
                    if let VmExit::Fault { syndrome, .. } = exit {
                        *stats.faults.entry(syndrome).or_default() += 1;
                    }
                    if exit.is_terminal() {
                        live.iter_mut().for_each(|l| *l = false);
                        break;
                    }
                    if exit == VmExit::Interrupted {
                        // A guest spinning without trapping: stop.
                        stats.interrupted += 1;
                        break;
                    }
                    resume[i] = answer(&mut r, &exit);
                }
                Err(e) => {
                    stats.errors += 1;
                    let mut m = e.to_string();
                    m.truncate(70);
                    *stats.error_kinds.entry(m).or_default() += 1;
                    live[i] = false;
                }
            }
        }
        // Running after the end (or with a wrong resume) is a typed error, never a panic.
        for v in vcpus.iter_mut() {
            let _ = v.run(Resume::MmioRead(1));
            let _ = v.run(Resume::Done);
        }
        vm.destroy().unwrap();
    }
    assert_eq!(model.tvm_count(), 0, "seed {seed:#x}: TVM left");
    assert_eq!(
        model.confidential_pages(),
        0,
        "seed {seed:#x}: converted pages left"
    );
    assert_eq!(model.shared_pages(), 0, "seed {seed:#x}: shared pages left");
    assert_eq!(
        model.pinned_user_ranges(),
        0,
        "seed {seed:#x}: VMM memory left pinned"
    );
    model.check_invariants().unwrap();
}

fn hostile_guests(kind: GuestKind, base_seed: u64, cases: u64, budget: Duration) -> GuestStats {
    let start = Instant::now();
    let (cases, budget) = (cases * scale(), budget * scale() as u32);
    let mut stats = GuestStats::default();
    for i in 0..cases {
        hostile_guest_case(base_seed + i, kind, &mut stats);
        if start.elapsed() > budget {
            break;
        }
    }
    eprintln!("{kind:?}: {stats:?} in {:?}", start.elapsed());
    assert!(stats.cases >= cases.min(8), "{stats:?}");
    // The only errors: running a vCPU the TSM terminated (after a `Fault`).
    assert!(
        stats
            .error_kinds
            .keys()
            .all(|k| k.contains("has terminated")),
        "{stats:?}"
    );
    stats
}

#[test]
fn hostile_guest_random_words() {
    hostile_guests(
        GuestKind::Words,
        0x5EED_0001_0000,
        200,
        Duration::from_secs(3),
    );
}

#[test]
fn hostile_guest_random_parcels() {
    hostile_guests(
        GuestKind::Parcels,
        0x5EED_0002_0000,
        200,
        Duration::from_secs(3),
    );
}

#[test]
fn hostile_guest_tsm_streams() {
    let s = hostile_guests(
        GuestKind::Stream,
        0x5EED_0003_0000,
        300,
        Duration::from_secs(4),
    );
    // The streams reach the host: MMIO, conversions, host calls.
    assert!(s.exits.iter().filter(|&&n| n > 0).count() >= 4, "{s:?}");
}

// ---------------------------------------------------------------------------------------------
// Hostile hosts.
// ---------------------------------------------------------------------------------------------

const HOST_RAM: u64 = 0x1_0000_0000;
const HOST_PAGES: u64 = 256;
const GUEST_RAM: u64 = 0x8000_0000;

struct HostFuzz {
    m: Arc<TsmModel>,
    r: Rng,
    harts: usize,
    guests: Vec<u64>,
    nacl: Vec<Option<u64>>,
    pinned: Vec<(GuestMemoryMmap, u64)>,
    calls: u64,
    ok: u64,
    runs: u64,
    run_exits: [u64; 32],
}

impl HostFuzz {
    fn new(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let harts = 1 + r.below(3) as usize;
        let m = Arc::new(TsmModel::new(ModelConfig {
            harts,
            ram_base: HOST_RAM,
            ram_pages: HOST_PAGES as usize,
            run_budget: GUEST_RUN_BUDGET,
        }));
        Self {
            m,
            r,
            harts,
            guests: Vec::new(),
            nacl: vec![None; harts],
            pinned: Vec::new(),
            calls: 0,
            ok: 0,
            runs: 0,
            run_exits: [0; 32],
        }
    }

    fn ecall(&mut self, hart: usize, eid: u32, fid: u32, args: [u64; 6]) -> SbiRet {
        let r = self.m.ecall(hart, eid, fid, args);
        self.calls += 1;
        assert!(
            valid_sbi_status(r),
            "eid {eid:#x} fid {fid} {args:x?} → {r:?}"
        );
        if let Err(e) = self.m.check_invariants() {
            panic!("after eid {eid:#x} fid {fid} {args:x?} → {r:?}: {e}");
        }
        if r.error == 0 {
            self.ok += 1;
        }
        r
    }

    fn covh(&mut self, fid: u32, args: [u64; 6]) -> SbiRet {
        let hart = self.hart();
        self.ecall(hart, abi::EID_COVH, fid, args)
    }

    fn hart(&mut self) -> usize {
        self.r.below(self.harts as u64) as usize
    }

    fn page(&mut self) -> u64 {
        HOST_RAM + self.r.below(HOST_PAGES) * PAGE_SIZE
    }

    fn fence(&mut self) {
        // A fence left in progress is completed first.
        for h in 0..self.harts {
            self.ecall(h, abi::EID_COVH, covh::TSM_LOCAL_FENCE, [0; 6]);
        }
        self.ecall(0, abi::EID_COVH, covh::TSM_INITIATE_FENCE, [0; 6]);
        for h in 1..self.harts {
            self.ecall(h, abi::EID_COVH, covh::TSM_LOCAL_FENCE, [0; 6]);
        }
    }

    /// Converts and fences `n` pages at a random (aligned) place; returns them if it worked.
    fn converted(&mut self, n: u64, align: u64) -> Option<u64> {
        let pa = HOST_RAM + self.r.below(HOST_PAGES / align) * align * PAGE_SIZE;
        let r = self.covh(covh::TSM_CONVERT_PAGES, [pa, n, 0, 0, 0, 0]);
        self.fence();
        (r.error == 0).then_some(pa)
    }

    /// A host page the host can write (retries a few random pages).
    fn host_page_with(&mut self, data: &[u8]) -> Option<u64> {
        for _ in 0..8 {
            let pa = self.page();
            if self.m.host_write(pa, data).is_ok() {
                return Some(pa);
            }
        }
        None
    }

    fn guest(&mut self) -> u64 {
        if self.guests.is_empty() || self.r.chance(1, 10) {
            let any = self.r.next();
            self.r.pick(&[0, 1, 2, 7, u64::MAX, any])
        } else {
            self.r.pick(&self.guests)
        }
    }

    fn addr(&mut self) -> u64 {
        match self.r.below(10) {
            0..=3 => self.page(),
            4 => self.page() + 1 + self.r.below(PAGE_SIZE - 1),
            5 => HOST_RAM + HOST_PAGES * PAGE_SIZE - PAGE_SIZE,
            6 => HOST_RAM + HOST_PAGES * PAGE_SIZE,
            7 => self.pinned.first().map(|p| p.1).unwrap_or(0x100_0000_0000),
            8 => !(PAGE_SIZE - 1),
            _ => self.r.next(),
        }
    }

    fn count(&mut self) -> u64 {
        match self.r.below(8) {
            0 => 0,
            1..=3 => 1 + self.r.below(4),
            4 => u64::MAX,
            5 => u64::MAX / PAGE_SIZE + 1,
            6 => 1 << 38,
            _ => self.r.next(),
        }
    }

    fn gpa(&mut self) -> u64 {
        match self.r.below(8) {
            0..=3 => GUEST_RAM + self.r.below(32) * PAGE_SIZE,
            4 => 0,
            5 => (1 << 50) - PAGE_SIZE,
            6 => GUEST_RAM + 3,
            _ => self.r.next(),
        }
    }

    fn arg(&mut self) -> u64 {
        match self.r.below(7) {
            0 => self.addr(),
            1 => self.count(),
            2 => self.guest(),
            3 => self.gpa(),
            4 => self.r.below(6),
            5 => self.r.below(10),
            _ => self.r.next(),
        }
    }

    /// A fully random call (any EID, any FID, interesting args).
    fn random_call(&mut self) {
        let eid = match self.r.below(10) {
            0..=5 => abi::EID_COVH,
            6 => abi::EID_COVI,
            7 => abi::EID_NACL,
            8 => self.r.pick(&[
                abi::EID_BASE,
                abi::EID_CVM_MODEL,
                abi::EID_COVG,
                abi::EID_ATST,
            ]),
            _ => self.r.next() as u32,
        };
        let fid = if self.r.chance(1, 10) {
            self.r.next() as u32
        } else {
            self.r.below(22) as u32
        };
        let args = [
            self.arg(),
            self.arg(),
            self.arg(),
            self.arg(),
            self.arg(),
            self.arg(),
        ];
        // A hart out of range now and then.
        let hart = if self.r.chance(1, 50) {
            self.harts + self.r.below(4) as usize
        } else {
            self.hart()
        };
        let r = self.ecall(hart, eid, fid, args);
        if eid == abi::EID_COVH && fid == covh::CREATE_TVM && r.error == 0 {
            self.guests.push(r.value);
        }
        if eid == abi::EID_NACL && fid == abi::nacl::SET_SHMEM && r.error == 0 && hart < self.harts
        {
            self.nacl[hart] = (args[0] != u64::MAX).then_some(args[0]);
        }
    }

    /// A valid-ish TVM creation: converted pgd + state + page-table pages, CREATE_TVM,
    /// ADD_PGT_PAGES, a region, measured code, vCPUs, finalize.
    fn create_flow(&mut self) {
        let Some(pgd) = self.converted(4, 4) else {
            return;
        };
        let Some(state) = self.converted(2, 1) else {
            return;
        };
        let mut params = [0u8; 16];
        params[..8].copy_from_slice(&pgd.to_le_bytes());
        params[8..].copy_from_slice(&state.to_le_bytes());
        let Some(pp) = self.host_page_with(&params) else {
            return;
        };
        let r = self.covh(covh::CREATE_TVM, [pp, 16, 0, 0, 0, 0]);
        if r.error != 0 {
            return;
        }
        let g = r.value;
        self.guests.push(g);
        if let Some(pgt) = self.converted(8, 1) {
            self.covh(covh::TVM_ADD_PGT_PAGES, [g, pgt, 8, 0, 0, 0]);
        }
        self.covh(
            covh::TVM_ADD_MEMORY_REGION,
            [g, GUEST_RAM, 0x20_0000, 0, 0, 0],
        );
        if self.r.chance(1, 3) {
            // A model TVM_SET_ISA: forward SEED, maybe hide extensions.
            let hidden = self.r.pick(&[0u64, 1 << 32, 1 << 62, u64::MAX]);
            let fwd = self.r.below(3);
            let hart = self.hart();
            self.ecall(
                hart,
                abi::EID_CVM_MODEL,
                cvm_model::TVM_SET_ISA,
                [g, hidden, 0, fwd, 0, 0],
            );
        }
        let mut gr = Rng::new(self.r.next());
        let code = guest_code(&mut gr, GuestKind::Stream);
        let mut pages: Vec<(u64, Vec<u8>)> = code
            .chunks(PAGE_SIZE as usize)
            .enumerate()
            .map(|(i, c)| (GUEST_RAM + i as u64 * PAGE_SIZE, c.to_vec()))
            .collect();
        pages.push((HANDLER - RAM + GUEST_RAM, handler()));
        for (gpa, mut bytes) in pages {
            bytes.resize(PAGE_SIZE as usize, 0);
            let Some(src) = self.host_page_with(&bytes) else {
                continue;
            };
            if let Some(dest) = self.converted(1, 1) {
                let r = self.covh(covh::TVM_ADD_MEASURED_PAGES, [g, src, dest, 0, 1, gpa]);
                if r.error != 0 {
                    self.covh(covh::TSM_RECLAIM_PAGES, [dest, 1, 0, 0, 0, 0]);
                }
            }
        }
        for id in 0..2 {
            if let Some(pa) = self.converted(1, 1) {
                self.covh(covh::TVM_CREATE_VCPU, [g, id, pa, 0, 0, 0]);
            }
        }
        let arg = self.r.next();
        self.covh(covh::FINALIZE_TVM, [g, GUEST_RAM, arg, 0, 0, 0]);
    }

    fn ensure_nacl(&mut self, hart: usize) -> Option<u64> {
        if let Some(pa) = self.nacl[hart] {
            return Some(pa);
        }
        for _ in 0..8 {
            let pa = HOST_RAM + self.r.below(HOST_PAGES - 3) * PAGE_SIZE;
            let r = self.ecall(
                hart,
                abi::EID_NACL,
                abi::nacl::SET_SHMEM,
                [pa, 0, 0, 0, 0, 0],
            );
            if r.error == 0 {
                self.nacl[hart] = Some(pa);
                return Some(pa);
            }
        }
        None
    }

    /// TVM_VCPU_RUN with random NACL scratch/CSR contents, then the host's usual answer to
    /// the exit (back a faulting page, accept/reject a conversion, …) some of the time.
    fn run_flow(&mut self) {
        let hart = self.hart();
        let Some(shmem) = self.ensure_nacl(hart) else {
            return;
        };
        let g = self.guest();
        let vcpu = self.r.pick(&[0, 0, 0, 1, 2, u64::MAX]);
        for _ in 0..1 + self.r.below(6) {
            // Junk in the scratch GPRs, the inject flag and the CSR area.
            for _ in 0..self.r.below(6) {
                let off = match self.r.below(5) {
                    0 => nacl_gpr_offset(10 + self.r.below(8) as u8),
                    1 => NACL_MODEL_INJECT_FAULT_OFFSET,
                    2 => nacl_csr_offset(ncsr::HTINST),
                    3 => nacl_csr_offset(ncsr::HTVAL),
                    _ => (self.r.below(3 * PAGE_SIZE / 8) * 8) as usize,
                };
                let any = self.r.next();
                let v = self.r.pick(&[0, 1, u64::MAX, (-5i64) as u64, any]);
                let _ = self.m.host_write(shmem + off as u64, &v.to_le_bytes());
            }
            let r = self.ecall(
                hart,
                abi::EID_COVH,
                covh::TVM_VCPU_RUN,
                [g, vcpu, 0, 0, 0, 0],
            );
            if r.error != 0 {
                return;
            }
            self.runs += 1;
            let t = self.m.trap_csrs(hart);
            let idx = if t.scause >> 63 != 0 {
                31
            } else {
                (t.scause as usize).min(30)
            };
            self.run_exits[idx] += 1;
            if r.value != 0 {
                return;
            }
            let mut b = [0u8; 8];
            let htval = self
                .m
                .host_read(shmem + nacl_csr_offset(ncsr::HTVAL) as u64, &mut b)
                .map(|_| u64::from_le_bytes(b))
                .unwrap_or(0);
            let gpa = ((htval << 2) | (t.stval & 3)) & !(PAGE_SIZE - 1);
            match t.scause {
                20 | 21 | 23 if self.r.chance(3, 4) => {
                    // Back it: a zero page, or a host page as shared.
                    if self.r.chance(3, 4) {
                        if let Some(pa) = self.converted(1, 1) {
                            let r = self.covh(covh::TVM_ADD_ZERO_PAGES, [g, pa, 0, 1, gpa, 0]);
                            if r.error != 0 {
                                self.covh(covh::TSM_RECLAIM_PAGES, [pa, 1, 0, 0, 0, 0]);
                            }
                        }
                    } else {
                        let pa = self.page();
                        self.covh(covh::TVM_ADD_SHARED_PAGES, [g, pa, 0, 1, gpa, 0]);
                    }
                }
                10 if self.r.chance(1, 2) => {
                    // Answer a share: remove what is mapped there (INVALIDATE, fence, REMOVE).
                    let mut a = [0u8; 16];
                    let _ = self.m.host_read(shmem + nacl_gpr_offset(10) as u64, &mut a);
                    let gpa = u64::from_le_bytes(a[..8].try_into().unwrap());
                    let len = u64::from_le_bytes(a[8..].try_into().unwrap()).min(0x10_0000);
                    self.unmap(g, gpa, len);
                    let v = self.r.pick(&[0u64, 0, (-4i64) as u64]);
                    let _ = self
                        .m
                        .host_write(shmem + nacl_gpr_offset(10) as u64, &v.to_le_bytes());
                }
                _ => {}
            }
        }
    }

    fn unmap(&mut self, g: u64, gpa: u64, len: u64) {
        self.covh(covh::TVM_INVALIDATE_PAGES, [g, gpa, len, 0, 0, 0]);
        if self.r.chance(7, 8) {
            self.covh(covh::TVM_INITIATE_FENCE, [g, 0, 0, 0, 0, 0]);
        }
        self.covh(covh::TVM_REMOVE_PAGES, [g, gpa, len, 0, 0, 0]);
    }

    fn step(&mut self) {
        match self.r.below(20) {
            0..=7 => self.random_call(),
            8 | 9 => self.create_flow(),
            10..=13 => self.run_flow(),
            14 => {
                let (g, gpa, len) = (
                    self.guest(),
                    self.gpa(),
                    self.count().wrapping_mul(PAGE_SIZE),
                );
                self.unmap(g, gpa, len);
            }
            15 => {
                let n = 1 + self.r.below(4);
                let _ = self.converted(n, 1);
            }
            16 => {
                let (pa, n) = (self.addr(), self.count());
                self.covh(covh::TSM_RECLAIM_PAGES, [pa, n, 0, 0, 0, 0]);
            }
            17 => {
                // Pin / unpin VMM memory (what shared pages come from), and host accesses.
                if self.pinned.len() < 2 && self.r.chance(1, 2) {
                    let size = PAGE_SIZE * (1 + self.r.below(8));
                    let mem =
                        GuestMemoryMmap::from_ranges(&[(GuestAddress(0x4000_0000), size as usize)])
                            .unwrap();
                    let (gpa, len) = if self.r.chance(3, 4) {
                        (0x4000_0000, size)
                    } else {
                        (self.gpa(), self.count())
                    };
                    if let Ok(pa) = self.m.pin_user_memory(&mem, gpa, len) {
                        self.pinned.push((mem, pa));
                    }
                } else if !self.pinned.is_empty() && self.r.chance(1, 4) {
                    let (_, pa) = self.pinned.remove(0);
                    let _ = self.m.unpin_user_memory(pa);
                } else {
                    let pa = self.addr();
                    let mut buf = vec![0u8; self.r.below(9000) as usize];
                    let _ = self.m.host_read(pa, &mut buf);
                    let _ = self.m.host_write(pa, &buf);
                    let _ = self.m.unpin_user_memory(pa);
                }
                self.m.check_invariants().unwrap();
            }
            18 => {
                // COVI: AIA init, IMSIC, bind, inject.
                let g = self.guest();
                let fid = self.r.below(11) as u32;
                let args = match fid {
                    covi::TVM_AIA_INIT => {
                        let mut p = [0u8; 28];
                        p[12..16].copy_from_slice(&(24u32 + self.r.below(4) as u32).to_le_bytes());
                        let pa = self.host_page_with(&p).unwrap_or(0);
                        [g, pa, 28 + self.r.below(2), 0, 0, 0]
                    }
                    covi::TVM_CONVERT_IMSIC | covi::TVM_RECLAIM_IMSIC => {
                        [self.addr(), 0, 0, 0, 0, 0]
                    }
                    _ => [g, self.r.below(3), self.arg(), 0, 0, 0],
                };
                let hart = self.hart();
                self.ecall(hart, abi::EID_COVI, fid, args);
            }
            _ => {
                if !self.guests.is_empty() && self.r.chance(1, 3) {
                    let g = self.guest();
                    self.covh(covh::DESTROY_TVM, [g, 0, 0, 0, 0, 0]);
                } else {
                    let hart = self.hart();
                    let f = self.r.below(6) as u32;
                    let args = [self.arg(), self.arg(), self.r.below(2), 0, 0, 0];
                    self.ecall(hart, abi::EID_NACL, f, args);
                }
            }
        }
    }

    /// DESTROY_TVM every TVM, complete a fence, reclaim every page: zero converted pages.
    fn teardown(&mut self) {
        for g in std::mem::take(&mut self.guests) {
            self.covh(covh::DESTROY_TVM, [g, 0, 0, 0, 0, 0]);
        }
        assert_eq!(self.m.tvm_count(), 0);
        self.fence();
        for i in 0..HOST_PAGES {
            let pa = HOST_RAM + i * PAGE_SIZE;
            self.covh(covh::TSM_RECLAIM_PAGES, [pa, 1, 0, 0, 0, 0]);
        }
        assert_eq!(self.m.confidential_pages(), 0);
        assert_eq!(self.m.shared_pages(), 0);
        for (_, pa) in std::mem::take(&mut self.pinned) {
            // (A random call may have unpinned it already.)
            let _ = self.m.unpin_user_memory(pa);
        }
        assert_eq!(self.m.pinned_user_ranges(), 0);
        self.m.check_invariants().unwrap();
    }
}

#[test]
fn hostile_host_random_ecalls() {
    let start = Instant::now();
    let (mut calls, mut ok, mut runs, mut seqs) = (0, 0, 0, 0);
    let mut exits = [0u64; 32];
    for seed in 0..80 * scale() {
        let mut h = HostFuzz::new(0x4057_0000 + seed);
        for _ in 0..150 {
            h.step();
        }
        h.teardown();
        calls += h.calls;
        ok += h.ok;
        runs += h.runs;
        seqs += 1;
        for (a, b) in exits.iter_mut().zip(h.run_exits) {
            *a += b;
        }
        if start.elapsed() > Duration::from_secs(4 * scale()) {
            break;
        }
    }
    eprintln!(
        "hostile host: {seqs} sequences, {calls} calls ({ok} succeeded), {runs} runs, exits by \
         scause {exits:?} in {:?}",
        start.elapsed()
    );
    assert!(seqs >= 8 && runs > 0 && ok > calls / 10);
}

// ---------------------------------------------------------------------------------------------
// Regressions (minimized inputs the randomized tests found).
// ---------------------------------------------------------------------------------------------

/// A TVM launched with raw COVH calls on `m` (host RAM at `HOST_RAM`): code measured at
/// `GUEST_RAM` in a 2 MiB confidential region, vCPU 0, finalized; NACL on hart 0.
/// Returns (guest id, NACL address).
fn raw_launch(m: &TsmModel, code: &[u8]) -> (u64, u64) {
    let call = |fid: u32, a: [u64; 6]| {
        let r = m.ecall(0, abi::EID_COVH, fid, a);
        assert_eq!(r.error, 0, "fid {fid} {a:x?}");
        r.value
    };
    let page = |i: u64| HOST_RAM + i * PAGE_SIZE;
    // pgd 0..4, state 4..6, page tables 6..14, vCPU 14, code 16.., params 100, NACL 200..203.
    call(covh::TSM_CONVERT_PAGES, [page(0), 15, 0, 0, 0, 0]);
    let code_pages = (code.len() as u64).div_ceil(PAGE_SIZE).max(1);
    call(covh::TSM_CONVERT_PAGES, [page(16), code_pages, 0, 0, 0, 0]);
    call(covh::TSM_INITIATE_FENCE, [0; 6]);
    for h in 1..m.harts() {
        assert_eq!(
            m.ecall(h, abi::EID_COVH, covh::TSM_LOCAL_FENCE, [0; 6])
                .error,
            0
        );
    }
    let mut params = [0u8; 16];
    params[..8].copy_from_slice(&page(0).to_le_bytes());
    params[8..].copy_from_slice(&page(4).to_le_bytes());
    m.host_write(page(100), &params).unwrap();
    let g = call(covh::CREATE_TVM, [page(100), 16, 0, 0, 0, 0]);
    call(covh::TVM_ADD_PGT_PAGES, [g, page(6), 8, 0, 0, 0]);
    call(
        covh::TVM_ADD_MEMORY_REGION,
        [g, GUEST_RAM, 0x20_0000, 0, 0, 0],
    );
    for (i, chunk) in code.chunks(PAGE_SIZE as usize).enumerate() {
        let mut p = chunk.to_vec();
        p.resize(PAGE_SIZE as usize, 0);
        m.host_write(page(101), &p).unwrap();
        let i = i as u64;
        call(
            covh::TVM_ADD_MEASURED_PAGES,
            [g, page(101), page(16 + i), 0, 1, GUEST_RAM + i * PAGE_SIZE],
        );
    }
    call(covh::TVM_CREATE_VCPU, [g, 0, page(14), 0, 0, 0]);
    call(covh::FINALIZE_TVM, [g, GUEST_RAM, 0, 0, 0, 0]);
    let nacl = page(200);
    let r = m.ecall(
        0,
        abi::EID_NACL,
        abi::nacl::SET_SHMEM,
        [nacl, 0, 0, 0, 0, 0],
    );
    assert_eq!(r.error, 0);
    (g, nacl)
}

fn raw_model() -> Arc<TsmModel> {
    Arc::new(TsmModel::new(ModelConfig {
        harts: 2,
        ram_base: HOST_RAM,
        ram_pages: HOST_PAGES as usize,
        run_budget: GUEST_RUN_BUDGET,
    }))
}

/// Bug: COVG SHARE/UNSHARE_MEMORY walked the guest's range page by page in the TSM, so a
/// guest asking to share 2^49 bytes stalled TVM_VCPU_RUN (2^37 iterations). Now the TSM
/// walks it region by region and forwards it; the host rejects what is not VM memory.
#[test]
fn regression_guest_share_of_a_huge_range_returns() {
    let start = Instant::now();
    let model = Arc::new(TsmModel::new(ModelConfig {
        harts: 1,
        ..ModelConfig::default()
    }));
    let b = CoveBackend::with_model(Arc::clone(&model), HostIsa::default());
    let mut a = Asm::new();
    a.sbi(abi::EID_COVG, covg::ADD_MMIO_REGION, &[DOORBELL, 0x1000]);
    a.li(common::S0, DOORBELL);
    for (fid, gpa) in [
        (covg::SHARE_MEMORY, RAM),
        (covg::SHARE_MEMORY, 1 << 40),
        (covg::UNSHARE_MEMORY, RAM),
        (covg::UNSHARE_MEMORY, 1 << 40),
    ] {
        a.sbi(abi::EID_COVG, fid, &[gpa, 1 << 49]);
        a.sd(A0, common::S0, 0);
    }
    a.off();
    let mut cfg = VmConfig::new(Confidentiality::RiscvCove);
    cfg.vcpus = 1;
    let (vm, mut v) = common::launch(&b, &cfg, &a.bytes());
    let mut reports = Vec::new();
    let mut conversions = Vec::new();
    let mut resume = Resume::Done;
    loop {
        match v.run(resume).unwrap() {
            VmExit::ConvertMemory {
                gpa,
                size,
                to_private,
            } => {
                conversions.push((gpa, size, to_private));
                resume = Resume::Conversion(true);
            }
            VmExit::Mmio { write: Some(x), .. } => {
                reports.push(x as i64);
                resume = Resume::Done;
            }
            VmExit::SystemOff => break,
            other => panic!("{other:?}"),
        }
    }
    // Both SHAREs reach the host, which refuses them (not VM memory: INVALID_ADDRESS); the
    // TSM refuses both UNSHAREs itself (not shared memory).
    assert_eq!(
        conversions,
        vec![(RAM, 1 << 49, false), (1 << 40, 1 << 49, false)]
    );
    assert_eq!(reports, vec![-5, -5, -5, -5]);
    vm.destroy().unwrap();
    assert_eq!(model.confidential_pages(), 0);
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Bug: a host that accepts a guest's SHARE of a huge range outside the VM's memory gives
/// the TVM a shared region of 2^48 bytes; TVM_ADD_SHARED_PAGES then checked every guest page
/// of the request before the host pages, so `n` = 2^36 stalled the TSM. Now the host pages
/// are checked first and the call fails at the end of host memory.
#[test]
fn regression_add_shared_pages_with_a_huge_count_returns() {
    let start = Instant::now();
    let m = raw_model();
    let mut a = Asm::new();
    a.sbi(abi::EID_COVG, covg::SHARE_MEMORY, &[1 << 40, 1 << 48]);
    a.off();
    let (g, nacl) = raw_launch(&m, &a.bytes());
    let run = |m: &TsmModel| m.ecall(0, abi::EID_COVH, covh::TVM_VCPU_RUN, [g, 0, 0, 0, 0, 0]);
    assert_eq!(run(&m), SbiRet::ok(0));
    assert_eq!(m.trap_csrs(0).scause, 10);
    // Accept (scratch a0 = 0): the TSM declares [2^40, 2^40 + 2^48) shared.
    m.host_write(nacl + nacl_gpr_offset(A0) as u64, &0u64.to_le_bytes())
        .unwrap();
    assert_eq!(run(&m), SbiRet::ok(1)); // SRST
    let r = m.ecall(
        0,
        abi::EID_COVH,
        covh::TVM_ADD_SHARED_PAGES,
        [g, HOST_RAM + 150 * PAGE_SIZE, 0, 1 << 36, 1 << 40, 0],
    );
    assert_eq!(r, SbiRet::err(abi::SbiError::InvalidAddress));
    m.check_invariants().unwrap();
    // One page works, and teardown drops the share.
    let r = m.ecall(
        0,
        abi::EID_COVH,
        covh::TVM_ADD_SHARED_PAGES,
        [g, HOST_RAM + 150 * PAGE_SIZE, 0, 1, 1 << 40, 0],
    );
    assert_eq!(r, SbiRet::ok(1));
    assert_eq!(m.shared_pages(), 1);
    let mut h = HostFuzz::new(0);
    h.m = Arc::clone(&m);
    h.harts = 2;
    h.guests = vec![g];
    h.teardown();
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Bug: the host flow re-entered the TVM after every exit it handles itself without a
/// bound, so a guest looping on an unknown SBI call (answered NOT_SUPPORTED in the kernel,
/// RFC 21/48) kept `Vcpu::run` from ever returning. Now `run` returns `Interrupted` after
/// `MAX_HANDLED_EXITS` such exits, and the next `run` continues the guest.
#[test]
fn regression_guest_ecall_loop_does_not_hang_run() {
    let model = Arc::new(TsmModel::new(ModelConfig {
        harts: 1,
        ..ModelConfig::default()
    }));
    let b = CoveBackend::with_model(Arc::clone(&model), HostIsa::default());
    let mut a = Asm::new();
    a.li(A7, u64::from(DBCN)).li(A6, 0).ecall().j(-12);
    let mut cfg = VmConfig::new(Confidentiality::RiscvCove);
    cfg.vcpus = 1;
    let (vm, mut v) = common::launch(&b, &cfg, &a.bytes());
    assert_eq!(v.run(Resume::Done).unwrap(), VmExit::Interrupted);
    assert_eq!(v.run(Resume::Done).unwrap(), VmExit::Interrupted);
    assert!(vm.stats().counter("handled_exit_limit") >= 2);
    vm.destroy().unwrap();
    assert_eq!(model.confidential_pages(), 0);
}

/// Follow-up of the previous fix: when `run` stops after `MAX_HANDLED_EXITS`, the answer to
/// the last handled ECALL sits in the hart's NACL scratch area; another vCPU on the same hart
/// may exit (overwriting scratch a0..a7) before this one runs again. The answer is written
/// again before the next TVM_VCPU_RUN, so the guest never sees the other vCPU's registers.
#[test]
fn regression_handled_answer_survives_another_vcpu_on_the_hart() {
    let model = Arc::new(TsmModel::new(ModelConfig {
        harts: 1,
        ..ModelConfig::default()
    }));
    let b = CoveBackend::with_model(Arc::clone(&model), HostIsa::default());
    let s0 = common::S0;
    let mut a = Asm::new();
    a.sbi(abi::EID_COVG, covg::ADD_MMIO_REGION, &[DOORBELL, 0x1000]);
    a.li(s0, DOORBELL);
    a.sbi(abi::EID_HSM, abi::hsm::HART_START, &[1, RAM + 0x800, 0]);
    let top = a.here() as i32;
    a.li(A7, u64::from(DBCN)).li(A6, 0).li(A0, 0x55).ecall();
    a.li(T0, (-2i64) as u64);
    a.emit(b_type(1, A0, T0, 8)); // bne a0, t0, bad
    let here = a.here() as i32;
    a.j(top - here);
    a.sd(A0, s0, 0).off(); // bad: report a0
    let mut code = a.bytes();
    code.resize(0x800, 0);
    let mut a1 = Asm::new();
    a1.sbi(abi::EID_CVM_HOSTCALL, 7, &[0x1234]).off();
    code.extend(a1.bytes());
    let mut cfg = VmConfig::new(Confidentiality::RiscvCove);
    cfg.vcpus = 2;
    let vm = b.create_cove_vm(&cfg).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &code, Measure::Yes).unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, 0])).unwrap();
    let mut v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    assert_eq!(v0.run(Resume::Done).unwrap(), VmExit::Interrupted);
    assert!(matches!(
        v1.run(Resume::Done).unwrap(),
        VmExit::HostCall {
            nr: 7,
            args: [0x1234, ..]
        }
    ));
    assert_eq!(v0.run(Resume::Done).unwrap(), VmExit::Interrupted);
    vm.destroy().unwrap();
    assert_eq!(model.confidential_pages(), 0);
}
