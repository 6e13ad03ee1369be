//! The CCA host flow and RMM model driven by hand-assembled AArch64 (words verified with
//! `aarch64-linux-gnu-as` / `objdump -d`), plus RMI-level misuse and teardown checks.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use backend_arm_cca::abi::{self, enter_flags, RealmParams, RecEnter, RecParams, RmiStatus};
use backend_arm_cca::{CcaBackend, FailNth, Rmi, RmiClient, Rmm};
use cvm_core::{
    Backend, Confidentiality, Error, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig,
    VmExit,
};
use zerocopy::IntoBytes;

const RAM: u64 = 0x8000_0000;
const DEV: u64 = 0x0a00_0000;

fn code(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn realm(backend: &CcaBackend, words: &[u32], vcpus: u32) -> (Box<dyn Vm>, Vec<Box<dyn Vcpu>>) {
    let config = VmConfig {
        vcpus,
        ..VmConfig::new(Confidentiality::ArmCca)
    };
    let vm = backend.create_vm(&config).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, 4 << 20)).unwrap();
    vm.load(RAM, &code(words), Measure::Yes).unwrap();
    let mut v = vec![vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap()];
    for _ in 1..vcpus {
        v.push(vm.create_vcpu(VcpuInit::secondary()).unwrap());
    }
    vm.finalize().unwrap();
    (vm, v)
}

/// Runs until an exit other than MMIO; reads come from `reads`, writes are collected.
fn drive(
    vcpu: &mut dyn Vcpu,
    reads: &BTreeMap<u64, u64>,
    writes: &mut Vec<(u64, u8, u64)>,
    mut resume: Resume,
) -> VmExit {
    for _ in 0..1000 {
        let exit = vcpu.run(resume).unwrap();
        resume = match &exit {
            VmExit::Mmio {
                gpa,
                size,
                write: None,
            } => Resume::MmioRead(reads.get(&(gpa - DEV)).copied().unwrap_or(0) & mask(*size)),
            VmExit::Mmio {
                gpa,
                size,
                write: Some(v),
            } => {
                writes.push((gpa - DEV, *size, *v));
                Resume::Done
            }
            _ => return exit,
        };
    }
    panic!("no terminal exit");
}

fn mask(size: u8) -> u64 {
    cvm_core::mask_to_size(u64::MAX, size)
}

// ldrsb w3 / ldrsh x4 / ldr w5 / ldrsh w6 / ldrb w7 from the device, then store them back,
// plus str wzr, strh, strb, then PSCI SYSTEM_OFF.
const MMIO_PROGRAM: &[u32] = &[
    0xd2a14009, // mov  x9, #0xa000000
    0xf2c01009, // movk x9, #0x80, lsl #32   (unprotected bit of s2sz 40)
    0x39c00123, // ldrsb w3, [x9]
    0x79801124, // ldrsh x4, [x9, #8]
    0xb9401125, // ldr   w5, [x9, #16]
    0x79c03126, // ldrsh w6, [x9, #24]
    0x39408127, // ldrb  w7, [x9, #32]
    0xf9008123, // str x3, [x9, #256]
    0xf9008524, // str x4, [x9, #264]
    0xf9008925, // str x5, [x9, #272]
    0xf9008d26, // str x6, [x9, #280]
    0xf9009127, // str x7, [x9, #288]
    0xb901293f, // str wzr, [x9, #296]
    0x79026124, // strh w4, [x9, #304]
    0x3904e124, // strb w4, [x9, #312]
    0xd2800100, // mov  x0, #0x8
    0xf2b08000, // movk x0, #0x8400, lsl #16  (PSCI_SYSTEM_OFF)
    0xd4000003, // smc #0
    0x14000000, // b .
];

#[test]
fn mmio_through_gprs0_with_w_register_sign_extension() {
    let backend = CcaBackend::model();
    let (vm, mut v) = realm(&backend, MMIO_PROGRAM, 1);
    let reads = BTreeMap::from([
        (0, 0x80),
        (8, 0x8001),
        (16, 0xDEAD_BEEF_CAFE_F00D),
        (24, 0x8001),
        (32, 0xFF),
    ]);
    let mut writes = Vec::new();
    let end = drive(v[0].as_mut(), &reads, &mut writes, Resume::Done);
    assert_eq!(end, VmExit::SystemOff);
    assert_eq!(
        writes,
        vec![
            (0x100, 8, 0xFFFF_FF80),           // ldrsb w3: 32-bit sign extension (SF = 0)
            (0x108, 8, 0xFFFF_FFFF_FFFF_8001), // ldrsh x4
            (0x110, 8, 0xCAFE_F00D),           // ldr w5 masks to 32 bits
            (0x118, 8, 0xFFFF_8001),           // ldrsh w6
            (0x120, 8, 0xFF),                  // ldrb w7
            (0x128, 4, 0),                     // str wzr
            (0x130, 2, 0x8001),                // strh
            (0x138, 1, 0x01),                  // strb
        ]
    );
    assert_eq!(vm.stats().exits_of(cvm_core::ExitKind::MmioRead), 5);
    vm.destroy().unwrap();
}

// vCPU 0: PSCI CPU_ON(1, secondary, 0x55), report X0; AFFINITY_INFO(1, 0), report X0; WFI.
// secondary: report X0 (the context id), SYSTEM_OFF.
const CPU_ON_PROGRAM: &[u32] = &[
    0xd2a14009, // mov  x9, #0xa000000
    0xf2c01009, // movk x9, #0x80, lsl #32
    0xd2800060, // mov  x0, #0x3
    0xf2b88000, // movk x0, #0xc400, lsl #16  (PSCI_CPU_ON_64)
    0xd2800021, // mov  x1, #0x1
    0x10000182, // adr  x2, secondary
    0xd2800aa3, // mov  x3, #0x55
    0xd4000003, // smc #0
    0xf9000120, // str  x0, [x9]
    0xd2800080, // mov  x0, #0x4
    0xf2b88000, // movk x0, #0xc400, lsl #16  (PSCI_AFFINITY_INFO_64)
    0xd2800021, // mov  x1, #0x1
    0xd2800002, // mov  x2, #0x0
    0xd4000003, // smc #0
    0xf9000520, // str  x0, [x9, #8]
    0xd503207f, // wfi
    0x14000000, // b .
    // secondary:
    0xd2a14009, // mov  x9, #0xa000000
    0xf2c01009, // movk x9, #0x80, lsl #32
    0xf9000920, // str  x0, [x9, #16]
    0xd2800100, // mov  x0, #0x8
    0xf2b08000, // movk x0, #0x8400, lsl #16
    0xd4000003, // smc #0
    0x14000000, // b .
];

#[test]
fn psci_cpu_on_starts_the_second_vcpu() {
    let backend = CcaBackend::model();
    let (vm, mut v) = realm(&backend, CPU_ON_PROGRAM, 2);
    let none = BTreeMap::new();
    let mut writes = Vec::new();
    // The secondary is powered off until CPU_ON.
    assert_eq!(v[1].run(Resume::Done).unwrap(), VmExit::Halt);
    let end = drive(v[0].as_mut(), &none, &mut writes, Resume::Done);
    assert_eq!(end, VmExit::Halt);
    assert_eq!(writes, vec![(0, 8, 0), (8, 8, 0)]); // CPU_ON SUCCESS, AFFINITY_INFO ON
    let end = drive(v[1].as_mut(), &none, &mut writes, Resume::Done);
    assert_eq!(end, VmExit::SystemOff);
    assert_eq!(writes[2], (0x10, 8, 0x55));
    assert_eq!(vm.stats().calls_of("RMI_PSCI_COMPLETE"), 2);
}

// MRS of ID_AA64PFR0_EL1, ID_AA64ISAR0_EL1, MPIDR_EL1, each stored to the device.
const SYSREG_PROGRAM: &[u32] = &[
    0xd2a14009, // mov  x9, #0xa000000
    0xf2c01009, // movk x9, #0x80, lsl #32
    0xd5380400, // mrs  x0, id_aa64pfr0_el1
    0xf9000120, // str  x0, [x9]
    0xd5380601, // mrs  x1, id_aa64isar0_el1
    0xf9000521, // str  x1, [x9, #8]
    0xd53800a2, // mrs  x2, mpidr_el1
    0xf9000922, // str  x2, [x9, #16]
    0xd2800100, // mov  x0, #0x8
    0xf2b08000, // movk x0, #0x8400, lsl #16
    0xd4000003, // smc #0
    0x14000000, // b .
];

#[test]
fn id_registers_come_from_the_feature_registers_and_freeze() {
    let backend = CcaBackend::model();
    let (vm, mut v) = realm(&backend, SYSREG_PROGRAM, 1);
    let pfr0 = vm
        .features()
        .into_iter()
        .find(|f| f.name == "ID_AA64PFR0_EL1")
        .unwrap()
        .value;
    assert_eq!(pfr0 & (0xF << 52), 0, "RME hidden");
    // Raising a field is refused; lowering before the first run is allowed.
    assert!(vm.set_feature("ID_AA64ISAR0_EL1", 2 << 60).is_err());
    vm.set_feature("ID_AA64ISAR0_EL1", 0).unwrap();
    let mut writes = Vec::new();
    let end = drive(v[0].as_mut(), &BTreeMap::new(), &mut writes, Resume::Done);
    assert_eq!(end, VmExit::SystemOff);
    assert_eq!(writes, vec![(0, 8, pfr0), (8, 8, 0), (16, 8, 1 << 31)]);
    assert!(matches!(
        vm.set_feature("ID_AA64ISAR0_EL1", 1 << 60),
        Err(Error::Busy { .. }) | Err(Error::InvalidState { .. })
    ));
}

// HVC (UNDEF injected) with no vector table: the realm faults forever inside the RMM; the host
// regains control with Interrupted instead of hanging.
#[test]
fn a_realm_stuck_in_a_fault_loop_does_not_hang_the_host() {
    let backend = CcaBackend::model();
    let (vm, mut v) = realm(&backend, &[0xd4000002 /* hvc #0 */], 1);
    assert_eq!(v[0].run(Resume::Done).unwrap(), VmExit::Interrupted);
    assert_eq!(v[0].run(Resume::Done).unwrap(), VmExit::Interrupted);
    vm.destroy().unwrap();
}

/// A launch with loads in non-ascending order (issued sorted at finalize), two vCPUs, a run and
/// a destroy. `stage` names the call that was running when it returns.
fn full_launch_staged(backend: &CcaBackend, stage: &mut &'static str) -> Result<(), Error> {
    let config = VmConfig {
        vcpus: 2,
        ..VmConfig::new(Confidentiality::ArmCca)
    };
    *stage = "create_vm";
    let vm = backend.create_vm(&config)?;
    *stage = "add_memory";
    vm.add_memory(MemoryRegion::private(RAM, 4 << 20))?;
    vm.add_memory(MemoryRegion::shared(0x4000_0000, 3 << 20))?;
    *stage = "load";
    vm.load(RAM + 0x3000, &[7; 5000], Measure::No)?;
    vm.load(RAM + 0x20_0000, &[9; 0x1800], Measure::Yes)?;
    vm.load(RAM, &code(MMIO_PROGRAM), Measure::Yes)?;
    *stage = "create_vcpu";
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[1, 2]))?;
    let _v1 = vm.create_vcpu(VcpuInit::secondary())?;
    *stage = "finalize";
    vm.finalize()?;
    *stage = "run";
    let mut writes = Vec::new();
    let mut resume = Resume::Done;
    for _ in 0..100 {
        let exit = v0.run(resume)?;
        resume = match exit {
            VmExit::Mmio { write: None, .. } => Resume::MmioRead(1),
            VmExit::Mmio {
                gpa,
                size,
                write: Some(v),
            } => {
                writes.push((gpa, size, v));
                Resume::Done
            }
            _ => break,
        };
    }
    *stage = "destroy";
    vm.destroy()
}

fn full_launch(backend: &CcaBackend) -> Result<(), Error> {
    full_launch_staged(backend, &mut "")
}

#[test]
fn teardown_leaves_nothing_delegated() {
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    full_launch(&backend).unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
    assert_eq!(rmm.host_granules(), 0);
    assert_eq!(rmm.host_windows(), 0);
    assert_eq!(rmm.realms(), 0);
    // Dropping without destroy tears down too.
    {
        let (_vm, _v) = realm(&backend, MMIO_PROGRAM, 1);
        assert!(rmm.delegated_granules() > 0);
    }
    assert_eq!(rmm.delegated_granules(), 0);
    assert_eq!(rmm.host_granules(), 0);
}

#[test]
fn a_launch_failing_at_each_rmi_call_leaves_nothing_delegated() {
    // Count the calls of a good launch first.
    let rmm = Rmm::shared();
    let counter = Arc::new(FailNth::new(Arc::clone(&rmm), 0));
    full_launch(&CcaBackend::with_rmi(counter.clone())).unwrap();
    let total = counter.calls();
    assert!(total > 50, "{total}");
    let mut failed_in: BTreeMap<&'static str, u64> = BTreeMap::new();
    for n in 1..=total {
        let rmm = Rmm::shared();
        let failing = Arc::new(FailNth::new(Arc::clone(&rmm), n));
        let mut stage = "";
        let r = full_launch_staged(&CcaBackend::with_rmi(failing), &mut stage);
        if r.is_err() {
            *failed_in.entry(stage).or_default() += 1;
        }
        assert_eq!(rmm.delegated_granules(), 0, "failure at call {n}: {r:?}");
        assert_eq!(rmm.host_granules(), 0, "failure at call {n}: {r:?}");
        assert_eq!(rmm.host_windows(), 0, "failure at call {n}");
        assert_eq!(rmm.realms(), 0, "failure at call {n}");
    }
    // The deferred path (measured DATA_CREATE sorted, REC_CREATE, unmeasured DATA_CREATE,
    // REALM_ACTIVATE) fails at finalize: 3 + 2 measured pages, 2 × (aux count + 1) REC calls,
    // 3 unmeasured pages and the activation at least.
    assert!(
        failed_in.get("finalize").copied().unwrap_or(0) > 10,
        "{failed_in:?}"
    );
    assert_eq!(
        failed_in.get("load"),
        None,
        "loads are only validated: {failed_in:?}"
    );
    assert_eq!(failed_in.get("create_vcpu"), None, "{failed_in:?}");
}

#[test]
fn a_failed_finalize_can_be_retried_and_the_log_still_replays() {
    // Fail each call of finalize in turn, then finalize again without failures: the launch
    // continues where it stopped and the log replays to the RMM's RIM.
    let build = |rmi: Arc<dyn Rmi>| {
        let backend = CcaBackend::with_rmi(rmi);
        let config = VmConfig {
            vcpus: 2,
            ..VmConfig::new(Confidentiality::ArmCca)
        };
        let vm = backend.create_vm(&config).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, 4 << 20)).unwrap();
        vm.load(RAM + 0x1000, &[3; 0x2000], Measure::No).unwrap();
        vm.load(RAM + 0x10_0000, &[2; 0x2000], Measure::Yes)
            .unwrap();
        vm.load(RAM, &[1; 0x1000], Measure::Yes).unwrap();
        let v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
        let v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
        (vm, v0, v1)
    };
    let rmm = Rmm::shared();
    let counter = Arc::new(FailNth::new(Arc::clone(&rmm), 0));
    let (vm, _v0, _v1) = build(counter.clone());
    let before = counter.calls();
    vm.finalize().unwrap();
    let calls = counter.calls() - before;
    let reference = vm.measurement().unwrap();
    drop((vm, _v0, _v1));
    for n in 1..=calls {
        let rmm = Rmm::shared();
        let failing = Arc::new(FailNth::new(Arc::clone(&rmm), 0));
        let (vm, _v0, _v1) = build(failing.clone());
        failing.fail_at(failing.calls() + n);
        assert!(vm.finalize().is_err(), "call {n} of finalize");
        assert_eq!(vm.state(), cvm_core::LaunchState::Building);
        failing.disarm();
        vm.finalize().unwrap();
        let log = vm.measurement_log();
        let rd = *rmm.realm_rds().last().unwrap();
        let model = rmm.realm_measurement(rd).unwrap().rim;
        assert_eq!(
            backend_arm_cca::replay(&log).unwrap().rim,
            model,
            "call {n}"
        );
        // What failed stayed at the head of the queue: the issue order, hence the RIM, is
        // that of a launch without failures.
        assert_eq!(
            reference.register("RIM"),
            Some(model.as_slice()),
            "call {n}"
        );
        vm.destroy().unwrap();
        assert_eq!(rmm.delegated_granules(), 0, "call {n}");
    }
}

#[test]
fn measured_loads_are_issued_sorted_before_the_recs_and_unmeasured_after() {
    use cvm_core::MeasurementEvent as E;
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let config = VmConfig {
        vcpus: 2,
        ..VmConfig::new(Confidentiality::ArmCca)
    };
    // The same launch in two call orders gives the same log and RIM.
    let mut rims = Vec::new();
    let mut logs = Vec::new();
    for reversed in [false, true] {
        let vm = backend.create_vm(&config).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, 4 << 20)).unwrap();
        let mut loads = vec![
            (RAM, vec![1u8; 0x1000], Measure::Yes),
            (RAM + 0x1000, vec![4u8; 100], Measure::No),
            (RAM + 0x20_0000, vec![2u8; 0x1800], Measure::Yes),
            (RAM + 0x30_0000, vec![3u8; 0x1000], Measure::Yes),
            (RAM + 0x10_0800, vec![5u8; 10], Measure::No),
        ];
        if reversed {
            loads.reverse();
        }
        for (gpa, bytes, m) in &loads {
            vm.load(*gpa, bytes, *m).unwrap();
        }
        let _v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[7])).unwrap();
        let _v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
        // Nothing is issued before finalize.
        assert_eq!(vm.stats().calls_of("RMI_DATA_CREATE"), 0);
        assert_eq!(vm.stats().calls_of("RMI_REC_CREATE"), 0);
        vm.finalize().unwrap();
        let log = vm.measurement_log();
        let order: Vec<(&str, u64)> = log
            .events
            .iter()
            .filter_map(|e| match e {
                E::Data {
                    ipa,
                    measured: true,
                    ..
                } => Some(("measured", *ipa)),
                E::Data {
                    ipa,
                    measured: false,
                    ..
                } => Some(("unmeasured", *ipa)),
                E::Rec { runnable, .. } => Some(("rec", u64::from(*runnable))),
                _ => None,
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("measured", RAM),
                ("measured", RAM + 0x20_0000),
                ("measured", RAM + 0x30_0000),
                ("rec", 1),
                ("rec", 0),
                ("unmeasured", RAM + 0x1000),
                ("unmeasured", RAM + 0x10_0000),
            ]
        );
        assert!(
            matches!(log.events.first(), Some(E::Ripas { .. })),
            "RIPAS before data"
        );
        let rd = *rmm.realm_rds().last().unwrap();
        let model = rmm.realm_measurement(rd).unwrap().rim;
        assert_eq!(backend_arm_cca::replay(&log).unwrap().rim, model);
        assert_eq!(vm.stats().calls_of("RMI_DATA_CREATE"), 6);
        rims.push(model);
        logs.push(log);
        vm.destroy().unwrap();
    }
    assert_eq!(rims[0], rims[1]);
    assert_eq!(logs[0], logs[1]);
    assert_eq!(rmm.delegated_granules(), 0);
}

#[test]
fn overlapping_loads_are_refused_at_the_call() {
    use backend_arm_cca::host::LoadOverlap;
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let vm = backend
        .create_vm(&VmConfig::new(Confidentiality::ArmCca))
        .unwrap();
    vm.add_memory(MemoryRegion::private(RAM, 4 << 20)).unwrap();
    vm.load(RAM + 0x2000, &[1; 0x2000], Measure::Yes).unwrap();
    let overlap = |r: Result<(), Error>| match r {
        Err(Error::Backend(b)) => b.downcast_ref::<LoadOverlap>().cloned(),
        other => panic!("expected LoadOverlap, got {other:?}"),
    };
    // Same page at the end, at the start, inside, around.
    for (gpa, len) in [
        (RAM + 0x3000, 0x1000),
        (RAM, 0x2001),
        (RAM + 0x2000, 8),
        (RAM + 0x1000, 0x4000),
    ] {
        let e = overlap(vm.load(gpa, &vec![2; len], Measure::Yes)).unwrap();
        assert_eq!((e.other_start, e.other_end), (RAM + 0x2000, RAM + 0x4000));
        assert_eq!(e.what, "a measured load");
    }
    // An unmeasured load sharing a page with a measured one is refused too.
    let e = overlap(vm.load(RAM + 0x3ff0, &[3; 4], Measure::No)).unwrap();
    assert_eq!(e.start, RAM + 0x3000);
    // Adjacent loads are fine, and the refused ones left nothing behind.
    vm.load(RAM + 0x1000, &[4; 0x1000], Measure::Yes).unwrap();
    vm.load(RAM + 0x4000, &[5; 1], Measure::No).unwrap();
    let _v = vm.create_vcpu(VcpuInit::boot(RAM + 0x1000, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(vm.stats().calls_of("RMI_DATA_CREATE"), 4);
    vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
}

/// Builds a realm by hand through the RMI: (rd, rec, run page).
fn manual_realm(rmm: &Rmm, activate: bool) -> (u64, u64, u64) {
    let c = RmiClient::new(rmm, None);
    let g = |n| rmm.alloc_ns_granules(n).unwrap();
    let rd = g(1);
    let roots = g(2);
    for pa in [rd, roots, roots + 0x1000] {
        c.granule_delegate(pa).unwrap();
    }
    let mut p = RealmParams::zeroed();
    p.s2sz = 40;
    p.num_bps = 1;
    p.num_wps = 1;
    p.rtt_base = roots;
    p.rtt_level_start = 1;
    p.rtt_num_start = 2;
    let params = g(1);
    rmm.write_ns(params, p.as_bytes()).unwrap();
    c.realm_create(rd, params).unwrap();
    // Level-2 and level-3 tables over RAM, then RIPAS RAM and one code page.
    for (level, ipa) in [(2, RAM & !((1 << 30) - 1)), (3, RAM)] {
        let t = g(1);
        c.granule_delegate(t).unwrap();
        c.rtt_create(rd, t, ipa, level).unwrap();
    }
    assert_eq!(
        c.rtt_init_ripas(rd, RAM, RAM + 0x2000).unwrap(),
        RAM + 0x2000
    );
    let data = g(1);
    c.granule_delegate(data).unwrap();
    rmm.write_ns(params, &code(&[0xd503207f, 0x14000000]))
        .unwrap(); // wfi; b .
    c.data_create(rd, data, RAM, params, abi::RMI_MEASURE_CONTENT)
        .unwrap();
    let rec = g(1);
    c.granule_delegate(rec).unwrap();
    let mut rp = RecParams::zeroed();
    rp.flags = abi::REC_FLAG_RUNNABLE;
    rp.pc = RAM;
    rp.num_aux = c.rec_aux_count(rd).unwrap();
    for a in rp.aux.iter_mut() {
        *a = g(1);
        c.granule_delegate(*a).unwrap();
    }
    rmm.write_ns(params, rp.as_bytes()).unwrap();
    c.rec_create(rd, rec, params).unwrap();
    if activate {
        c.realm_activate(rd).unwrap();
    }
    (rd, rec, g(1))
}

fn enter_with(rmm: &Rmm, rec: u64, run: u64, flags: u64) -> Result<(), backend_arm_cca::RmiError> {
    let mut e = RecEnter::zeroed();
    e.flags = flags;
    rmm.write_ns(run, e.as_bytes()).unwrap();
    RmiClient::new(rmm, None).rec_enter(rec, run)
}

#[test]
fn rec_enter_misuse_is_a_typed_rmi_error() {
    let rmm = Rmm::default();
    let (_, rec, run) = manual_realm(&rmm, false);
    // Realm still NEW: RMI_ERROR_REALM index 0.
    let e = enter_with(&rmm, rec, run, 0).unwrap_err();
    assert_eq!((e.status(), e.index), (Some(RmiStatus::ErrorRealm), 0));

    let rmm = Rmm::default();
    let (_, rec, run) = manual_realm(&rmm, true);
    // EMULATED_MMIO without a pending emulatable data abort: RMI_ERROR_REC.
    let e = enter_with(&rmm, rec, run, enter_flags::EMULATED_MMIO).unwrap_err();
    assert_eq!(e.status(), Some(RmiStatus::ErrorRec));
    assert_eq!(e.call, "RMI_REC_ENTER");
    let fw: cvm_core::FirmwareError = e.into();
    assert_eq!(fw.status_name, "RMI_ERROR_REC");
    // INJECT_SEA likewise.
    let e = enter_with(&rmm, rec, run, enter_flags::INJECT_SEA).unwrap_err();
    assert_eq!(e.status(), Some(RmiStatus::ErrorRec));
    // A plain entry runs (WFI trapped → SYNC exit with EC WFx).
    enter_with(&rmm, rec, run, enter_flags::TRAP_WFI).unwrap();
    let mut exit = [0u8; 0x800];
    rmm.read_ns(run + 0x800, &mut exit).unwrap();
    let exit = <abi::RecExit as zerocopy::FromBytes>::read_from_bytes(&exit).unwrap();
    assert_eq!(exit.exit_reason, abi::exit_reason::SYNC);
    assert_eq!(abi::esr::ec(exit.esr), abi::esr::EC_WFX);
}

#[test]
fn rtt_errors_carry_the_level() {
    let rmm = Rmm::default();
    let (rd, _, _) = manual_realm(&rmm, false);
    let c = RmiClient::new(&rmm, None);
    let data = rmm.alloc_ns_granules(1).unwrap();
    c.granule_delegate(data).unwrap();
    // 0xC000_0000 is covered only by a level-1 entry: the walk stops at level 1.
    let e = c.data_create_unknown(rd, data, 0xC000_0000).unwrap_err();
    assert_eq!((e.status(), e.index), (Some(RmiStatus::ErrorRtt), 1));
    // Already-assigned page: ERROR_RTT(3).
    let e = c.data_create_unknown(rd, data, RAM).unwrap_err();
    assert_eq!((e.status(), e.index), (Some(RmiStatus::ErrorRtt), 3));
    // Undelegating a granule in use fails.
    assert!(c.granule_undelegate(rd).is_err());
    let entry = c.rtt_read_entry(rd, RAM, 3).unwrap();
    assert_eq!(entry.level, 3);
    assert_eq!(entry.state, abi::RttEntryState::Assigned);
    assert_eq!(entry.ripas, abi::Ripas::Ram);
}

// RSI_MEASUREMENT_EXTEND(REM1, 2 bytes 01 02), RSI_MEASUREMENT_READ(REM1) → X1..X4 to the
// device; then a store and a load through the unprotected alias of shared memory at
// 0x4000_0000; SYSTEM_OFF.
const REM_AND_SHARED_PROGRAM: &[u32] = &[
    0xd2a14009, // mov  x9, #0xa000000
    0xf2c01009, // movk x9, #0x80, lsl #32
    0xd2803260, // mov  x0, #0x193
    0xf2b88000, // movk x0, #0xc400, lsl #16  (RSI_MEASUREMENT_EXTEND)
    0xd2800021, // mov  x1, #0x1
    0xd2800042, // mov  x2, #0x2
    0xd2804023, // mov  x3, #0x201
    0xd4000003, // smc #0
    0xf9000120, // str  x0, [x9]
    0xd2803240, // mov  x0, #0x192
    0xf2b88000, // movk x0, #0xc400, lsl #16  (RSI_MEASUREMENT_READ)
    0xd2800021, // mov  x1, #0x1
    0xd4000003, // smc #0
    0xf9000520, // str  x0, [x9, #8]
    0xf9000921, // str  x1, [x9, #16]
    0xf9000d22, // str  x2, [x9, #24]
    0xf9001123, // str  x3, [x9, #32]
    0xf9001524, // str  x4, [x9, #40]
    0xd2a8000a, // mov  x10, #0x40000000
    0xf2c0100a, // movk x10, #0x80, lsl #32
    0xd282468b, // mov  x11, #0x1234
    0xf900054b, // str  x11, [x10, #8]
    0xf940094c, // ldr  x12, [x10, #16]
    0xf900192c, // str  x12, [x9, #48]
    0xd2800100, // mov  x0, #0x8
    0xf2b08000, // movk x0, #0x8400, lsl #16
    0xd4000003, // smc #0
    0x14000000, // b .
];

#[test]
fn rem_extension_and_shared_memory() {
    use cvm_core::vm_memory::{Bytes, GuestAddress};
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let config = VmConfig::new(Confidentiality::ArmCca);
    let vm = backend.create_vm(&config).unwrap();
    vm.add_memory(MemoryRegion::private(RAM, 2 << 20)).unwrap();
    vm.add_memory(MemoryRegion::shared(0x4000_0000, 0x1000))
        .unwrap();
    vm.load(RAM, &code(REM_AND_SHARED_PROGRAM), Measure::Yes)
        .unwrap();
    vm.load(0x4000_0010, &0xABCDu64.to_le_bytes(), Measure::No)
        .unwrap();
    let mut v = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    let mut writes = Vec::new();
    let end = drive(v.as_mut(), &BTreeMap::new(), &mut writes, Resume::Done);
    assert_eq!(end, VmExit::SystemOff);
    let mut rems = backend_arm_cca::measure::Rems::new(cvm_core::HashAlgorithm::Sha256);
    rems.extend(1, &[1, 2]).unwrap();
    let rem1 = rems.value(1).unwrap();
    let words: Vec<u64> = writes[2..6].iter().map(|w| w.2).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(writes[0].2, 0, "extend: RSI_SUCCESS");
    assert_eq!(writes[1].2, 0, "read: RSI_SUCCESS");
    assert_eq!(bytes, rem1);
    assert_eq!(
        writes[6],
        (0x30, 8, 0xABCD),
        "realm read the VMM's shared memory"
    );
    let mem = vm.shared_memory();
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(0x4000_0008)).unwrap(),
        0x1234
    );
    let rd = rmm.realm_rds()[0];
    assert_eq!(rmm.realm_measurement(rd).unwrap().rems[0], rem1);
}

#[test]
fn the_host_log_replays_to_the_model_rim_offline() {
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    for (algo, sve, pmu) in [
        (cvm_core::HashAlgorithm::Sha256, 0, 0),
        (cvm_core::HashAlgorithm::Sha512, 256, 4),
    ] {
        let mut config = VmConfig {
            vcpus: 3,
            measurement: Some(algo),
            ..VmConfig::new(Confidentiality::ArmCca)
        };
        config.cca.sve_vl_bits = sve;
        config.cca.pmu_num_ctrs = pmu;
        config.cca.rpv = vec![9; 16];
        let vm = backend.create_vm(&config).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, 6 << 20)).unwrap();
        vm.add_memory(MemoryRegion::private(0x1_0000_0000, 0x3000))
            .unwrap();
        vm.load(RAM + 0x20_0000, &[5; 9000], Measure::Yes).unwrap();
        vm.load(RAM, &code(MMIO_PROGRAM), Measure::Yes).unwrap();
        vm.load(RAM + 0x1_0123, &[1; 100], Measure::No).unwrap();
        let _v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[1, 2, 3])).unwrap();
        let _v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
        let _v2 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
        vm.finalize().unwrap();
        let log = vm.measurement_log();
        let rd = *rmm.realm_rds().last().unwrap();
        let model = rmm.realm_measurement(rd).unwrap();
        assert_eq!(backend_arm_cca::replay(&log).unwrap().rim, model.rim);
        // Through the CLI, from a file.
        let dir = std::env::temp_dir().join(format!("cvm-cca-log-{}-{sve}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.json");
        std::fs::write(&path, serde_json::to_string(&log).unwrap()).unwrap();
        let out = backend_arm_cca::measure_log_cli(&path, false).unwrap();
        assert_eq!(out, format!("RIM {}", hex::encode(&model.rim)));
        let ripas = log
            .events
            .iter()
            .filter(|e| matches!(e, cvm_core::MeasurementEvent::Ripas { .. }))
            .count();
        // 6 MiB at 2 GiB: three 2 MiB blocks; 12 KiB at 4 GiB: three pages.
        assert_eq!(ripas, 6);
        vm.destroy().unwrap();
    }
    assert_eq!(rmm.delegated_granules(), 0);
}

#[test]
fn creation_fails_closed_and_checks_parameters() {
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    assert!(backend.create_vm(&VmConfig::default()).is_err());
    let mut bad = VmConfig::new(Confidentiality::ArmCca);
    bad.measurement = Some(cvm_core::HashAlgorithm::Sha384);
    assert!(backend.create_vm(&bad).is_err());
    let mut bad = VmConfig::new(Confidentiality::ArmCca);
    bad.cca.num_bps = 1;
    assert!(backend.create_vm(&bad).is_err());
    let mut bad = VmConfig::new(Confidentiality::ArmCca);
    bad.addr_bits = 52;
    assert!(backend.create_vm(&bad).is_err());
    assert_eq!(rmm.delegated_granules(), 0);
    let info = backend.info();
    assert!(info.available && info.private_memory);
    assert_eq!(info.addr_bits, 47);
}
