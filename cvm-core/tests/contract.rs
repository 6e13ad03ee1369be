//! The contract's own tests: lifecycle misuse, resume mismatch, region validation, feature
//! registers, statistics — all through the fake backend, so they say what every backend gets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{features, FakeBackend};
use cvm_core::{
    validate_resume, Backend, Confidentiality, Error, ExitKind, FeatureRegisters, LaunchState,
    Measure, MemoryKind, MemoryRegion, RegionError, Resume, ResumeKind, VcpuInit, Vm, VmConfig,
    VmExit,
};

const RAM: u64 = 0x8000_0000;

fn built(backend: &FakeBackend) -> Box<dyn Vm> {
    let vm = backend
        .create_vm(&VmConfig::new(Confidentiality::ArmCca))
        .unwrap();
    vm.add_memory(MemoryRegion::private(RAM, 0x20_0000))
        .unwrap();
    vm
}

fn mmio_read(gpa: u64, size: u8) -> VmExit {
    VmExit::Mmio {
        gpa,
        size,
        write: None,
    }
}

fn mmio_write(gpa: u64, size: u8, v: u64) -> VmExit {
    VmExit::Mmio {
        gpa,
        size,
        write: Some(v),
    }
}

#[test]
fn lifecycle_refuses_calls_in_the_wrong_state_and_changes_nothing() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();

    // run before finalize
    let e = vcpu.run(Resume::Done).unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidState {
                op: "run",
                state: LaunchState::Building
            }
        ),
        "{e}"
    );
    assert!(vcpu.pending().is_none());
    // convert before finalize
    assert!(matches!(
        vm.convert(RAM, 0x1000, MemoryKind::Shared),
        Err(Error::InvalidState { op: "convert", .. })
    ));

    vm.load(RAM, &[1, 2, 3], Measure::Yes).unwrap();
    vm.finalize().unwrap();
    assert_eq!(vm.state(), LaunchState::Finalized);

    let before = backend.calls();
    for (what, r) in [
        ("finalize", vm.finalize()),
        ("load", vm.load(RAM, &[1], Measure::Yes)),
        (
            "add private",
            vm.add_memory(MemoryRegion::private(0x1000_0000, 0x1000)),
        ),
        (
            "create_vcpu",
            vm.create_vcpu(VcpuInit::secondary()).map(|_| ()),
        ),
    ] {
        assert!(
            matches!(r, Err(Error::InvalidState { .. })),
            "{what}: {r:?}"
        );
    }
    assert_eq!(
        backend.calls(),
        before,
        "refused calls must not reach the backend"
    );
    // Shared memory may still be added after finalize.
    vm.add_memory(MemoryRegion::shared(0x1000_0000, 0x1000))
        .unwrap();
}

#[test]
fn system_off_moves_the_vm_off_and_further_runs_are_refused() {
    let backend = FakeBackend::new(vec![mmio_write(0x900_0000, 4, 7)]);
    let vm = built(&backend);
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(
        vcpu.run(Resume::Done).unwrap(),
        mmio_write(0x900_0000, 4, 7)
    );
    assert_eq!(vcpu.run(Resume::Done).unwrap(), VmExit::SystemOff);
    assert_eq!(vm.state(), LaunchState::Off);
    assert!(matches!(
        vcpu.run(Resume::Done),
        Err(Error::InvalidState {
            op: "run",
            state: LaunchState::Off
        })
    ));
    assert!(matches!(
        vm.add_memory(MemoryRegion::shared(0x1000_0000, 0x1000)),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn finalize_needs_the_boot_vcpu() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    assert!(matches!(vm.finalize(), Err(Error::InvalidArgument(_))));
    assert_eq!(vm.state(), LaunchState::Building);
    assert!(!backend.calls().contains(&"finalize".to_string()));
}

#[test]
fn vcpu_count_and_argument_limits() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    assert!(matches!(
        vm.create_vcpu(VcpuInit::boot(RAM, &[0; 9])),
        Err(Error::InvalidArgument(_))
    ));
    vm.create_vcpu(VcpuInit::boot(RAM, &[0; 8])).unwrap();
    assert!(matches!(
        vm.create_vcpu(VcpuInit::secondary()),
        Err(Error::InvalidArgument(_))
    ));
    assert!(backend
        .create_vm(&VmConfig {
            vcpus: 0,
            ..VmConfig::default()
        })
        .is_err());
}

#[test]
fn resume_must_answer_the_pending_exit() {
    let backend = FakeBackend::new(vec![
        mmio_read(0xa00_0000, 2),
        mmio_write(0xa00_0000, 1, 0xff),
        VmExit::ConvertMemory {
            gpa: RAM,
            size: 0x1000,
            to_private: false,
        },
        VmExit::HostCall {
            nr: 3,
            args: [0; 6],
        },
    ]);
    let vm = built(&backend);
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();

    // First entry only accepts Done.
    assert!(matches!(
        vcpu.run(Resume::MmioRead(1)),
        Err(Error::ResumeMismatch {
            pending: None,
            resume: ResumeKind::MmioRead
        })
    ));
    assert_eq!(vcpu.run(Resume::Done).unwrap(), mmio_read(0xa00_0000, 2));
    // An MMIO read left unanswered is a mismatch and nothing runs.
    let e = vcpu.run(Resume::Done).unwrap_err();
    assert!(matches!(
        e,
        Error::ResumeMismatch {
            pending: Some(ExitKind::MmioRead),
            resume: ResumeKind::Done
        }
    ));
    assert!(vcpu.run(Resume::Conversion(true)).is_err());
    assert_eq!(vcpu.pending(), Some(&mmio_read(0xa00_0000, 2)));
    assert_eq!(
        vcpu.run(Resume::MmioRead(0x8001)).unwrap(),
        mmio_write(0xa00_0000, 1, 0xff)
    );
    assert!(vcpu.run(Resume::MmioRead(0)).is_err());
    vcpu.run(Resume::Done).unwrap();
    assert!(
        vcpu.run(Resume::Done).is_err(),
        "conversion needs Conversion"
    );
    vcpu.run(Resume::Conversion(false)).unwrap();
    assert!(
        vcpu.run(Resume::SysReg(0)).is_err(),
        "host call needs HostCall"
    );
    assert_eq!(
        vcpu.run(Resume::HostCall([0, 0])).unwrap(),
        VmExit::SystemOff
    );

    let resumes = backend.journal.lock().unwrap().resumes.clone();
    assert_eq!(
        resumes,
        vec![
            Resume::Done,
            Resume::MmioRead(0x8001),
            Resume::Done,
            Resume::Conversion(false),
            Resume::HostCall([0, 0]),
        ],
        "only matching resumes reach the backend"
    );
    let stats = vcpu.stats();
    assert_eq!(stats.exits_of(ExitKind::MmioRead), 1);
    assert_eq!(stats.exits_of(ExitKind::MmioWrite), 1);
    assert_eq!(stats.exits_of(ExitKind::SystemOff), 1);
    assert_eq!(vm.stats().exits_of(ExitKind::HostCall), 1);
}

#[test]
fn validate_resume_table() {
    let read = mmio_read(0, 8);
    let write = mmio_write(0, 8, 1);
    let sys = VmExit::SysReg {
        reg: 0x15,
        write: None,
        write_mask: 0,
    };
    let pio_in = VmExit::Pio {
        port: 0x3f8,
        size: 1,
        write: None,
    };
    let cases: &[(Option<&VmExit>, Resume, bool)] = &[
        (None, Resume::Done, true),
        (None, Resume::InjectAbort, false),
        (Some(&read), Resume::MmioRead(1), true),
        (Some(&read), Resume::InjectAbort, true),
        (Some(&read), Resume::Done, false),
        (Some(&read), Resume::PioRead(1), false),
        (Some(&write), Resume::Done, true),
        (Some(&write), Resume::InjectAbort, true),
        (Some(&write), Resume::MmioRead(0), false),
        (Some(&sys), Resume::SysReg(5), true),
        (Some(&sys), Resume::Done, false),
        (Some(&pio_in), Resume::PioRead(3), true),
        (Some(&pio_in), Resume::Done, false),
        (Some(&VmExit::Halt), Resume::Done, true),
        (Some(&VmExit::Halt), Resume::HostCall([0; 2]), false),
    ];
    for (pending, resume, ok) in cases {
        assert_eq!(
            validate_resume(*pending, resume).is_ok(),
            *ok,
            "{pending:?} {resume:?}"
        );
    }
}

#[test]
fn region_validation() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    let calls = backend.calls().len();
    let bad = [
        (MemoryRegion::private(0x1001, 0x1000), "misaligned gpa"),
        (MemoryRegion::private(0x1000, 0x800), "misaligned size"),
        (MemoryRegion::private(0x1000, 0), "empty"),
        (MemoryRegion::private(!0xfff, 0x2000), "overflow"),
        (
            MemoryRegion::private(1 << 39, 0x1000),
            "beyond address width",
        ),
        (
            MemoryRegion::private(RAM + 0x1000, 0x1000),
            "overlap inside",
        ),
        (MemoryRegion::shared(RAM - 0x1000, 0x2000), "overlap start"),
    ];
    let expected = |r: &Error| -> &'static str {
        match r {
            Error::Region(RegionError::Misaligned { .. }) => "misaligned",
            Error::Region(RegionError::Empty { .. }) => "empty",
            Error::Region(RegionError::Overflow { .. }) => "overflow",
            Error::Region(RegionError::BeyondAddressWidth { .. }) => "beyond",
            Error::Region(RegionError::Overlap { .. }) => "overlap",
            _ => "other",
        }
    };
    for (region, why) in bad {
        let e = vm.add_memory(region).unwrap_err();
        assert!(why.starts_with(expected(&e)), "{why}: got {e}");
    }
    // Read-only regions are refused on confidential VMs.
    let ro = MemoryRegion {
        read_only: true,
        ..MemoryRegion::shared(0x1000_0000, 0x1000)
    };
    assert!(matches!(
        vm.add_memory(ro),
        Err(Error::Region(RegionError::ReadOnlyConfidential))
    ));
    assert_eq!(backend.calls().len(), calls, "nothing reached the backend");
    assert_eq!(vm.regions().len(), 1);
    // Adjacent regions are fine; removal of an unknown start is typed.
    vm.add_memory(MemoryRegion::shared(RAM + 0x20_0000, 0x1000))
        .unwrap();
    assert!(matches!(
        vm.remove_memory(RAM + 0x1000),
        Err(Error::Region(RegionError::NotFound { .. }))
    ));
    assert_eq!(
        vm.remove_memory(RAM + 0x20_0000).unwrap().kind,
        MemoryKind::Shared
    );
    // The last byte of the address space is usable.
    vm.add_memory(MemoryRegion::shared((1 << 39) - 0x1000, 0x1000))
        .unwrap();
}

#[test]
fn loads_must_land_in_the_right_memory() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    vm.add_memory(MemoryRegion::shared(0x1000_0000, 0x1000))
        .unwrap();
    assert!(matches!(
        vm.load(0x4000_0000, &[1], Measure::No),
        Err(Error::NotMapped { .. })
    ));
    assert!(matches!(
        vm.load(RAM + 0x1f_ffff, &[1, 2], Measure::No),
        Err(Error::NotMapped { .. })
    ));
    assert!(
        matches!(
            vm.load(0x1000_0000, &[1], Measure::Yes),
            Err(Error::NotMapped { .. })
        ),
        "measured loads on a confidential VM go to private memory"
    );
    assert!(matches!(
        vm.load(RAM + 8, &[1], Measure::Yes),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        vm.load(RAM, &[], Measure::Yes),
        Err(Error::InvalidArgument(_))
    ));
    vm.load(RAM, &[1; 5000], Measure::Yes).unwrap();
    assert_eq!(vm.measurement_log().events.len(), 1);
}

#[test]
fn feature_registers_freeze_at_the_first_run() {
    let backend = FakeBackend::new(vec![VmExit::Halt]);
    let vm = built(&backend);
    // Backend rules apply before the first run.
    assert!(matches!(
        vm.set_feature("zkr", 0),
        Err(Error::FeatureRejected { .. })
    ));
    assert!(matches!(
        vm.set_feature("nope", 0),
        Err(Error::UnknownFeature(_))
    ));
    vm.set_feature("ID_AA64PFR0_EL1", 0x1001).unwrap();
    vm.set_feature("ID_AA64PFR0_EL1", 0x0001).unwrap();
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    vm.set_feature("ID_AA64PFR0_EL1", 0x1001).unwrap(); // still before the first run
    vcpu.run(Resume::Done).unwrap();
    vm.set_feature("ID_AA64PFR0_EL1", 0x1001).unwrap(); // identical write: fine
    assert!(matches!(
        vm.set_feature("ID_AA64PFR0_EL1", 0x0001),
        Err(Error::Busy {
            current: 0x1001,
            requested: 0x0001,
            ..
        })
    ));
    let v = vm
        .features()
        .into_iter()
        .find(|f| f.name == "ID_AA64PFR0_EL1")
        .unwrap();
    assert_eq!(v.value, 0x1001);
}

#[test]
fn feature_reads_are_lock_free_and_writes_serialised() {
    let regs = Arc::new(FeatureRegisters::new(features()));
    let idx = regs.index("ID_AA64PFR0_EL1").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let allowed = [0x1101u64, 0x1001, 0x0101, 0x0001];
    // Readers and writers start together, so the reads overlap the writes.
    let start = Arc::new(std::sync::Barrier::new(5));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (regs, stop, start) = (Arc::clone(&regs), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                let mut seen = 0u64;
                loop {
                    let v = regs.read_index(idx).unwrap();
                    assert!(allowed.contains(&v), "torn or foreign value {v:#x}");
                    seen += 1;
                    if stop.load(Ordering::Relaxed) {
                        return seen;
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (regs, start) = (Arc::clone(&regs), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for i in 0..2000usize {
                    let v = allowed[(i + w) % allowed.len()];
                    regs.write("ID_AA64PFR0_EL1", v, |_, _, _| Ok(())).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    regs.freeze();
    let fixed = regs.read("ID_AA64PFR0_EL1").unwrap();
    let other = allowed.iter().copied().find(|v| *v != fixed).unwrap();
    assert!(matches!(
        regs.write("ID_AA64PFR0_EL1", other, |_, _, _| Ok(())),
        Err(Error::Busy { .. })
    ));
    regs.write("ID_AA64PFR0_EL1", fixed, |_, _, _| unreachable!())
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn destroy_is_idempotent_and_releases_once() {
    let backend = FakeBackend::new(vec![]);
    let vm = built(&backend);
    vm.destroy().unwrap();
    vm.destroy().unwrap();
    assert_eq!(vm.state(), LaunchState::Off);
    assert!(vm.regions().is_empty());
    drop(vm);
    let destroys = backend.calls().iter().filter(|c| *c == "destroy").count();
    assert_eq!(destroys, 1);
    // A VM dropped without destroy is still torn down once.
    let vm = built(&backend);
    drop(vm);
    let destroys = backend.calls().iter().filter(|c| *c == "destroy").count();
    assert_eq!(destroys, 2);
}

#[test]
fn exits_and_logs_round_trip_through_serde() {
    let exits = vec![
        mmio_read(0x900_0000, 4),
        VmExit::Fault {
            pc: 0x8000_0000,
            syndrome: 0x0200_0000,
            insn: Some(0xdead_beef),
            reason: "undefined instruction".into(),
        },
    ];
    let json = serde_json::to_string(&exits).unwrap();
    let back: Vec<VmExit> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, exits);
    let log: cvm_core::MeasurementLog = serde_json::from_str(
        r#"{"algorithm":"sha256","realm":{"flags":0,"s2sz":"40","sve_vl":0,"num_bps":1,"num_wps":1,"pmu_num_ctrs":0},
            "events":[{"ripas":{"base":"0x80000000","top":2149580800}},
                      {"data":{"ipa":"0x80000000","measured":true,"hex":"00ff"}},
                      {"rec":{"runnable":true,"pc":"0x80000000","gprs":["0x80100000", 5]}},
                      {"rem":{"index":1,"hex":"0102"}}]}"#,
    )
    .unwrap();
    assert_eq!(log.events.len(), 4);
    assert_eq!(log.realm.unwrap().s2sz, 40);
    let again: cvm_core::MeasurementLog =
        serde_json::from_str(&serde_json::to_string(&log).unwrap()).unwrap();
    assert_eq!(again, log);
    // Unknown fields and algorithms are refused.
    assert!(
        serde_json::from_str::<cvm_core::MeasurementLog>(r#"{"algorithm":"md5","events":[]}"#)
            .is_err()
    );
    assert!(serde_json::from_str::<cvm_core::MeasurementLog>(
        r#"{"algorithm":"sha256","events":[{"teleport":{}}]}"#
    )
    .is_err());
    assert!(serde_json::from_str::<cvm_core::MeasurementLog>(
        r#"{"algorithm":"sha256","events":[],"extra":1}"#
    )
    .is_err());
}

#[test]
fn log_files_are_read_relative_to_the_log() {
    let dir = std::env::temp_dir().join(format!("cvm-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("image.bin"), [7u8; 10]).unwrap();
    std::fs::write(
        dir.join("log.json"),
        r#"{"algorithm":"sha384","events":[{"measured_pages":{"gpa":"0x80000000","file":"image.bin"}}]}"#,
    )
    .unwrap();
    let log = cvm_core::MeasurementLog::from_path(&dir.join("log.json")).unwrap();
    match &log.events[0] {
        cvm_core::MeasurementEvent::MeasuredPages { content, .. } => {
            assert_eq!(content.as_bytes().unwrap(), &[7u8; 10])
        }
        e => panic!("unexpected {e:?}"),
    }
    std::fs::write(
        dir.join("bad.json"),
        r#"{"algorithm":"sha384","events":[{"measured_pages":{"gpa":0,"file":"missing.bin"}}]}"#,
    )
    .unwrap();
    let e = cvm_core::MeasurementLog::from_path(&dir.join("bad.json")).unwrap_err();
    assert!(e.to_string().contains("missing.bin"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn other_vcpus_see_a_guest_power_off_once() {
    let backend = FakeBackend::new(vec![VmExit::Halt]);
    let vm = backend
        .create_vm(&VmConfig {
            vcpus: 2,
            ..VmConfig::new(Confidentiality::ArmCca)
        })
        .unwrap();
    vm.add_memory(MemoryRegion::private(RAM, 0x20_0000))
        .unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    let mut v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    assert_eq!(v1.run(Resume::Done).unwrap(), VmExit::Halt);
    assert_eq!(v0.run(Resume::Done).unwrap(), VmExit::SystemOff);
    let resumes_before = backend.journal.lock().unwrap().resumes.len();
    // vCPU 1 is told, once, without entering the guest; then runs are refused.
    assert_eq!(v1.run(Resume::Done).unwrap(), VmExit::SystemOff);
    assert!(matches!(
        v1.run(Resume::Done),
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(
        v0.run(Resume::Done),
        Err(Error::InvalidState { .. })
    ));
    assert_eq!(
        backend.journal.lock().unwrap().resumes.len(),
        resumes_before
    );
    // A VMM-side destroy is not a guest power-off: nothing to report, just refused.
    let vm = built(&backend);
    let mut v = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    vm.destroy().unwrap();
    assert!(matches!(
        v.run(Resume::Done),
        Err(Error::InvalidState { .. })
    ));
}
