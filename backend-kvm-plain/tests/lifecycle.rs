//! The launch lifecycle and the software launch digest on real KVM.
#![cfg(target_arch = "x86_64")]

mod common;

use backend_kvm_plain::measure::{launch_digest, LAUNCH_REGISTER};
use common::{kvm, RAM, RAM_SIZE};
use cvm_core::{
    Backend, Content, Error, HashAlgorithm, LaunchState, Measure, MeasurementEvent, MemoryRegion,
    Resume, VcpuInit, VmConfig, VmExit,
};

#[test]
fn misuse_is_invalid_state_and_changes_nothing() {
    let Some(b) = kvm() else { return };
    let vm = b.create_vm(&VmConfig::default()).unwrap();
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &[0xf4], Measure::Yes).unwrap();
    // finalize needs vCPU 0.
    assert!(matches!(vm.finalize(), Err(Error::InvalidArgument(_))));
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    // Run before finalize.
    assert!(matches!(
        vcpu.run(Resume::Done),
        Err(Error::InvalidState {
            state: LaunchState::Building,
            ..
        })
    ));
    let log_before = vm.measurement_log();
    vm.finalize().unwrap();
    // Measured load after finalize, a second finalize, a late vCPU.
    assert!(matches!(
        vm.load(RAM + 0x1000, &[1], Measure::Yes),
        Err(Error::InvalidState {
            state: LaunchState::Finalized,
            ..
        })
    ));
    assert!(matches!(
        vm.finalize(),
        Err(Error::InvalidState {
            state: LaunchState::Finalized,
            ..
        })
    ));
    assert!(matches!(
        vm.create_vcpu(VcpuInit::boot(RAM, &[])),
        Err(Error::InvalidState { .. })
    ));
    assert_eq!(vm.measurement_log(), log_before);
    // Unmeasured loads into shared memory are still fine.
    vm.load(RAM + 0x1000, &[1], Measure::No).unwrap();
    assert_eq!(vcpu.run(Resume::Done).unwrap(), VmExit::Halt);
    vm.destroy().unwrap();
    assert_eq!(vm.state(), LaunchState::Off);
    assert!(matches!(
        vcpu.run(Resume::Done),
        Err(Error::InvalidState { .. })
    ));
    vm.destroy().unwrap();
}

#[test]
fn launch_digest_is_the_documented_chain_over_the_log() {
    let Some(b) = kvm() else { return };
    let vm = b.create_vm(&VmConfig::default()).unwrap();
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    vm.load(RAM, &[0x90, 0xf4], Measure::Yes).unwrap();
    vm.load(RAM + 0x2000, b"data", Measure::Yes).unwrap();
    vm.load(RAM + 0x3000, b"not measured", Measure::No).unwrap();
    let _vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[1, 2])).unwrap();
    vm.finalize().unwrap();
    let log = vm.measurement_log();
    assert_eq!(log.algorithm, HashAlgorithm::Sha256);
    assert_eq!(
        log.events,
        vec![
            MeasurementEvent::Load {
                gpa: RAM,
                content: Content::bytes(vec![0x90, 0xf4])
            },
            MeasurementEvent::Load {
                gpa: RAM + 0x2000,
                content: Content::bytes(b"data".to_vec())
            },
            MeasurementEvent::Vcpu {
                id: 0,
                pc: RAM,
                args: vec![1, 2]
            },
        ]
    );
    let m = vm.measurement().unwrap();
    assert_eq!(m.algorithm, HashAlgorithm::Sha256);
    let launch = m.register(LAUNCH_REGISTER).unwrap();
    assert_eq!(launch, launch_digest(&log).unwrap().as_slice());
    // A fresh VM built the same way has the same digest; a different entry does not.
    let vm2 = b.create_vm(&VmConfig::default()).unwrap();
    vm2.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    vm2.load(RAM, &[0x90, 0xf4], Measure::Yes).unwrap();
    vm2.load(RAM + 0x2000, b"data", Measure::Yes).unwrap();
    let _v2 = vm2.create_vcpu(VcpuInit::boot(RAM + 1, &[1, 2])).unwrap();
    assert_ne!(
        vm2.measurement()
            .unwrap()
            .register(LAUNCH_REGISTER)
            .unwrap(),
        launch
    );
}
