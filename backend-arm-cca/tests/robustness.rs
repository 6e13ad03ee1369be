//! Robustness of the CCA model and host flow against hostile input: seeded, deterministic
//! randomized tests (a hand-written xorshift generator, no dependencies).
//!
//! 1. Hostile guests: realms whose code is random words, or random streams biased towards what
//!    reaches the RMM (SMC with RSI/PSCI/SMCCC function ids and interesting arguments, loads and
//!    stores to protected / unprotected / out-of-range IPAs, MRS/MSR, HVC, WFI, ERET), driven
//!    through the real host flow with every exit answered by a valid (sometimes a mismatched)
//!    resume. No run may panic, and destroy leaves nothing delegated.
//! 2. Hostile hosts: random raw RMI sequences (random FIDs and arguments drawn from interesting
//!    values) interleaved with valid calls, with REC_ENTER of random RecRun contents; after each
//!    call the status must be well formed, a failed call must change no granule, and the model's
//!    invariants must hold; a generic teardown then returns the model to zero delegated granules.
//!
//! Each randomized test is followed by the minimized regressions it found.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use backend_arm_cca::abi::{
    self, enter_flags, exit_reason, psci, rmi as fid, rsi, GranuleState, RealmParams, RecEnter,
    RecExit, RecParams, RmiStatus, GRANULE_SIZE,
};
use backend_arm_cca::{CcaBackend, Rmi, RmiClient, Rmm, RmmConfig};
use cvm_core::{
    Backend, Confidentiality, Error, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, VmConfig,
    VmExit,
};
use zerocopy::{FromBytes, IntoBytes};

// ------------------------------------------------------------------------------------------
// Deterministic PRNG (xorshift64*).

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
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
        self.next() % n.max(1)
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------------------------------
// Guest code generation.

const RAM: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 2 << 20;
const SHARED: u64 = 0x9000_0000;
const SHARED_SIZE: u64 = 64 << 10;
const DEV: u64 = 0x0900_0000;

/// What the generator knows of the realm it writes code for.
#[derive(Clone, Copy)]
struct Layout {
    ram: u64,
    ram_size: u64,
    s2sz: u8,
}

impl Layout {
    fn top(&self) -> u64 {
        1 << (self.s2sz - 1)
    }

    /// Addresses worth touching: private RAM (page aligned or not), its unprotected alias,
    /// devices, the shared region, beyond the IPA space, bits above the PA size, extremes.
    fn addr(&self, r: &mut Rng) -> u64 {
        let in_ram = self.ram + (r.below(self.ram_size) & !7);
        let page = self.ram + (r.below(self.ram_size / GRANULE_SIZE) * GRANULE_SIZE);
        match r.below(14) {
            0 => in_ram,
            1 => page,
            2 => page | self.top(),
            3 => (DEV + (r.below(0x1000) & !7)) | self.top(),
            4 => SHARED + (r.below(SHARED_SIZE) & !7),
            5 => (SHARED + (r.below(SHARED_SIZE) & !7)) | self.top(),
            6 => (1u64 << self.s2sz) + (r.below(1 << 20) & !7),
            7 => r.below(self.top()) & !0xFFF,
            8 => page | 0xFFFF_0000_0000_0000,
            9 => page | (1 << 52),
            10 => u64::MAX - 7,
            11 => 0,
            12 => page + 1 + r.below(7),
            _ => r.next(),
        }
    }

    /// An argument for an SMC.
    fn arg(&self, r: &mut Rng) -> u64 {
        match r.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => r.below(8),
            3 => abi::RMI_ABI_VERSION,
            4 => self.ram + self.ram_size,
            5 => abi::rec_idx_to_mpidr(r.below(3)),
            6 => r.pick(&[0, 1, 2, 0x100, 0x1000, 1 << 31]),
            _ => self.addr(r),
        }
    }
}

/// MOVZ/MOVK sequence putting `v` in X`rd`.
fn mov64(out: &mut Vec<u32>, rd: u32, v: u64) {
    out.push(0xD280_0000 | (((v & 0xFFFF) as u32) << 5) | rd);
    for hw in 1..4u32 {
        let part = ((v >> (16 * hw)) & 0xFFFF) as u32;
        if part != 0 {
            out.push(0xF280_0000 | (hw << 21) | (part << 5) | rd);
        }
    }
}

const SMC0: u32 = 0xD400_0003;

/// A function id for an SMC from the realm.
fn smc_fid(r: &mut Rng) -> u64 {
    match r.below(8) {
        0..=3 => 0xC400_0190 + r.below(0x20),
        4 => r.pick(&[
            psci::VERSION,
            psci::CPU_OFF,
            psci::SYSTEM_OFF,
            psci::SYSTEM_RESET,
            psci::FEATURES,
            0xC400_0001, // CPU_SUSPEND_64
            0xC400_0003, // CPU_ON_64
            0x8400_0003, // CPU_ON_32
            0xC400_0004, // AFFINITY_INFO_64
            0x8400_0004, // AFFINITY_INFO_32
            0x8400_0001, // CPU_SUSPEND_32
        ]),
        5 => r.pick(&[psci::SMCCC_VERSION, psci::SMCCC_ARCH_FEATURES, 0x8000_7FFF]),
        6 => 0xC400_0150 + r.below(0x20), // RMI ids from the realm
        _ => r.next(),
    }
}

/// Appends one "interesting" operation.
fn interesting(out: &mut Vec<u32>, r: &mut Rng, l: &Layout, allow_off: bool) {
    match r.below(12) {
        // SMC with x0 = fid, x1..x10 arguments.
        0..=3 => {
            let mut f = smc_fid(r);
            if !allow_off && (f == psci::SYSTEM_OFF || f == psci::SYSTEM_RESET) {
                f = psci::VERSION;
            }
            mov64(out, 0, f);
            for reg in 1..=r.below(11) as u32 {
                mov64(out, reg, l.arg(r));
            }
            out.push(if r.chance(1, 16) {
                SMC0 | ((r.below(0x10000) as u32) << 5)
            } else {
                SMC0
            });
        }
        // A well-formed RSI / PSCI call (the random ones rarely are).
        4 => {
            let page = |r: &mut Rng| l.ram + r.below(l.ram_size / GRANULE_SIZE) * GRANULE_SIZE;
            let base = page(r);
            let (f, args) = match r.below(6) {
                0 | 1 => (
                    rsi::IPA_STATE_SET,
                    vec![
                        base,
                        base + (1 + r.below(600)) * GRANULE_SIZE,
                        r.below(2),
                        r.below(2),
                    ],
                ),
                2 => (rsi::HOST_CALL, vec![base + r.below(16) * 0x100]),
                3 => (rsi::REALM_CONFIG, vec![base]),
                4 => (
                    rsi::IPA_STATE_GET,
                    vec![base, base + r.below(64) * GRANULE_SIZE],
                ),
                _ => (
                    r.pick(&[0xC400_0003, 0xC400_0004]),
                    vec![abi::rec_idx_to_mpidr(r.below(3)), l.ram + 0x1000, r.next()],
                ),
            };
            mov64(out, 0, f);
            for (i, a) in args.iter().enumerate() {
                mov64(out, i as u32 + 1, *a);
            }
            out.push(SMC0);
        }
        // Load or store at an interesting address.
        5 | 6 => {
            let base = 9 + r.below(4) as u32;
            mov64(out, base, l.addr(r));
            let rt = r.below(31) as u32;
            let insn = match r.below(8) {
                0 => 0xF940_0000,                                   // ldr x, [xn]
                1 => 0xF900_0000,                                   // str x, [xn]
                2 => 0xB940_0000,                                   // ldr w
                3 => 0x3940_0000,                                   // ldrb w
                4 => 0x39C0_0000,                                   // ldrsb w
                5 => 0x7980_0000,                                   // ldrsh x
                6 => 0xA940_0000 | ((r.below(31) as u32) << 10),    // ldp x, x
                _ => 0xF800_0C00 | ((r.below(0x200) as u32) << 12), // str x, [xn, #s]!
            };
            out.push(insn | (base << 5) | rt);
        }
        // MRS / MSR of a random system register.
        7 => {
            let sys = (r.below(1 << 15) as u32) << 5;
            let rt = r.below(32) as u32;
            out.push(if r.chance(1, 2) {
                0xD530_0000 | sys | rt
            } else {
                0xD510_0000 | sys | rt
            });
        }
        8 => out.push(0xD400_0002 | ((r.below(0x10000) as u32) << 5)), // hvc
        9 => out.push(r.pick(&[0xD503_207F, 0xD503_205F, 0xD69F_03E0])), // wfi, wfe, eret
        10 => out.push(0xD53B_2400 | r.below(32) as u32),              // mrs x, rndr
        _ => out.push(r.next() as u32),
    }
}

/// The realm's first page: VBAR_EL1 = RAM + 0x800, whose synchronous vectors (EL1t at +0x000,
/// EL1h at +0x200) skip the faulting instruction (`mrs x28, elr_el1; add x28, x28, #4;
/// msr elr_el1, x28; eret`), then a branch to the stream at RAM + 0x1000. Exceptions the RMM
/// injects (UNDEF, SEA) so let the stream go on, as a real guest's handlers would.
fn preamble(l: &Layout) -> Vec<u32> {
    let mut out = Vec::new();
    mov64(&mut out, 0, l.ram + 0x800);
    out.push(0xD518_C000); // msr vbar_el1, x0
    let here = out.len() as u32;
    out.push(0x1400_0000 | (0x400 - here)); // b ram + 0x1000
    let skip = [0xD538_403C, 0x9100_139C, 0xD518_403C, 0xD69F_03E0];
    out.resize(0x800 / 4, 0);
    out.extend_from_slice(&skip);
    out.resize(0xA00 / 4, 0);
    out.extend_from_slice(&skip);
    out.resize(0x1000 / 4, 0);
    out
}

fn random_words(r: &mut Rng, l: &Layout, n: usize) -> Vec<u32> {
    let mut out = preamble(l);
    while out.len() < n {
        out.push(r.next() as u32);
    }
    out
}

/// The stream ends in `wfi; b .-4`: a guest that runs off its end halts cheaply (every WFI is
/// a Halt exit) instead of spinning through the host's IRQ budget.
fn biased_stream(r: &mut Rng, l: &Layout, n: usize, allow_off: bool) -> Vec<u32> {
    let mut out = preamble(l);
    while out.len() < n - 2 {
        interesting(&mut out, r, l, allow_off);
    }
    out.extend_from_slice(&[0xD503_207F, 0x17FF_FFFF]);
    out
}

fn bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

// ------------------------------------------------------------------------------------------
// 1. Hostile guests through the host flow.

fn small_model() -> Arc<Rmm> {
    Arc::new(Rmm::new(RmmConfig {
        budget: 100,
        ..RmmConfig::default()
    }))
}

fn answer(r: &mut Rng, pending: Option<&VmExit>) -> Resume {
    match pending {
        Some(VmExit::Mmio { write: None, .. }) if r.chance(1, 8) => Resume::InjectAbort,
        Some(VmExit::Mmio { write: None, .. }) => Resume::MmioRead(r.next()),
        Some(VmExit::Mmio { write: Some(_), .. }) if r.chance(1, 8) => Resume::InjectAbort,
        Some(VmExit::ConvertMemory { .. }) => Resume::Conversion(r.chance(2, 3)),
        Some(VmExit::HostCall { .. }) => Resume::HostCall([r.next(), r.next()]),
        Some(VmExit::SysReg { .. }) => Resume::SysReg(r.next()),
        _ => Resume::Done,
    }
}

/// What a guest run produced, for the test's summary.
#[derive(Default, Debug)]
struct GuestTally {
    exits: usize,
    kinds: std::collections::BTreeMap<String, usize>,
    mismatches: usize,
}

/// Launches a realm running `code` on vCPU 0 (vCPU 1 secondary), drives it for up to
/// `budget` exits, then destroys it and checks nothing is left behind.
fn hostile_guest(seed: u64, code: &[u32], budget: usize, tally: &mut GuestTally) {
    let rmm = small_model();
    {
        let backend = CcaBackend::with_model(Arc::clone(&rmm));
        let config = VmConfig {
            vcpus: 2,
            ..VmConfig::new(Confidentiality::ArmCca)
        };
        let vm = backend.create_vm(&config).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
        vm.add_memory(MemoryRegion::shared(SHARED, SHARED_SIZE))
            .unwrap();
        vm.load(RAM, &bytes(code), Measure::Yes).unwrap();
        let mut vcpus: Vec<Box<dyn Vcpu>> = vec![
            vm.create_vcpu(VcpuInit::boot(RAM, &[1, 2, 3])).unwrap(),
            vm.create_vcpu(VcpuInit::secondary()).unwrap(),
        ];
        vm.finalize().unwrap();
        let mut r = Rng::new(seed ^ 0xA5A5);
        let mut spinning = 0;
        for _ in 0..budget {
            let i = if r.chance(3, 4) { 0 } else { 1 };
            let v = &mut vcpus[i];
            let pending = v.pending().cloned();
            let resume = if r.chance(1, 32) {
                // A resume that may not match: must be a typed error, nothing entered.
                r.pick(&[
                    Resume::Done,
                    Resume::MmioRead(1),
                    Resume::Conversion(true),
                    Resume::HostCall([0, 0]),
                    Resume::InjectAbort,
                ])
            } else {
                answer(&mut r, pending.as_ref())
            };
            match v.run(resume) {
                Ok(exit) => {
                    tally.exits += 1;
                    *tally.kinds.entry(format!("{:?}", exit.kind())).or_default() += 1;
                    if matches!(exit, VmExit::SystemOff | VmExit::Reset) {
                        break;
                    }
                    // A guest spinning (a loop, or faulting through unmapped code) gives
                    // nothing new after a few host timer budgets.
                    spinning = if exit == VmExit::Interrupted {
                        spinning + 1
                    } else {
                        0
                    };
                    if spinning > 3 {
                        break;
                    }
                }
                Err(Error::ResumeMismatch { .. }) => tally.mismatches += 1,
                Err(e) => {
                    // A guest must not be able to make the host's RMI calls fail.
                    panic!("seed {seed:#x}: vCPU {i} run failed: {e}");
                }
            }
            rmm.check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed:#x}: invariant broken: {e}"));
        }
        vm.destroy()
            .unwrap_or_else(|e| panic!("seed {seed:#x}: destroy failed: {e}"));
        assert_eq!(rmm.realms(), 0, "seed {seed:#x}");
        assert_eq!(rmm.delegated_granules(), 0, "seed {seed:#x}");
        drop(vcpus);
        drop(vm);
    }
    assert_eq!(rmm.delegated_granules(), 0, "seed {seed:#x}");
    assert_eq!(
        rmm.host_granules(),
        0,
        "seed {seed:#x}: host granules leaked"
    );
    assert_eq!(rmm.host_windows(), 0, "seed {seed:#x}: windows leaked");
    rmm.check_invariants().unwrap();
}

const GUEST_LAYOUT: Layout = Layout {
    ram: RAM,
    ram_size: RAM_SIZE,
    s2sz: 40,
};

#[test]
fn hostile_guests_random_words() {
    let mut t = GuestTally::default();
    for seed in 0..24u64 {
        let mut r = Rng::new(seed);
        let code = random_words(&mut r, &GUEST_LAYOUT, 2048);
        hostile_guest(seed, &code, 12, &mut t);
    }
    assert!(t.exits > 0);
    eprintln!("random words: {t:?}");
}

#[test]
fn hostile_guests_biased_streams() {
    let mut t = GuestTally::default();
    for seed in 100..180u64 {
        let mut r = Rng::new(seed);
        let code = biased_stream(&mut r, &GUEST_LAYOUT, 2048, seed % 4 == 0);
        hostile_guest(seed, &code, 40, &mut t);
    }
    assert!(t.exits > 0);
    eprintln!("biased streams: {t:?}");
}

// ------------------------------------------------------------------------------------------
// 2. Hostile hosts: raw RMI.

/// The granules and objects a host fuzzer has handed out.
struct HostFuzz<'a> {
    rmm: &'a Rmm,
    r: Rng,
    pool: Vec<u64>,
    params: u64,
    run: u64,
    /// Interesting PAs (RDs, RECs, RTTs seen) and IPAs (from exits).
    pas: Vec<u64>,
    ipas: Vec<u64>,
    layout: Layout,
    calls: usize,
    ok: usize,
    data_pages: u64,
    /// The last RIPAS_CHANGE exit: (REC, base, top).
    last_ripas: Option<(u64, u64, u64)>,
    ok_by: std::collections::BTreeMap<&'static str, usize>,
}

fn status_ok(f: u64, x0: u64) -> Result<(), String> {
    let known = (fid::VERSION..=fid::RTT_SET_RIPAS).contains(&f)
        && !matches!(f, 0xC400_0156 | 0xC400_0160 | 0xC400_0163);
    if !known {
        return if x0 == abi::SMC_UNKNOWN {
            Ok(())
        } else {
            Err(format!("unknown FID {f:#x} returned {x0:#x}"))
        };
    }
    let (code, index) = abi::unpack_return(x0);
    if x0 >> 16 != 0 {
        return Err(format!("X0 {x0:#x} has bits above the index"));
    }
    match RmiStatus::from_code(code) {
        Some(RmiStatus::Success | RmiStatus::ErrorInput | RmiStatus::ErrorRec) if index == 0 => {
            Ok(())
        }
        Some(RmiStatus::ErrorRealm) if index <= 1 => Ok(()),
        Some(RmiStatus::ErrorRtt) if index <= 3 => Ok(()),
        _ => Err(format!("bad status {x0:#x} from {}", fid::name(f))),
    }
}

impl<'a> HostFuzz<'a> {
    fn new(rmm: &'a Rmm, seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let s2sz = r.pick(&[32u8, 36, 40, 48]);
        let pool: Vec<u64> = (0..64).map(|_| rmm.alloc_ns_granules(1).unwrap()).collect();
        Self {
            rmm,
            r,
            pool,
            params: rmm.alloc_ns_granules(1).unwrap(),
            run: rmm.alloc_ns_granules(1).unwrap(),
            pas: Vec::new(),
            ipas: Vec::new(),
            layout: Layout {
                ram: 0x4000_0000 & ((1 << (s2sz - 1)) - 1),
                ram_size: 4 << 20,
                s2sz,
            },
            calls: 0,
            ok: 0,
            data_pages: 0,
            last_ripas: None,
            ok_by: Default::default(),
        }
    }

    fn granule(&mut self) -> u64 {
        let i = self.r.below(self.pool.len() as u64) as usize;
        self.pool[i]
    }

    fn pa(&mut self) -> u64 {
        match self.r.below(10) {
            0..=4 => self.granule(),
            5 if !self.pas.is_empty() => self.r.pick(&self.pas.clone()),
            6 => self.granule() + 1 + self.r.below(0xFFF),
            7 => self.params,
            8 => self.r.pick(&[0, u64::MAX, !0xFFFu64, 0x8_0000_0000]),
            _ => self.r.next() & !0xFFF,
        }
    }

    fn ipa(&mut self) -> u64 {
        let l = self.layout;
        match self.r.below(8) {
            0 if !self.ipas.is_empty() => self.r.pick(&self.ipas.clone()),
            1 => l.ram + self.r.below(l.ram_size / GRANULE_SIZE) * GRANULE_SIZE,
            2 => l.ram & !((1 << 21) - 1),
            3 => (l.ram & !((1 << 30) - 1)) | l.top(),
            4 => l.top() + self.r.below(16) * (2 << 20),
            5 => self.r.below(1 << l.s2sz) & !0xFFF,
            6 => self.r.pick(&[0, 1 << l.s2sz, !0xFFFu64, l.top() - 0x1000]),
            _ => l.addr(&mut self.r),
        }
    }

    fn level(&mut self) -> u64 {
        if self.r.chance(1, 8) {
            self.r.next()
        } else {
            (self.r.below(7) as i64 - 1) as u64
        }
    }

    fn rd(&mut self) -> u64 {
        let rds = self.rmm.realm_rds();
        if !rds.is_empty() && self.r.chance(4, 5) {
            self.r.pick(&rds)
        } else {
            self.pa()
        }
    }

    fn rec(&mut self) -> u64 {
        let recs: Vec<u64> = self
            .rmm
            .granule_states()
            .into_iter()
            .filter(|(_, s)| *s == GranuleState::Rec)
            .map(|(pa, _)| pa)
            .collect();
        if !recs.is_empty() && self.r.chance(5, 6) {
            self.r.pick(&recs)
        } else {
            self.pa()
        }
    }

    /// Valid-looking realm parameters with one field sometimes mutated.
    fn write_realm_params(&mut self) {
        let s2sz = self.layout.s2sz;
        let (sl, num) = match s2sz {
            32 => (2, 4),
            36 => (1, 1),
            40 => (1, 2),
            _ => (0, 1),
        };
        let mut p = RealmParams::zeroed();
        p.s2sz = s2sz;
        p.num_bps = 1;
        p.num_wps = 1;
        p.hash_algo = self.r.below(2) as u8;
        p.vmid = self.r.below(4) as u16;
        p.rtt_level_start = sl;
        p.rtt_num_start = num;
        p.rtt_base = self.granule();
        if self.r.chance(1, 2) {
            match self.r.below(9) {
                0 => p.flags = self.r.next() & 0x7,
                1 => p.s2sz = self.r.next() as u8,
                2 => p.sve_vl = self.r.next() as u8,
                3 => p.rtt_level_start = self.level() as i64,
                4 => p.rtt_num_start = self.r.below(20) as u32,
                5 => p.rtt_base = self.pa(),
                6 => p.rtt_base = !0xFFFu64,
                7 => p.pmu_num_ctrs = self.r.next() as u8,
                _ => p.hash_algo = self.r.next() as u8,
            }
        }
        let _ = self.rmm.write_ns(self.params, p.as_bytes());
    }

    fn write_rec_params(&mut self) {
        let mut p = RecParams::zeroed();
        p.flags = if self.r.chance(1, 8) {
            self.r.next()
        } else {
            self.r.below(2)
        };
        p.mpidr = abi::rec_idx_to_mpidr(self.r.below(3));
        p.pc = self.layout.ram + self.r.below(4) * GRANULE_SIZE;
        for g in p.gprs.iter_mut() {
            *g = self.layout.arg(&mut self.r);
        }
        p.num_aux = if self.r.chance(1, 8) {
            self.r.below(20)
        } else {
            abi::MAX_REC_AUX_GRANULES as u64
        };
        for a in p.aux.iter_mut() {
            *a = self.granule();
        }
        if self.r.chance(1, 4) {
            let i = self.r.below(16) as usize;
            p.aux[i] = self.pa();
        }
        let _ = self.rmm.write_ns(self.params, p.as_bytes());
    }

    fn write_code(&mut self) {
        let l = self.layout;
        // Page 0 of the realm's RAM gets the preamble (vectors), later pages a stream.
        let words = if self.r.chance(1, 4) {
            random_words(&mut self.r, &l, 2048)
        } else {
            biased_stream(&mut self.r, &l, 2048, true)
        };
        let b = bytes(&words);
        let b = if self.data_pages % 2 == 0 {
            &b[..GRANULE_SIZE as usize]
        } else {
            &b[GRANULE_SIZE as usize..]
        };
        self.data_pages += 1;
        let _ = self.rmm.write_ns(self.params, b);
    }

    fn write_enter(&mut self) {
        let mut e = RecEnter::zeroed();
        e.flags = match self.r.below(8) {
            0 => self.r.next(),
            1 => 0,
            2..=4 => enter_flags::TRAP_WFI,
            _ => {
                let mut f = 0;
                for bit in [
                    enter_flags::EMULATED_MMIO,
                    enter_flags::INJECT_SEA,
                    enter_flags::TRAP_WFI,
                    enter_flags::TRAP_WFE,
                    enter_flags::RIPAS_RESPONSE,
                ] {
                    if self.r.chance(1, 3) {
                        f |= bit;
                    }
                }
                f
            }
        };
        for g in e.gprs.iter_mut() {
            *g = if self.r.chance(1, 2) {
                self.r.next()
            } else {
                self.layout.arg(&mut self.r)
            };
        }
        if self.r.chance(1, 8) {
            e.gicv3_hcr = self.r.next();
        }
        let _ = self.rmm.write_ns(self.run, e.as_bytes());
    }

    /// One call: mostly well-formed commands with interesting arguments, some garbage.
    fn step(&mut self) {
        if self.r.chance(1, 32) {
            // The host-memory side of the trait: arbitrary PAs and lengths are typed errors.
            let pa = self.pa().wrapping_add(self.r.below(0x2000));
            let mut buf = vec![0u8; self.r.below(0x3000) as usize];
            let _ = self.rmm.read_ns(pa, &mut buf);
            let _ = self.rmm.write_ns(pa, &buf);
            if !self.pool.contains(&pa) && pa != self.params && pa != self.run {
                assert!(self.rmm.free_ns_granule(pa).is_err());
            }
            let _ = self.rmm.detach_ns_memory(pa);
            self.rmm.check_invariants().unwrap();
        }
        let (f, args): (u64, Vec<u64>) = match self.r.below(24) {
            0 => {
                let pa = self.pa();
                (fid::GRANULE_DELEGATE, vec![pa])
            }
            1 => {
                let pa = self.pa();
                (fid::GRANULE_UNDELEGATE, vec![pa])
            }
            2 | 3 => {
                self.write_realm_params();
                let rd = self.pa();
                (fid::REALM_CREATE, vec![rd, self.params])
            }
            4 | 5 => {
                let (rd, rtt, ipa, level) = (self.rd(), self.pa(), self.ipa(), self.level());
                (fid::RTT_CREATE, vec![rd, rtt, ipa, level])
            }
            6 => {
                let (rd, ipa, level) = (self.rd(), self.ipa(), self.level());
                let f = self.r.pick(&[
                    fid::RTT_DESTROY,
                    fid::RTT_FOLD,
                    fid::RTT_READ_ENTRY,
                    fid::RTT_UNMAP_UNPROTECTED,
                ]);
                (f, vec![rd, ipa, level])
            }
            7 => {
                let (rd, ipa, level) = (self.rd(), self.ipa(), self.level());
                let desc = if self.r.chance(1, 2) {
                    self.granule() | backend_arm_cca::model::rtt::NS_DESC_ATTR_MASK
                } else {
                    self.r.next()
                };
                (fid::RTT_MAP_UNPROTECTED, vec![rd, ipa, level, desc])
            }
            8 | 9 => {
                let rd = self.rd();
                let base = self.ipa();
                let top = if self.r.chance(3, 4) {
                    base.wrapping_add((1 + self.r.below(600)) * GRANULE_SIZE)
                } else {
                    self.ipa()
                };
                (fid::RTT_INIT_RIPAS, vec![rd, base, top])
            }
            10 | 11 => {
                self.write_code();
                let (rd, data, ipa) = (self.rd(), self.pa(), self.ipa());
                let flags = if self.r.chance(1, 8) {
                    self.r.next()
                } else {
                    self.r.below(2)
                };
                (fid::DATA_CREATE, vec![rd, data, ipa, self.params, flags])
            }
            12 => {
                let (rd, data, ipa) = (self.rd(), self.pa(), self.ipa());
                (fid::DATA_CREATE_UNKNOWN, vec![rd, data, ipa])
            }
            13 => {
                let (rd, ipa) = (self.rd(), self.ipa());
                (fid::DATA_DESTROY, vec![rd, ipa])
            }
            14 | 15 => {
                self.write_rec_params();
                let (rd, rec) = (self.rd(), self.pa());
                (fid::REC_CREATE, vec![rd, rec, self.params])
            }
            16 => {
                let rec = if self.r.chance(1, 4) {
                    self.rec()
                } else {
                    self.pa()
                };
                (fid::REC_DESTROY, vec![rec])
            }
            17..=19 => {
                self.write_enter();
                let rec = self.rec();
                let run = if self.r.chance(1, 16) {
                    self.pa()
                } else {
                    self.run
                };
                (fid::REC_ENTER, vec![rec, run])
            }
            20 => {
                let rd = self.rd();
                let f = self
                    .r
                    .pick(&[fid::REALM_ACTIVATE, fid::REALM_DESTROY, fid::REC_AUX_COUNT]);
                (f, vec![rd])
            }
            21 => {
                let (a, b) = (self.rec(), self.rec());
                let junk = self.r.next();
                let status = self.r.pick(&[psci::SUCCESS, psci::DENIED, junk, 1]);
                (fid::PSCI_COMPLETE, vec![a, b, status])
            }
            22 if self.last_ripas.is_some() && self.r.chance(2, 3) => {
                let (rec, base, top) = self.last_ripas.unwrap_or_default();
                let rd = self.rd();
                let top = if self.r.chance(3, 4) { top } else { self.ipa() };
                (fid::RTT_SET_RIPAS, vec![rd, rec, base, top])
            }
            22 => {
                let (rd, rec) = (self.rd(), self.rec());
                let base = self.ipa();
                let top = if self.r.chance(1, 2) {
                    base.wrapping_add(self.r.below(64) * GRANULE_SIZE)
                } else {
                    self.ipa()
                };
                (fid::RTT_SET_RIPAS, vec![rd, rec, base, top])
            }
            _ => {
                let f = match self.r.below(3) {
                    0 => 0xC400_0150 + self.r.below(0x1A),
                    1 => self.r.next(),
                    _ => 0xC400_0100 + self.r.below(0x100),
                };
                let n = self.r.below(7) as usize;
                let args = (0..n)
                    .map(|_| match self.r.below(3) {
                        0 => self.pa(),
                        1 => self.ipa(),
                        _ => self.r.next(),
                    })
                    .collect();
                (f, args)
            }
        };
        self.call(f, &args);
    }

    fn call(&mut self, f: u64, args: &[u64]) -> [u64; 5] {
        let before = granule_census(self.rmm);
        let realms_before = self.rmm.realm_rds();
        let ret = self.rmm.smc(f, args);
        self.calls += 1;
        let what = format!("{} {args:#x?}", fid::name(f));
        status_ok(f, ret[0]).unwrap_or_else(|e| panic!("{what}: {e}"));
        self.rmm
            .check_invariants()
            .unwrap_or_else(|e| panic!("after {what} → {:#x}: {e}", ret[0]));
        if ret[0] != 0 {
            // A failed command changes nothing (REC_ENTER excepted only for its run page).
            assert_eq!(
                granule_census(self.rmm),
                before,
                "{what} failed ({:#x}) but changed granule states",
                ret[0]
            );
            assert_eq!(self.rmm.realm_rds(), realms_before, "{what}");
        } else {
            self.ok += 1;
            *self.ok_by.entry(fid::name(f)).or_default() += 1;
            match f {
                fid::REALM_CREATE | fid::REC_CREATE | fid::RTT_CREATE => {
                    self.pas
                        .push(args[if f == fid::REALM_CREATE { 0 } else { 1 }]);
                }
                fid::REC_ENTER => self.learn_from_exit(args[0]),
                _ => {}
            }
        }
        ret
    }

    fn learn_from_exit(&mut self, rec: u64) {
        let mut b = [0u8; 0x800];
        self.rmm.read_ns(self.run + 0x800, &mut b).unwrap();
        let exit = RecExit::read_from_bytes(&b).unwrap();
        match exit.exit_reason {
            exit_reason::RIPAS_CHANGE => {
                self.last_ripas = Some((rec, exit.ripas_base, exit.ripas_top));
                self.ipas.push(exit.ripas_base);
                self.ipas.push(exit.ripas_top);
            }
            exit_reason::SYNC => self.ipas.push(abi::hpfar_to_ipa(exit.hpfar)),
            _ => {}
        }
        if self.ipas.len() > 32 {
            self.ipas.drain(..16);
        }
    }

    /// A valid launch, so REC_ENTER has something to run: realm, tables, RIPAS, code, a REC,
    /// activate. Steps that fail (the fuzzer got there first) are fine.
    fn valid_launch(&mut self) {
        let l = self.layout;
        let (sl, num) = match l.s2sz {
            32 => (2i64, 4u32),
            36 => (1, 1),
            40 => (1, 2),
            _ => (0, 1),
        };
        let free: Vec<u64> = self
            .pool
            .iter()
            .copied()
            .filter(|pa| granule_state(self.rmm, *pa) == Some(GranuleState::Undelegated))
            .collect();
        if free.len() < 36 {
            return;
        }
        let mut free = free.into_iter();
        let mut next = || free.next().unwrap();
        let rd = next();
        // Roots must be contiguous: a fresh run, added to the pool.
        let base = self.rmm.alloc_ns_granules(u64::from(num)).unwrap();
        for i in 0..u64::from(num) {
            self.pool.push(base + i * GRANULE_SIZE);
        }
        for pa in [rd]
            .into_iter()
            .chain((0..num).map(|i| base + u64::from(i) * GRANULE_SIZE))
        {
            self.call(fid::GRANULE_DELEGATE, &[pa]);
        }
        let mut p = RealmParams::zeroed();
        p.s2sz = l.s2sz;
        p.num_bps = 1;
        p.num_wps = 1;
        p.vmid = 100 + self.r.below(100) as u16;
        p.rtt_base = base;
        p.rtt_level_start = sl;
        p.rtt_num_start = num;
        let _ = self.rmm.write_ns(self.params, p.as_bytes());
        if self.call(fid::REALM_CREATE, &[rd, self.params])[0] != 0 {
            return;
        }
        for level in (sl + 1)..=3 {
            let t = next();
            self.call(fid::GRANULE_DELEGATE, &[t]);
            let size = 1u64 << (12 + 9 * (3 - (level - 1)));
            self.call(fid::RTT_CREATE, &[rd, t, l.ram & !(size - 1), level as u64]);
        }
        self.call(fid::RTT_INIT_RIPAS, &[rd, l.ram, l.ram + (2 << 20)]);
        // Tables at the unprotected alias of RAM, and one page mapped there.
        for level in (sl + 1)..=3 {
            let t = next();
            self.call(fid::GRANULE_DELEGATE, &[t]);
            let size = 1u64 << (12 + 9 * (3 - (level - 1)));
            let alias = (l.ram | l.top()) & !(size - 1);
            self.call(fid::RTT_CREATE, &[rd, t, alias, level as u64]);
        }
        let ns = self.granule();
        self.call(
            fid::RTT_MAP_UNPROTECTED,
            &[
                rd,
                l.ram | l.top(),
                3,
                ns | backend_arm_cca::model::rtt::NS_DESC_ATTR_MASK,
            ],
        );
        for page in 0..2 {
            self.data_pages = page;
            self.write_code();
            let d = next();
            self.call(fid::GRANULE_DELEGATE, &[d]);
            self.call(
                fid::DATA_CREATE,
                &[rd, d, l.ram + page * GRANULE_SIZE, self.params, 1],
            );
        }
        for idx in 0..2 {
            let rec = next();
            self.call(fid::GRANULE_DELEGATE, &[rec]);
            let mut rp = RecParams::zeroed();
            rp.flags = if idx == 0 { abi::REC_FLAG_RUNNABLE } else { 0 };
            rp.mpidr = abi::rec_idx_to_mpidr(idx);
            rp.pc = l.ram;
            rp.num_aux = abi::MAX_REC_AUX_GRANULES as u64;
            for a in rp.aux.iter_mut() {
                *a = next();
                self.call(fid::GRANULE_DELEGATE, &[*a]);
            }
            let _ = self.rmm.write_ns(self.params, rp.as_bytes());
            self.call(fid::REC_CREATE, &[rd, rec, self.params]);
        }
        self.call(fid::REALM_ACTIVATE, &[rd]);
    }

    /// Tears down everything through the RMI only (RTT_READ_ENTRY walks), then undelegates and
    /// frees the pool: the model must end with nothing delegated.
    fn teardown(&mut self) {
        let c = RmiClient::new(self.rmm, None);
        for pa in self.pool.clone() {
            if granule_state(self.rmm, pa) == Some(GranuleState::Rec) {
                c.rec_destroy(pa).unwrap();
            }
        }
        for rd in self.rmm.realm_rds() {
            let mut err = None;
            // Post-order walk from the root level through RTT_READ_ENTRY.
            let (sl, s2sz) = realm_shape(self.rmm, rd);
            let top = 1u64 << s2sz;
            self.teardown_range(rd, 0, top, sl, &mut err);
            assert!(err.is_none(), "{err:?}");
            c.realm_destroy(rd).unwrap();
        }
        for pa in self.pool.clone() {
            let _ = c.granule_undelegate(pa);
            self.rmm.free_ns_granule(pa).unwrap();
        }
        for pa in [self.params, self.run] {
            let _ = c.granule_undelegate(pa);
            self.rmm.free_ns_granule(pa).unwrap();
        }
        assert_eq!(self.rmm.realms(), 0);
        assert_eq!(self.rmm.delegated_granules(), 0);
        assert_eq!(self.rmm.host_granules(), 0);
        self.rmm.check_invariants().unwrap();
    }

    fn teardown_range(&self, rd: u64, base: u64, end: u64, level: i8, err: &mut Option<String>) {
        let c = RmiClient::new(self.rmm, None);
        let size = 1u64 << (12 + 9 * (3 - level as u32));
        let mut ipa = base;
        while ipa < end {
            let e = c.rtt_read_entry(rd, ipa, level).unwrap();
            if e.level == level {
                match e.state {
                    abi::RttEntryState::Table => {
                        self.teardown_range(rd, ipa, ipa + size, level + 1, err);
                        if let Err(x) = c.rtt_destroy(rd, ipa, level + 1) {
                            *err = Some(format!("RTT_DESTROY {ipa:#x} L{}: {x}", level + 1));
                        }
                    }
                    abi::RttEntryState::Assigned => {
                        let unprotected = ipa >= (1u64 << (realm_shape(self.rmm, rd).1 - 1));
                        let r = if unprotected {
                            c.rtt_unmap_unprotected(rd, ipa, level).map(drop)
                        } else {
                            c.data_destroy(rd, ipa).map(drop)
                        };
                        if let Err(x) = r {
                            *err = Some(format!("unassign {ipa:#x} L{level}: {x}"));
                        }
                    }
                    _ => {}
                }
            }
            ipa += size;
        }
    }
}

/// Every allocated granule's state, for "a failed call changes nothing".
fn granule_census(rmm: &Rmm) -> Vec<(u64, GranuleState)> {
    rmm.granule_states()
}

fn granule_state(rmm: &Rmm, pa: u64) -> Option<GranuleState> {
    rmm.granule_states()
        .into_iter()
        .find(|(p, _)| *p == pa)
        .map(|(_, s)| s)
}

fn realm_shape(rmm: &Rmm, rd: u64) -> (i8, u8) {
    rmm.realm_shape(rd).unwrap()
}

#[test]
fn hostile_hosts_random_rmi_sequences() {
    let (mut calls, mut ok) = (0, 0);
    let mut ok_by = std::collections::BTreeMap::new();
    for seed in 0..32u64 {
        let rmm = Rmm::new(RmmConfig {
            budget: 200,
            ..RmmConfig::default()
        });
        let mut h = HostFuzz::new(&rmm, 0xC0FFEE ^ seed);
        for i in 0..500 {
            if i % 125 == 0 {
                h.valid_launch();
            }
            h.step();
        }
        calls += h.calls;
        ok += h.ok;
        for (k, v) in &h.ok_by {
            *ok_by.entry(*k).or_insert(0) += v;
        }
        h.teardown();
    }
    eprintln!("hostile hosts: {calls} RMI calls, {ok} succeeded: {ok_by:?}");
    assert!(ok > 0);
}

// ------------------------------------------------------------------------------------------
// Regressions (minimized inputs the randomized tests found).

const UNPROTECTED_40: u64 = 1 << 39;
const MRS_X1_ESR_EL1: u32 = 0xD538_5201;
const MRS_X1_FAR_EL1: u32 = 0xD538_6001;
const STR_X1_X9: u32 = 0xF900_0121;
const STR_X1_X9_8: u32 = 0xF900_0521;

/// A realm built by hand through the RMI (s2sz 40) with `code` (at most one page) at RAM, one
/// runnable REC at RAM, activated: (rd, rec, run page).
fn raw_realm(rmm: &Rmm, code: &[u32]) -> (u64, u64, u64) {
    let c = RmiClient::new(rmm, None);
    let g = |n| rmm.alloc_ns_granules(n).unwrap();
    let del = |pa| c.granule_delegate(pa).unwrap();
    let rd = g(1);
    let roots = g(2);
    for pa in [rd, roots, roots + GRANULE_SIZE] {
        del(pa);
    }
    let mut p = RealmParams::zeroed();
    p.s2sz = 40;
    p.num_bps = 1;
    p.num_wps = 1;
    p.vmid = 7;
    p.rtt_base = roots;
    p.rtt_level_start = 1;
    p.rtt_num_start = 2;
    let params = g(1);
    rmm.write_ns(params, p.as_bytes()).unwrap();
    c.realm_create(rd, params).unwrap();
    for (level, ipa) in [(2, RAM & !((1 << 30) - 1)), (3, RAM)] {
        let t = g(1);
        del(t);
        c.rtt_create(rd, t, ipa, level).unwrap();
    }
    c.rtt_init_ripas(rd, RAM, RAM + GRANULE_SIZE).unwrap();
    let data = g(1);
    del(data);
    let mut page = bytes(code);
    page.resize(GRANULE_SIZE as usize, 0);
    rmm.write_ns(params, &page).unwrap();
    c.data_create(rd, data, RAM, params, abi::RMI_MEASURE_CONTENT)
        .unwrap();
    let rec = g(1);
    del(rec);
    let mut rp = RecParams::zeroed();
    rp.flags = abi::REC_FLAG_RUNNABLE;
    rp.pc = RAM;
    rp.num_aux = c.rec_aux_count(rd).unwrap();
    for a in rp.aux.iter_mut() {
        *a = g(1);
        del(*a);
    }
    rmm.write_ns(params, rp.as_bytes()).unwrap();
    c.rec_create(rd, rec, params).unwrap();
    c.realm_activate(rd).unwrap();
    (rd, rec, g(1))
}

/// One REC_ENTER with `flags`; the RecExit.
fn enter(rmm: &Rmm, rec: u64, run: u64, flags: u64) -> RecExit {
    let mut e = RecEnter::zeroed();
    e.flags = flags;
    rmm.write_ns(run, e.as_bytes()).unwrap();
    RmiClient::new(rmm, None).rec_enter(rec, run).unwrap();
    let mut b = [0u8; 0x800];
    rmm.read_ns(run + 0x800, &mut b).unwrap();
    RecExit::read_from_bytes(&b).unwrap()
}

/// Enters until an exit other than an emulatable MMIO write (answered EMULATED_MMIO), at most
/// `max` times; returns the values written and the last exit.
fn mmio_writes(rmm: &Rmm, rec: u64, run: u64, max: usize) -> (Vec<u64>, RecExit) {
    let mut writes = Vec::new();
    let mut flags = enter_flags::TRAP_WFI;
    for _ in 0..max {
        let exit = enter(rmm, rec, run, flags);
        let mmio_write = exit.exit_reason == exit_reason::SYNC
            && abi::esr::ec(exit.esr) == abi::esr::EC_DABT_LOWER
            && abi::esr::isv(exit.esr)
            && abi::esr::wnr(exit.esr);
        if !mmio_write {
            return (writes, exit);
        }
        writes.push(exit.gprs[0]);
        flags = enter_flags::TRAP_WFI | enter_flags::EMULATED_MMIO;
    }
    panic!("no exit other than MMIO writes in {max} entries");
}

/// Code whose EL1 synchronous vector (VBAR = RAM + 0x800, EL1h at + 0xA00) reports ESR_EL1 and
/// FAR_EL1 by MMIO writes, then `b .`; the body `body` starts at RAM + 0x20.
fn reporting_vectors(body: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    mov64(&mut out, 0, RAM + 0x800);
    out.push(0xD518_C000); // msr vbar_el1, x0
    mov64(&mut out, 9, DEV | UNPROTECTED_40);
    out.extend_from_slice(body);
    out.push(0x1400_0000); // b .
    out.resize(0xA00 / 4, 0);
    out.extend_from_slice(&[MRS_X1_ESR_EL1, STR_X1_X9, MRS_X1_FAR_EL1, STR_X1_X9_8]);
    out.push(0x1400_0000); // b .
    out
}

/// With stage 1 disabled, an address with bits at or above the PA size (48 bits) used to reach
/// stage 2 and be reported with a truncated HPFAR, aliasing protected RAM: the RMM then exited
/// to the host for a page that is mapped, and the host (finding it populated) re-entered
/// forever. It is a stage-1 Address size fault at level 0, taken to EL1.
#[test]
fn regression_address_beyond_the_pa_size_is_a_stage1_fault_not_an_alias() {
    let high = 0xFFFF_0000_0000_0000 | RAM;
    // Data access: ldr x1, [x10].
    let rmm = Rmm::default();
    let mut body = Vec::new();
    mov64(&mut body, 10, high);
    body.push(0xF940_0141);
    let (_, rec, run) = raw_realm(&rmm, &reporting_vectors(&body));
    let (writes, _) = mmio_writes(&rmm, rec, run, 8);
    assert_eq!(writes.len(), 2, "{writes:#x?}");
    // EC 0x25 (data abort, same EL), IL, DFSC 0 (address size, level 0); FAR the address.
    assert_eq!(abi::esr::ec(writes[0]), abi::esr::EC_DABT_CUR);
    assert_eq!(abi::esr::dfsc(writes[0]), 0);
    assert_eq!(writes[1], high);

    // Instruction fetch: br x10.
    let rmm = Rmm::default();
    let mut body = Vec::new();
    mov64(&mut body, 10, 1 << 52 | RAM);
    body.push(0xD61F_0140);
    let (_, rec, run) = raw_realm(&rmm, &reporting_vectors(&body));
    let (writes, _) = mmio_writes(&rmm, rec, run, 8);
    assert_eq!(writes.len(), 2, "{writes:#x?}");
    assert_eq!(abi::esr::ec(writes[0]), abi::esr::EC_IABT_CUR);
    assert_eq!(abi::esr::dfsc(writes[0]), 0);
    assert_eq!(writes[1], 1 << 52 | RAM);

    // And through the host flow the realm goes on (here: to SYSTEM_OFF) instead of hanging.
    let mut code = Vec::new();
    mov64(&mut code, 0, RAM + 0x800);
    code.push(0xD518_C000); // msr vbar_el1, x0
    mov64(&mut code, 10, high);
    code.push(0xF940_0141); // ldr x1, [x10] → EL1 abort → vector
    code.resize(0xA00 / 4, 0);
    mov64(&mut code, 0, psci::SYSTEM_OFF);
    code.push(SMC0);
    let rmm = small_model();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let vm = backend
        .create_vm(&VmConfig::new(Confidentiality::ArmCca))
        .unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &bytes(&code), Measure::Yes).unwrap();
    let mut v = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(v.run(Resume::Done).unwrap(), VmExit::SystemOff);
    vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
}

/// PSCI CPU_ON / AFFINITY_INFO naming the calling REC used to be forwarded to the host, whose
/// RMI_PSCI_COMPLETE(rec, rec) the RMM must refuse (calling == target): the vCPU was wedged
/// with a PSCI request pending and every later run failed. TF-RMM `psci.c` answers at once:
/// ALREADY_ON / AFFINITY_INFO ON, no exit.
#[test]
fn regression_psci_naming_the_calling_rec_is_answered_without_an_exit() {
    let mut code = Vec::new();
    mov64(&mut code, 0, 0xC400_0003); // CPU_ON_64
    mov64(&mut code, 1, 0); // MPIDR of vCPU 0: itself
    mov64(&mut code, 2, RAM);
    mov64(&mut code, 3, 0);
    code.push(SMC0);
    code.push(0xAA00_03E5); // mov x5, x0
    mov64(&mut code, 0, 0xC400_0004); // AFFINITY_INFO_64
    mov64(&mut code, 1, 0);
    mov64(&mut code, 2, 0);
    code.push(SMC0);
    code.push(0xAA00_03E6); // mov x6, x0
    mov64(&mut code, 9, DEV | UNPROTECTED_40);
    code.push(0xF900_0125); // str x5, [x9]
    code.push(0xF900_0526); // str x6, [x9, #8]
    mov64(&mut code, 0, psci::SYSTEM_OFF);
    code.push(SMC0);
    let rmm = small_model();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let config = VmConfig {
        vcpus: 2,
        ..VmConfig::new(Confidentiality::ArmCca)
    };
    let vm = backend.create_vm(&config).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &bytes(&code), Measure::Yes).unwrap();
    let mut v = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    let _second = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    let mut writes = Vec::new();
    let mut resume = Resume::Done;
    let end = loop {
        match v.run(resume).unwrap() {
            VmExit::Mmio {
                gpa,
                write: Some(x),
                ..
            } => {
                writes.push((gpa - DEV, x));
                resume = Resume::Done;
            }
            other => break other,
        }
    };
    assert_eq!(end, VmExit::SystemOff);
    assert_eq!(writes, vec![(0, psci::ALREADY_ON), (8, psci::AFF_ON)]);
    vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
}

/// RMI_REALM_CREATE with root RTTs running past the top of the address space used to overflow
/// computing their addresses (a panic in a debug build). It is RMI_ERROR_INPUT, nothing
/// changes.
#[test]
fn regression_realm_create_with_root_rtts_wrapping_the_address_space() {
    let rmm = Rmm::default();
    let c = RmiClient::new(&rmm, None);
    let rd = rmm.alloc_ns_granules(1).unwrap();
    c.granule_delegate(rd).unwrap();
    let mut p = RealmParams::zeroed();
    p.s2sz = 40;
    p.num_bps = 1;
    p.num_wps = 1;
    p.rtt_base = !0xFFFu64;
    p.rtt_level_start = 1;
    p.rtt_num_start = 2;
    let params = rmm.alloc_ns_granules(1).unwrap();
    rmm.write_ns(params, p.as_bytes()).unwrap();
    let before = rmm.granule_states();
    let e = c.realm_create(rd, params).unwrap_err();
    assert_eq!(e.status(), Some(RmiStatus::ErrorInput));
    assert_eq!(rmm.granule_states(), before);
    assert_eq!(rmm.realms(), 0);
}

/// The instruction budget (RmmConfig::budget) is per REC_ENTER: it used to restart after every
/// event the RMM handled in place, so a realm trapping (here: HVC → UNDEF) after every few
/// instructions ran up to 4096 budgets in one REC_ENTER before the host's timer exit.
#[test]
fn regression_instruction_budget_is_per_rec_enter() {
    let rmm = Rmm::new(RmmConfig {
        budget: 1000,
        ..RmmConfig::default()
    });
    let mut code = Vec::new();
    mov64(&mut code, 0, RAM + 0x800);
    code.push(0xD518_C000); // msr vbar_el1, x0
    mov64(&mut code, 0, 0);
    mov64(&mut code, 9, DEV | UNPROTECTED_40);
    let top = code.len() as u32;
    code.push(0x9100_0400); // loop: add x0, x0, #1
    code.push(0xF11F_401F); // cmp x0, #2000
    code.push(0x5400_0062); // b.hs +3 (report)
    code.push(0xD400_0002); // hvc #0 (UNDEF injected, skipped by the vector)
    let here = code.len() as u32;
    code.push(0x1400_0000 | ((top.wrapping_sub(here)) & 0x03FF_FFFF)); // b loop
    code.push(0xF900_0120); // report: str x0, [x9]
    code.push(0x1400_0000); // b .
    code.resize(0xA00 / 4, 0);
    code.extend_from_slice(&[0xD538_403C, 0x9100_139C, 0xD518_403C, 0xD69F_03E0]);
    let (_, rec, run) = raw_realm(&rmm, &code);
    let exit = enter(&rmm, rec, run, enter_flags::TRAP_WFI);
    // 2000 iterations take ~18000 instructions: far more than one budget of 1000.
    assert_eq!(exit.exit_reason, exit_reason::IRQ);
}
