//! Lifecycle misuse and resume mismatches are typed errors that change nothing; VM-wide
//! feature registers freeze at the first run.

use cvm::guest::{Layout, Program, Report};
use cvm::{
    Error, ExitKind, FeatureDef, LaunchState, Measure, MemoryRegion, Resume, ResumeKind, VcpuInit,
    Vm, VmExit,
};

use crate::harness::{build, drive_to_off, load_program, Env, DEV, RAM2};

crate::per_backend!(
    lifecycle_misuse =>
    lifecycle_misuse_kvm,
    lifecycle_misuse_arm_cca,
    lifecycle_misuse_riscv_cove
);
crate::per_backend!(
    features_busy_after_first_run =>
    features_busy_after_first_run_kvm,
    features_busy_after_first_run_arm_cca,
    features_busy_after_first_run_riscv_cove
);

#[track_caller]
fn invalid_state<T: std::fmt::Debug>(r: cvm::Result<T>, op: &str, state: LaunchState) {
    match r {
        Err(Error::InvalidState { op: o, state: s }) if o == op && s == state => {}
        other => panic!("expected InvalidState {{ {op}, {state} }}, got {other:?}"),
    }
}

/// Run before finalize, measured load / second finalize / create_vcpu / private memory after
/// finalize, run after power-off: `InvalidState`. A resume that does not answer the pending
/// exit: `ResumeMismatch`, and the guest is not entered.
fn lifecycle_misuse(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 8, false);
    p.report(s);
    let vm = env.backend().create_vm(&env.config()).expect("create_vm");
    assert_eq!(vm.state(), LaunchState::Building);
    vm.add_memory(env.ram()).expect("add RAM");
    let image = load_program(vm.as_ref(), &p, &layout);
    let mut vcpu = vm
        .create_vcpu(VcpuInit::boot(image.entry, &[]))
        .expect("create_vcpu");
    invalid_state(vcpu.run(Resume::Done), "run", LaunchState::Building);
    assert_eq!(vcpu.pending(), None);
    assert_eq!(vcpu.stats().exits_of(ExitKind::MmioRead), 0);
    vm.finalize().expect("finalize");
    assert_eq!(vm.state(), LaunchState::Finalized);

    let log = vm.measurement_log();
    let measurement = vm.measurement().expect("measurement");
    let regions = vm.regions();
    invalid_state(
        vm.load(layout.code, &[0; 4096], Measure::Yes),
        "load(measured)",
        LaunchState::Finalized,
    );
    invalid_state(vm.finalize(), "finalize", LaunchState::Finalized);
    invalid_state(
        vm.create_vcpu(VcpuInit::secondary()).map(|_| ()),
        "create_vcpu",
        LaunchState::Finalized,
    );
    invalid_state(
        vm.add_memory(MemoryRegion::private(RAM2, 0x1000)),
        "add_memory(private)",
        LaunchState::Finalized,
    );
    assert_eq!(vm.measurement_log(), log, "{}", env.name());
    assert_eq!(vm.measurement().expect("measurement"), measurement);
    assert_eq!(vm.regions(), regions);
    assert_eq!(vm.state(), LaunchState::Finalized);

    // Nothing is pending before the first run: only Done answers it.
    match vcpu.run(Resume::MmioRead(1)) {
        Err(Error::ResumeMismatch {
            pending: None,
            resume: ResumeKind::MmioRead,
        }) => {}
        other => panic!("{}: {other:?}", env.name()),
    }
    assert_eq!(vcpu.pending(), None);
    let first = vcpu.run(Resume::Done).expect("first run");
    assert_eq!(
        first,
        VmExit::Mmio {
            gpa: DEV,
            size: 8,
            write: None
        },
        "{}",
        env.name()
    );
    for wrong in [
        Resume::Done,
        Resume::Conversion(true),
        Resume::HostCall([0; 2]),
    ] {
        match vcpu.run(wrong) {
            Err(Error::ResumeMismatch {
                pending: Some(ExitKind::MmioRead),
                resume,
            }) => assert_eq!(resume, wrong.kind()),
            other => panic!("{}: {wrong:?} gave {other:?}", env.name()),
        }
        assert_eq!(vcpu.pending(), Some(&first));
    }
    assert_eq!(vcpu.stats().exits_of(ExitKind::MmioRead), 1);
    let bell = drive_to_off(vcpu.as_mut(), &layout, Resume::MmioRead(0x77), 0);
    assert_eq!(
        bell.reports,
        vec![Report::Value {
            slot: s,
            value: 0x77
        }],
        "{}: the guest was not entered by the mismatched resumes",
        env.name()
    );
    assert!(bell.done);
    assert_eq!(vm.state(), LaunchState::Off);
    invalid_state(vcpu.run(Resume::Done), "run", LaunchState::Off);
    invalid_state(
        vm.add_memory(MemoryRegion::shared(RAM2, 0x1000)),
        "add_memory(shared)",
        LaunchState::Off,
    );
    vm.destroy().expect("destroy");
    vm.destroy().expect("destroy is idempotent");
    assert_eq!(vm.state(), LaunchState::Off);
}

/// A (register, value) the backend accepts before the first run, other than the default.
fn changeable(vm: &dyn Vm) -> Option<(FeatureDef, u64)> {
    for def in vm.feature_defs() {
        let d = def.default;
        let mut candidates = Vec::new();
        if def.can_disable && d != 0 {
            candidates.push(0);
            candidates.push(d - 1);
            // ID registers: lower one 4-bit field at a time.
            for shift in (0..64).step_by(4) {
                let field = (d >> shift) & 0xF;
                if field != 0 {
                    candidates.push(d - (1 << shift));
                    candidates.push(d & !(0xF << shift));
                }
            }
        }
        if def.can_enable {
            candidates.push(d.wrapping_add(1));
            candidates.push(1);
        }
        for v in candidates {
            if v != d && vm.set_feature(&def.name, v).is_ok() {
                vm.set_feature(&def.name, d)
                    .expect("restoring the default before the first run");
                return Some((def, v));
            }
        }
    }
    None
}

/// Before the first run a feature register may change; after it, writing the same value is
/// accepted and a different one is `Busy` (with the fixed and the refused values), while the
/// VM is still runnable. After power-off, writes are `InvalidState`.
fn features_busy_after_first_run(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 8, false);
    p.report(s);
    let (vm, mut vcpu) = build(env, &p, &layout, &[]);
    let Some((def, other)) = changeable(vm.as_ref()) else {
        return env.skip(format!(
            "no VM-wide feature register can change before the first run (feature_defs: {:?}; \
             BackendInfo.features: {:?})",
            vm.feature_defs()
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>(),
            env.info.features
        ));
    };
    let name = def.name.as_str();
    assert!(matches!(
        vm.set_feature("no-such-feature", 1),
        Err(Error::UnknownFeature(_))
    ));
    let before = vm.features();
    let first = vcpu.run(Resume::Done).expect("first run");
    assert!(
        matches!(first, VmExit::Mmio { write: None, .. }),
        "{first:?}"
    );
    assert_eq!(vm.state(), LaunchState::Finalized);
    match vm.set_feature(name, other) {
        Err(Error::Busy {
            feature,
            current,
            requested,
        }) => assert_eq!(
            (feature.as_str(), current, requested),
            (name, def.default, other)
        ),
        r => panic!(
            "{}: {name} = {other:#x} after the first run: {r:?}",
            env.name()
        ),
    }
    vm.set_feature(name, def.default)
        .unwrap_or_else(|e| panic!("{}: identical write of {name}: {e}", env.name()));
    assert_eq!(vm.features(), before);
    let bell = drive_to_off(vcpu.as_mut(), &layout, Resume::MmioRead(5), 0);
    assert_eq!(bell.reports, vec![Report::Value { slot: s, value: 5 }]);
    invalid_state(
        vm.set_feature(name, def.default),
        "set_feature",
        LaunchState::Off,
    );
}
