//! Two vCPUs, each doing MMIO to its own device; the second is started by the guest through
//! the platform (PSCI CPU_ON on CCA, SBI HSM HART_START on CoVE) or, on plain KVM, by the
//! host (created runnable).
//!
//! The boot vCPU does its MMIO, starts the secondary and stops itself (`StopVcpu`: PSCI
//! CPU_OFF, SBI HSM HART_STOP, HLT), so its `Runner` ends cleanly at the halt after DONE. The
//! secondary then does its MMIO and powers the VM off; the boot vCPU is told so once.

use cvm::guest::{DeviceWrite, Layout, Program, Runner};
use cvm::{sign_extend, LaunchState, Resume, VcpuInit, VmConfig, VmExit, PAGE_SIZE};

use crate::harness::{load_program, Env, DEV, RAM};

crate::per_backend!(
    two_vcpus_secondary_started_by_platform =>
    two_vcpus_secondary_started_by_platform_kvm,
    two_vcpus_secondary_started_by_platform_arm_cca,
    two_vcpus_secondary_started_by_platform_riscv_cove
);

const DEV1: u64 = DEV + 0x1000;
const ARG: u64 = 0x5EC0_0001;

fn two_vcpus_secondary_started_by_platform(env: &Env) {
    assert!(env.info.max_vcpus >= 2, "{}", env.name());
    let config = VmConfig {
        vcpus: 2,
        ..env.config()
    };
    let base = Layout::standard();
    // vCPU 0: standard code/data/doorbell and its device.
    let layout0 = Layout {
        devices: vec![(DEV, 0x1000)],
        ..base.clone()
    };
    // vCPU 1: its own code, data page, doorbell and device.
    let layout1 = Layout {
        code: RAM + 0x8_0000,
        data: base.data + PAGE_SIZE,
        doorbell: base.doorbell + PAGE_SIZE,
        devices: vec![(DEV1, 0x1000)],
    };

    let vm = env.backend().create_vm(&config).expect("create_vm");
    vm.add_memory(env.ram()).expect("add RAM");
    let platform = vm.guest_platform();
    // Does the guest start the secondary (CPU_ON / HART_START), or the host?
    let guest_starts = match platform.start_vcpu(1, layout1.code, ARG) {
        Ok(steps) => !steps.is_empty(),
        Err(ns) if !env.confidential() => {
            println!("{}: the host starts secondaries ({ns})", env.name());
            false
        }
        Err(ns) => panic!(
            "{}: a confidential guest must be able to start its secondary vCPU: {ns}",
            env.name()
        ),
    };

    let mut p0 = Program::new();
    p0.mmio_write(DEV, 4, 0xA0A0_0001);
    let r0 = p0.mmio_read(DEV + 8, 2, true);
    p0.expect(r0, sign_extend(0x8002, 2)).report(r0);
    if guest_starts {
        p0.start_vcpu(1, layout1.code, ARG);
    }
    p0.mmio_write(DEV + 0x10, 1, 0x5A);
    p0.stop_vcpu();

    let mut p1 = Program::new();
    p1.mmio_write(DEV1, 8, 0xB1B1_B1B1_B1B1_B1B1);
    let r1 = p1.mmio_read(DEV1 + 8, 1, true);
    p1.expect(r1, sign_extend(0x81, 1)).report(r1);
    p1.mmio_write(DEV1 + 0x10, 2, 0xB2B2);

    let image0 = load_program(vm.as_ref(), &p0, &layout0);
    let image1 = load_program(vm.as_ref(), &p1, &layout1);
    let mut vcpu0 = vm
        .create_vcpu(VcpuInit::boot(image0.entry, &[]))
        .expect("vCPU 0");
    let init1 = if guest_starts {
        VcpuInit::secondary()
    } else {
        VcpuInit::boot(image1.entry, &[ARG])
    };
    let mut vcpu1 = vm.create_vcpu(init1).expect("vCPU 1");
    assert_eq!((vcpu0.id(), vcpu1.id()), (0, 1));
    vm.finalize().expect("finalize");

    // vCPU 0 until it stops itself.
    let mut runner0 = Runner::new(&layout0);
    runner0.device_read(DEV + 8, 0x8002).exit_budget(1000);
    let out0 = runner0.run(vcpu0.as_mut()).unwrap_or_else(|e| {
        panic!(
            "{}: vCPU 0: {e}; detail {:?}",
            env.name(),
            vcpu0.exit_detail()
        )
    });
    assert!(out0.passed(), "{}: {:#?}", env.name(), out0.failures());
    assert!(out0.done && !out0.powered_off, "{}: {out0:?}", env.name());
    assert_eq!(out0.end, VmExit::Halt, "{}", env.name());
    assert_eq!(out0.value(r0), Some(sign_extend(0x8002, 2)));
    assert_eq!(
        out0.device_writes,
        vec![
            DeviceWrite {
                gpa: DEV,
                size: 4,
                value: 0xA0A0_0001
            },
            DeviceWrite {
                gpa: DEV + 0x10,
                size: 1,
                value: 0x5A
            }
        ]
    );
    assert_eq!(vm.state(), LaunchState::Finalized);

    // vCPU 1 to the end.
    let mut runner1 = Runner::new(&layout1);
    runner1.device_read(DEV1 + 8, 0x81).exit_budget(1000);
    let out1 = runner1.run(vcpu1.as_mut()).unwrap_or_else(|e| {
        panic!(
            "{}: vCPU 1: {e} ({e:?}); detail {:?}",
            env.name(),
            vcpu1.exit_detail()
        )
    });
    assert!(out1.passed(), "{}: {:#?}", env.name(), out1.failures());
    assert_eq!(out1.value(r1), Some(sign_extend(0x81, 1)));
    assert_eq!(
        out1.device_writes,
        vec![
            DeviceWrite {
                gpa: DEV1,
                size: 8,
                value: 0xB1B1_B1B1_B1B1_B1B1
            },
            DeviceWrite {
                gpa: DEV1 + 0x10,
                size: 2,
                value: 0xB2B2
            }
        ]
    );
    assert_eq!(vm.state(), LaunchState::Off);
    // The stopped boot vCPU learns of the power-off once, like every vCPU on KVM.
    assert_eq!(vcpu0.run(Resume::Done).unwrap(), VmExit::SystemOff);
    assert!(vcpu0.run(Resume::Done).is_err());
    // Both vCPUs' exits are counted VM-wide.
    let total = vm.stats();
    assert!(
        total.exits_of(cvm::ExitKind::MmioWrite)
            >= vcpu0.stats().exits_of(cvm::ExitKind::MmioWrite)
                + vcpu1.stats().exits_of(cvm::ExitKind::MmioWrite)
    );
}
