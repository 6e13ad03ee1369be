//! The CoVE host flow over the TSM model, driven with hand-assembled RV64 guests.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use backend_riscv_cove::abi::{self, atst, covg, fwft, hsm, htinst, SbiError};
use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::{replay, CoveBackend};
use common::*;
use cvm_core::vm_memory::{Bytes, GuestAddress};
use cvm_core::{
    EntropyPolicy, Error, LaunchState, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmExit,
};

#[test]
fn encodings_match_gnu_as() {
    // riscv64-linux-gnu-as -march=rv64imc_zicsr_zkr with .option norvc; objdump -d.
    let mut a = Asm::new();
    a.addi(A0, A1, -5)
        .lui(S0, 0x10000)
        .addiw(A0, A0, 2047)
        .slli(A0, A0, 12)
        .ld(A1, S0, 8)
        .lw(A1, S0, -4)
        .lh(T0, S0, 2)
        .lb(T1, S0, 1)
        .lbu(T2, S0, 0)
        .lhu(A2, S0, 6)
        .lwu(A3, S0, 4)
        .sd(A1, S0, 8)
        .sw(A1, S0, 16)
        .sh(A1, S0, 2)
        .sb(A1, S0, 1)
        .ecall()
        .wfi()
        .csrrw(A0, 0x015, ZERO)
        .csrrs(A0, 0x015, ZERO)
        .csrrw(A0, 0x105, A1)
        .csrrs(A0, 0x142, ZERO)
        .j(8);
    let want = [
        0xffb58513u32,
        0x10000437,
        0x7ff5051b,
        0x00c51513,
        0x00843583,
        0xffc42583,
        0x00241283,
        0x00140303,
        0x00044383,
        0x00645603,
        0x00446683,
        0x00b43423,
        0x00b42823,
        0x00b41123,
        0x00b400a3,
        0x00000073,
        0x10500073,
        0x01501573,
        0x01502573,
        0x10559573,
        0x14202573,
        0x0080006f,
    ];
    assert_eq!(a.words, want);
}

fn simple_backend() -> (Arc<backend_riscv_cove::TsmModel>, CoveBackend) {
    let m = model();
    let b = backend_with(&m, HostIsa::default());
    (m, b)
}

#[test]
fn launch_measurement_equals_replay_and_tsm() {
    let (m, b) = simple_backend();
    let mut code = Asm::new();
    code.prologue().off();
    let mut image = code.bytes();
    image.resize(5000, 0xAB); // two pages, the second partial
    let (vm, mut v0) = launch(&b, &config(), &image);
    let log = vm.measurement_log();
    let predicted = replay(&log).unwrap();
    // The host returns only what it can know: the static PCRs and the TCI over them.
    let host = vm.measurement().unwrap();
    assert_eq!(host, predicted.to_host_measurement());
    let names: Vec<&str> = host.registers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["PCR0", "PCR1", "PCR2", "PCR3", "TCI"]);
    let tsm = m.tvm_measurement(vm.ops().guest_id()).unwrap();
    assert_eq!(tsm, predicted.to_measurement());
    for r in &host.registers {
        assert_eq!(
            tsm.register(&r.name),
            Some(r.value.as_slice()),
            "{}",
            r.name
        );
    }
    assert_eq!(m.tvm_log(vm.ops().guest_id()).unwrap(), log);
    // Stats: calls by name and counters.
    let s = vm.stats();
    assert_eq!(s.calls_of("COVH_TVM_ADD_MEASURED_PAGES"), 2);
    assert_eq!(s.calls_of("COVH_CREATE_TVM"), 1);
    assert_eq!(s.calls_of("COVH_FINALIZE_TVM"), 1);
    assert!(s.counter("pages_converted") > 4 + 64 + 2);
    assert!(s.counter("fences") >= 2);
    let reports = run_collect(v0.as_mut(), |_, _| 0);
    assert_eq!(reports, vec![0]);
    assert_eq!(vm.state(), LaunchState::Off);
    vm.destroy().unwrap();
    assert_eq!(m.confidential_pages(), 0);
    assert_eq!(m.tvm_count(), 0);
}

#[test]
fn mmio_every_width_with_sign_extension_through_nacl() {
    let m = model();
    let spy = Arc::new(Spy::new(Arc::clone(&m), None));
    let b = CoveBackend::new(spy.clone(), HostIsa::default());
    let mut a = Asm::new();
    a.prologue();
    // Loads of every width from the device (0x1000_0000 + 0x100..), each reported.
    a.lb(A1, S0, 0x100).report(A1);
    a.lbu(A1, S0, 0x101).report(A1);
    a.lh(A1, S0, 0x102).report(A1);
    a.lhu(A1, S0, 0x104).report(A1);
    a.lw(A1, S0, 0x108).report(A1);
    a.lwu(A1, S0, 0x10c).report(A1);
    a.ld(A2, S0, 0x110).report(A2);
    // Stores of every width of an all-ones-ish register.
    a.li(T0, 0xF1F2_F3F4_F5F6_F7F8);
    a.sb(T0, S0, 0x200)
        .sh(T0, S0, 0x202)
        .sw(T0, S0, 0x204)
        .sd(T0, S0, 0x208);
    a.off();
    let (_vm, mut v0) = launch(&b, &config(), &a.bytes());
    let mut exits = Vec::new();
    let mut resume = Resume::Done;
    loop {
        let e = v0.run(resume).unwrap();
        resume = match &e {
            VmExit::Mmio { write: None, .. } => Resume::MmioRead(0x8182_8384_8586_8788),
            VmExit::SystemOff => break,
            VmExit::Mmio { .. } => Resume::Done,
            other => panic!("{other:?}"),
        };
        exits.push(e);
    }
    let d = |off: u64| DOORBELL + off;
    let reads: Vec<(u64, u8)> = exits
        .iter()
        .filter_map(|e| match e {
            VmExit::Mmio {
                gpa,
                size,
                write: None,
            } => Some((*gpa, *size)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reads,
        vec![
            (d(0x100), 1),
            (d(0x101), 1),
            (d(0x102), 2),
            (d(0x104), 2),
            (d(0x108), 4),
            (d(0x10c), 4),
            (d(0x110), 8)
        ]
    );
    let reports: Vec<u64> = exits
        .iter()
        .filter_map(|e| match e {
            VmExit::Mmio {
                gpa,
                write: Some(v),
                ..
            } if *gpa == DOORBELL => Some(*v),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports,
        vec![
            0,
            0xFFFF_FFFF_FFFF_FF88, // LB sign-extends
            0x88,                  // LBU
            0xFFFF_FFFF_FFFF_8788, // LH
            0x8788,                // LHU
            0xFFFF_FFFF_8586_8788, // LW
            0x8586_8788,           // LWU
            0x8182_8384_8586_8788, // LD
        ]
    );
    let stores: Vec<(u64, u8, u64)> = exits
        .iter()
        .filter_map(|e| match e {
            VmExit::Mmio {
                gpa,
                size,
                write: Some(v),
            } if *gpa != DOORBELL => Some((*gpa, *size, *v)),
            _ => None,
        })
        .collect();
    assert_eq!(
        stores,
        vec![
            (d(0x200), 1, 0xF8),
            (d(0x202), 2, 0xF7F8),
            (d(0x204), 4, 0xF5F6_F7F8),
            (d(0x208), 8, 0xF1F2_F3F4_F5F6_F7F8)
        ]
    );
    // The TSM's exits, as spec/cove.md §4.1-4.2: htinst names a0, htval = gpa >> 2,
    // stval = gpa & 3, store values truncated in scratch a0.
    let runs = spy.runs.lock().unwrap().clone();
    let mmio: Vec<_> = runs.iter().filter(|r| r.htinst != 0).collect();
    let want_htinst = [
        htinst::SD, // prologue report
        htinst::LB,
        htinst::SD,
        htinst::LBU,
        htinst::SD,
        htinst::LH,
        htinst::SD,
        htinst::LHU,
        htinst::SD,
        htinst::LW,
        htinst::SD,
        htinst::LWU,
        htinst::SD,
        htinst::LD,
        htinst::SD,
        htinst::SB,
        htinst::SH,
        htinst::SW,
        htinst::SD,
    ];
    assert_eq!(
        mmio.iter().map(|r| r.htinst).collect::<Vec<_>>(),
        want_htinst
    );
    let lb = mmio[1];
    assert_eq!((lb.scause, lb.htval, lb.stval), (21, d(0x100) >> 2, 0));
    let lbu = mmio[3];
    assert_eq!((lbu.htval << 2) | (lbu.stval & 3), d(0x101));
    assert_eq!(lbu.stval, 1);
    let sb = mmio[15];
    assert_eq!((sb.scause, sb.a0), (23, 0xF8));
    let sh = mmio[16];
    assert_eq!(sh.a0, 0xF7F8);
}

#[test]
fn mmio_inject_abort_reaches_the_guest_handler() {
    let (_m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    // stvec = handler; the handler reports scause and stval then powers off.
    let handler_at = 0x400u64;
    a.li(T0, RAM + handler_at).csrrw(ZERO, 0x105, T0);
    a.lw(A1, S0, 0x40);
    a.li(A1, 0x5555).report(A1).off();
    while (a.here() as u64) < handler_at {
        a.emit(0x13);
    }
    a.csrrs(A1, 0x142, ZERO)
        .report(A1)
        .csrrs(A1, 0x143, ZERO)
        .report(A1)
        .off();
    let (_vm, mut v0) = launch(&b, &config(), &a.bytes());
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio { write: Some(0), .. }
    ));
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            write: None,
            size: 4,
            ..
        }
    ));
    // A mismatching resume is refused and the guest is not entered.
    assert!(matches!(
        v0.run(Resume::HostCall([0, 0])),
        Err(Error::ResumeMismatch { .. })
    ));
    let r = run_collect_from(v0.as_mut(), Resume::InjectAbort);
    assert_eq!(r, vec![5, DOORBELL + 0x40]);
}

fn run_collect_from(v: &mut dyn Vcpu, first: Resume) -> Vec<u64> {
    let mut out = Vec::new();
    let mut resume = first;
    loop {
        match v.run(resume).unwrap() {
            VmExit::Mmio { write: Some(x), .. } => out.push(x),
            VmExit::SystemOff => return out,
            other => panic!("{other:?}"),
        }
        resume = Resume::Done;
    }
}

#[test]
fn share_and_unshare_accepted_and_rejected() {
    let (m, b) = simple_backend();
    let shared_gpa = 0x9000_0000u64;
    let page = RAM + 0x8_0000; // a private page the guest shares
    let mut a = Asm::new();
    a.prologue();
    // Touch the private page first (zero page), then share it.
    a.li(T0, page).li(T1, 0x77).sd(T1, T0, 0);
    a.sbi(abi::EID_COVG, covg::SHARE_MEMORY, &[page, 0x1000])
        .report(A0); // accepted
    a.li(T0, page)
        .li(T1, 0x1234)
        .sd(T1, T0, 0)
        .ld(A1, T0, 0)
        .report(A1);
    a.sbi(abi::EID_COVG, covg::UNSHARE_MEMORY, &[page, 0x1000])
        .report(A0); // rejected
    a.sbi(abi::EID_COVG, covg::UNSHARE_MEMORY, &[page, 0x1000])
        .report(A0); // accepted
    a.li(T0, page).ld(A1, T0, 0).report(A1); // private again: a fresh zero page
                                             // The VMM's shared region: share, write, read back what the VMM wrote.
    a.sbi(abi::EID_COVG, covg::SHARE_MEMORY, &[shared_gpa, 0x1000])
        .report(A0);
    a.li(T0, shared_gpa)
        .li(T1, 0xC0FFEE)
        .sd(T1, T0, 8)
        .ld(A1, T0, 0)
        .report(A1);
    a.off();
    let vm = b.create_cove_vm(&config()).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.add_memory(MemoryRegion::shared(shared_gpa, 0x1000))
        .unwrap();
    vm.load(RAM, &a.bytes(), Measure::Yes).unwrap();
    vm.shared_memory()
        .write_obj(0xABCDu64, GuestAddress(shared_gpa))
        .unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, 0])).unwrap();
    vm.finalize().unwrap();
    let mut out = Vec::new();
    let mut resume = Resume::Done;
    let mut conversions = Vec::new();
    let answers = [true, false, true, true];
    loop {
        match v0.run(resume).unwrap() {
            VmExit::Mmio { write: Some(x), .. } => {
                out.push(x);
                resume = Resume::Done;
            }
            VmExit::ConvertMemory {
                gpa,
                size,
                to_private,
            } => {
                let accept = answers[conversions.len()];
                conversions.push((gpa, size, to_private));
                resume = Resume::Conversion(accept);
            }
            VmExit::SystemOff => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        conversions,
        vec![
            (page, 0x1000, false),
            (page, 0x1000, true),
            (page, 0x1000, true),
            (shared_gpa, 0x1000, false)
        ]
    );
    let denied = SbiError::Denied.code() as u64;
    assert_eq!(out, vec![0, 0, 0x1234, denied, 0, 0, 0, 0xABCD]);
    let v: u64 = vm
        .shared_memory()
        .read_obj(GuestAddress(shared_gpa + 8))
        .unwrap();
    assert_eq!(v, 0xC0FFEE);
    assert!(vm.stats().calls_of("COVH_TVM_REMOVE_PAGES") >= 2);
    drop(v0);
    vm.destroy().unwrap();
    assert_eq!(m.confidential_pages(), 0);
    assert_eq!(m.shared_pages(), 0);
}

#[test]
fn hsm_starts_vcpu1() {
    let (_m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    let secondary = 0x800u64;
    a.sbi(abi::EID_HSM, hsm::HART_START, &[1, RAM + secondary, 0x5EC0])
        .report(A0);
    a.sbi(abi::EID_HSM, hsm::HART_GET_STATUS, &[1]).report(A1);
    a.wfi().off();
    while (a.here() as u64) < secondary {
        a.emit(0x13);
    }
    // vCPU 1: report its a0 (hart id) and a1 (opaque), then power off.
    a.li(S0, DOORBELL).report(A0).report(A1).off();
    let vm = b.create_cove_vm(&config()).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &a.bytes(), Measure::Yes).unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, 0])).unwrap();
    let mut v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    // Not started yet: halts.
    assert_eq!(v1.run(Resume::Done).unwrap(), VmExit::Halt);
    let mut out = Vec::new();
    let mut resume = Resume::Done;
    loop {
        match v0.run(resume).unwrap() {
            VmExit::Mmio { write: Some(x), .. } => out.push(x),
            VmExit::Halt => break,
            other => panic!("{other:?}"),
        }
        resume = Resume::Done;
    }
    assert_eq!(out, vec![0, 0, hsm::STATUS_STARTED]);
    let r1 = run_collect_from(v1.as_mut(), Resume::Done);
    assert_eq!(r1, vec![1, 0x5EC0]);
}

fn seed_program() -> Vec<u8> {
    let mut a = Asm::new();
    a.prologue();
    let handler = 0x400u64;
    a.li(T0, RAM + handler).csrrw(ZERO, 0x105, T0);
    a.csrrw(A1, 0x015, ZERO).report(A1);
    a.csrrw(A1, 0x015, ZERO).report(A1);
    a.csrrs(A1, 0x015, ZERO).report(A1); // read-only form: illegal
    a.off();
    while (a.here() as u64) < handler {
        a.emit(0x13);
    }
    // Handler: report scause, skip the instruction (sepc += 4), sret.
    a.csrrs(A2, 0x142, ZERO).report(A2);
    a.csrrs(T1, 0x141, ZERO)
        .addi(T1, T1, 4)
        .csrrw(ZERO, 0x141, T1)
        .emit(0x1020_0073);
    a.bytes()
}

#[test]
fn seed_without_zkr_is_illegal() {
    let m = model();
    let b = backend_with(&m, HostIsa::without(&["zkr"]));
    let (vm, mut v0) = launch(&b, &config(), &seed_program());
    assert_eq!(
        vm.features()
            .iter()
            .find(|f| f.name == "zkr")
            .unwrap()
            .value,
        0
    );
    let r = run_collect(v0.as_mut(), |_, _| 0);
    // Each access traps with illegal instruction (2); the handler skips it and a1 keeps 0.
    assert_eq!(r, vec![0, 2, 0, 2, 0, 2, 0]);
}

#[test]
fn seed_with_zkr_firmware_policy_answers_es16() {
    let (_m, b) = simple_backend();
    let (_vm, mut v0) = launch(&b, &config(), &seed_program());
    let r = run_collect(v0.as_mut(), |_, _| 0);
    assert_eq!(r.len(), 5);
    for v in &r[1..3] {
        assert_eq!(v >> 30, 0b10, "OPST = ES16: {v:#x}");
        assert_eq!(v & 0x3fff_0000, 0);
    }
    assert_ne!(r[1], r[2]);
    // The csrrs x0 form is illegal (2) and leaves a1 unchanged.
    assert_eq!((r[3], r[4]), (2, r[2]));
    // Deterministic: a second identical launch reads the same values.
    let (_m2, b2) = simple_backend();
    let (_vm2, mut v2) = launch(&b2, &config(), &seed_program());
    assert_eq!(run_collect(v2.as_mut(), |_, _| 0), r);
}

#[test]
fn seed_forwarded_to_vmm() {
    let (_m, b) = simple_backend();
    let mut cfg = config();
    cfg.entropy = EntropyPolicy::ForwardToVmm;
    let (_vm, mut v0) = launch(&b, &cfg, &seed_program());
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(0)
        }
    );
    let e = v0.run(Resume::Done).unwrap();
    assert_eq!(
        e,
        VmExit::SysReg {
            reg: 0x015,
            write: Some(0),
            write_mask: u64::MAX
        }
    );
    assert_eq!(
        v0.run(Resume::SysReg(0x8000_1234)).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(0x8000_1234)
        }
    );
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::SysReg { .. }
    ));
    // InjectAbort: the guest takes illegal instruction.
    let r = run_collect_from(v0.as_mut(), Resume::InjectAbort);
    assert_eq!(r, vec![2, 0x8000_1234, 2, 0x8000_1234]);
}

fn pmlen_program() -> Vec<u8> {
    let mut a = Asm::new();
    a.prologue();
    a.sbi(
        abi::EID_FWFT,
        fwft::SET,
        &[fwft::POINTER_MASKING_PMLEN, 16, 0],
    )
    .report(A0);
    // Store through a tagged pointer (top 16 bits set), read back untagged.
    a.li(T0, 0xABCD_0000_8010_0000).li(T1, 0x4242).sd(T1, T0, 0);
    a.li(T0, 0x8010_0000).ld(A1, T0, 0).report(A1).off();
    a.bytes()
}

#[test]
fn smnpm_enabled_masks_pointers() {
    let (_m, b) = simple_backend();
    let (_vm, mut v0) = launch(&b, &config(), &pmlen_program());
    assert_eq!(run_collect(v0.as_mut(), |_, _| 0), vec![0, 0, 0x4242]);
}

#[test]
fn smnpm_hidden_fwft_fails_and_tagged_access_faults() {
    let (_m, b) = simple_backend();
    let mut cfg = config();
    cfg.cove.disable_extensions = vec!["smnpm".into()];
    let (vm, mut v0) = launch(&b, &cfg, &pmlen_program());
    assert_eq!(
        vm.features()
            .iter()
            .find(|f| f.name == "smnpm")
            .unwrap()
            .value,
        0
    );
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(0)
        }
    );
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(SbiError::NotSupported.code() as u64)
        }
    );
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Fault { syndrome: 23, .. }
    ));
    // Features are fixed after the first run.
    assert!(matches!(
        vm.set_feature("smnpm", 1),
        Err(Error::Busy { .. })
    ));
    assert!(vm.set_feature("smnpm", 0).is_ok());
}

#[test]
fn feature_rules_at_creation() {
    let (_m, b) = simple_backend();
    let mut cfg = config();
    cfg.cove.disable_extensions = vec!["zkr".into()];
    assert!(matches!(
        b.create_cove_vm(&cfg),
        Err(Error::FeatureRejected { .. })
    ));
    cfg.cove.disable_extensions = vec!["ssnpm".into()];
    assert!(matches!(
        b.create_cove_vm(&cfg),
        Err(Error::FeatureRejected { .. })
    ));
    cfg.cove.disable_extensions = vec!["nope".into()];
    assert!(matches!(
        b.create_cove_vm(&cfg),
        Err(Error::UnknownFeature(_))
    ));
    let vm = b.create_cove_vm(&config()).unwrap();
    let defs = vm.feature_defs();
    let smnpm = defs.iter().find(|d| d.name == "smnpm").unwrap();
    assert_eq!(smnpm.backed_by.as_deref(), Some("ssnpm"));
    assert!(smnpm.can_disable);
    vm.set_feature("smnpm", 0).unwrap();
    vm.set_feature("smnpm", 1).unwrap();
    assert!(vm.set_feature("zkr", 0).is_err());
    // Fails closed.
    let plain = cvm_core::VmConfig::new(cvm_core::Confidentiality::None);
    assert!(b.create_cove_vm(&plain).is_err());
}

#[test]
fn guest_reads_and_extends_its_measurement_through_atst() {
    let (m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    let buf = DATA;
    for pcr in [2u64, 3] {
        a.sbi(abi::EID_ATST, atst::READ_MEASUREMENT, &[buf, 48, pcr])
            .report(A0)
            .report(A1);
        a.li(T0, buf);
        for i in 0..6 {
            a.ld(A1, T0, 8 * i).report(A1);
        }
    }
    // Extend PCR17 with 48 bytes of 0x11, then read it back.
    a.li(T0, buf).li(T1, 0x1111_1111_1111_1111);
    for i in 0..6 {
        a.sd(T1, T0, 8 * i);
    }
    a.sbi(abi::EID_ATST, atst::EXTEND_MEASUREMENT, &[buf, 48, 17])
        .report(A0);
    a.sbi(abi::EID_ATST, atst::EXTEND_MEASUREMENT, &[buf, 47, 17])
        .report(A0);
    a.sbi(abi::EID_ATST, atst::EXTEND_MEASUREMENT, &[buf, 48, 2])
        .report(A0);
    a.sbi(
        abi::EID_ATST,
        atst::READ_MEASUREMENT,
        &[buf + 0x100, 48, 17],
    )
    .report(A0);
    a.li(T0, buf + 0x100);
    for i in 0..6 {
        a.ld(A1, T0, 8 * i).report(A1);
    }
    a.sbi(abi::EID_ATST, atst::READ_MEASUREMENT, &[buf, 8, 2])
        .report(A0);
    a.off();
    let (vm, mut v0) = launch(&b, &config(), &a.bytes());
    let r = run_collect(v0.as_mut(), |_, _| 0);
    let host = vm.measurement().unwrap();
    let words = |v: &[u8]| -> Vec<u64> {
        v.chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert_eq!(&r[..3], &[0, 0, 48]);
    assert_eq!(&r[3..9], words(host.register("PCR2").unwrap()).as_slice());
    assert_eq!(&r[9..11], &[0, 48]);
    assert_eq!(&r[11..17], words(host.register("PCR3").unwrap()).as_slice());
    let inv = SbiError::InvalidParam.code() as u64;
    assert_eq!(&r[17..21], &[0, inv, inv, 0]);
    // PCR17 as the TSM holds it equals the replay of its log (which includes the extend).
    let tsm_log = m.tvm_log(vm.ops().guest_id()).unwrap();
    let predicted = replay(&tsm_log).unwrap();
    assert_eq!(
        &r[21..27],
        words(predicted.register(17).unwrap()).as_slice()
    );
    assert_eq!(r[27], SbiError::NoShmem.code() as u64);
    assert_eq!(
        m.tvm_measurement(vm.ops().guest_id()).unwrap(),
        predicted.to_measurement()
    );
}

#[test]
fn wfi_hostcall_unknown_ecall_and_fault() {
    let (_m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    a.wfi();
    a.sbi(abi::EID_CVM_HOSTCALL, 42, &[1, 2, 3])
        .report(A0)
        .report(A1);
    a.sbi(0x4442_434E, 0, &[]).report(A0); // DBCN: forwarded, host says NOT_SUPPORTED
    a.li(T0, 0x4000_0000).ld(A1, T0, 0); // outside every region: fatal
    let (vm, mut v0) = launch(&b, &config(), &a.bytes());
    assert!(matches!(v0.run(Resume::Done).unwrap(), VmExit::Mmio { .. }));
    assert_eq!(v0.run(Resume::Done).unwrap(), VmExit::Halt);
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::HostCall {
            nr: 42,
            args: [1, 2, 3, 0, 0, 0]
        }
    );
    assert_eq!(
        v0.run(Resume::HostCall([7, 8])).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(7)
        }
    );
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(8)
        }
    );
    assert_eq!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio {
            gpa: DOORBELL,
            size: 8,
            write: Some(SbiError::NotSupported.code() as u64)
        }
    );
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Fault { syndrome: 21, .. }
    ));
    assert!(v0.run(Resume::Done).is_err());
    assert_eq!(vm.state(), LaunchState::Finalized);
}

#[test]
fn lifecycle_errors_are_typed() {
    let (_m, b) = simple_backend();
    let vm = b.create_cove_vm(&config()).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    assert!(vm.finalize().is_err()); // no vCPU 0
    assert!(vm.load(RAM, &[1], Measure::No).is_err());
    let _v = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.load(RAM, &[1, 2, 3], Measure::Yes).unwrap();
    assert!(vm.load(RAM, &[1], Measure::Yes).is_err()); // page already mapped
    vm.finalize().unwrap();
    assert!(vm.load(RAM + 0x1000, &[1], Measure::Yes).is_err());
    assert!(vm.finalize().is_err());
    assert!(vm
        .convert(RAM, 0x1000, cvm_core::MemoryKind::Shared)
        .is_err());
}

#[test]
fn covi_injects_only_allowed_external_interrupts() {
    use backend_riscv_cove::abi::{covi, TvmAiaParams, EID_COVI};
    use backend_riscv_cove::Covh;
    use zerocopy::IntoBytes;
    let (m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    let handler = 0x400u64;
    a.li(T0, RAM + handler).csrrw(ZERO, 0x105, T0);
    a.sbi(abi::EID_COVG, covg::ALLOW_EXT_INTERRUPT, &[5])
        .report(A0);
    a.li(T0, 1 << 9).csrrs(ZERO, 0x104, T0); // sie.SEIE
    a.li(T0, 1 << 1).csrrs(ZERO, 0x100, T0); // sstatus.SIE
    a.wfi().off();
    while (a.here() as u64) < handler {
        a.emit(0x13);
    }
    a.csrrs(A1, 0x142, ZERO).report(A1).off();
    let vm = b.create_cove_vm(&config()).unwrap();
    let g = vm.ops().guest_id();
    vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &a.bytes(), Measure::Yes).unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, 0])).unwrap();
    // AIA parameters in a host page the host allocator does not use (top of host RAM).
    let (base, size) = m.host_ram();
    let params_pa = base + size - 0x1000;
    let p = TvmAiaParams {
        imsic_base_addr: 0x2800_0000,
        group_index_shift: 24,
        ..TvmAiaParams::default()
    };
    m.host_write(params_pa, p.as_bytes()).unwrap();
    let call = |fid, args: [u64; 6]| m.ecall(0, EID_COVI, fid, args).into_result();
    let mut bad = p;
    bad.group_index_shift = 12;
    m.host_write(params_pa, bad.as_bytes()).unwrap();
    assert_eq!(
        call(covi::TVM_AIA_INIT, [g, params_pa, 32, 0, 0, 0]),
        Err(SbiError::InvalidParam)
    );
    m.host_write(params_pa, p.as_bytes()).unwrap();
    call(covi::TVM_AIA_INIT, [g, params_pa, 32, 0, 0, 0]).unwrap();
    call(covi::TVM_CPU_SET_IMSIC_ADDR, [g, 0, 0x2800_0000, 0, 0, 0]).unwrap();
    vm.finalize().unwrap();
    let inject = |id| call(covi::TVM_CPU_INJECT_EXT_INTERRUPT, [g, 0, id, 0, 0, 0]);
    assert_eq!(inject(5), Err(SbiError::InvalidState)); // not bound yet
    call(covi::TVM_CPU_BIND_IMSIC, [g, 0, 1, 0, 0, 0]).unwrap();
    assert_eq!(inject(5), Err(SbiError::Denied)); // all denied at start
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio { write: Some(0), .. }
    ));
    assert!(matches!(
        v0.run(Resume::Done).unwrap(),
        VmExit::Mmio { write: Some(0), .. }
    ));
    assert_eq!(v0.run(Resume::Done).unwrap(), VmExit::Halt);
    assert_eq!(inject(6), Err(SbiError::Denied));
    inject(5).unwrap();
    let r = run_collect_from(v0.as_mut(), Resume::Done);
    assert_eq!(r, vec![(1u64 << 63) | 9]);
    assert_eq!(m.ext_interrupts_delivered(g, 0), Some(1));
}

/// `bne rs1, rs2, off` (B-type, RV64I).
fn bne(rs1: u8, rs2: u8, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 12) & 1) << 31)
        | (((o >> 5) & 0x3f) << 25)
        | (u32::from(rs2) << 20)
        | (u32::from(rs1) << 15)
        | (1 << 12)
        | (((o >> 1) & 0xf) << 8)
        | (((o >> 11) & 1) << 7)
        | 0x63
}

#[test]
fn a_guest_extending_in_a_loop_keeps_exact_registers_and_a_bounded_log() {
    use backend_riscv_cove::model::atst::MAX_LOGGED_RUNTIME_EXTENDS;
    use sha2::Digest;
    const N: u64 = MAX_LOGGED_RUNTIME_EXTENDS + 76;
    let (m, b) = simple_backend();
    let mut a = Asm::new();
    a.prologue();
    a.li(T0, DATA).li(T1, 0x2222_2222_2222_2222);
    for i in 0..6 {
        a.sd(T1, T0, 8 * i);
    }
    a.li(S1, N);
    let top = a.here();
    a.sbi(abi::EID_ATST, atst::EXTEND_MEASUREMENT, &[DATA, 48, 17]);
    a.addi(S1, S1, -1);
    let back = top as i32 - a.here() as i32;
    a.emit(bne(S1, ZERO, back));
    a.report(A0);
    a.off();
    let (vm, mut v0) = launch(&b, &config(), &a.bytes());
    let r = run_collect(v0.as_mut(), |_, _| 0);
    assert_eq!(
        r,
        vec![0, 0],
        "MMIO registration, then the last extension, succeeded"
    );
    // The registers are exact: PCR17 = H(PCR17 || value), N times from 48 zero bytes.
    let mut pcr = vec![0u8; 48];
    for _ in 0..N {
        let mut h = sha2::Sha384::new();
        h.update(&pcr);
        h.update([0x22u8; 48]);
        pcr = h.finalize().to_vec();
    }
    let guest = vm.ops().guest_id();
    let tsm = m.tvm_measurement(guest).unwrap();
    assert_eq!(tsm.register("PCR17").unwrap(), pcr.as_slice());
    // …while the inspection log stopped growing at the cap.
    let log = m.tvm_log(guest).unwrap();
    let extends = log
        .events
        .iter()
        .filter(|e| matches!(e, cvm_core::MeasurementEvent::Extend { .. }))
        .count() as u64;
    assert_eq!(extends, MAX_LOGGED_RUNTIME_EXTENDS);
}
