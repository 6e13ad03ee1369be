//! The doorbell, MMIO of every width, a device at the top of the address space, a failing
//! `expect`, and the native detail behind MMIO exits.

use cvm::guest::{DeviceWrite, Layout, Program, Report};
use cvm::{sign_extend, ExitKind, LaunchState, VmExit};

use crate::harness::{Concrete, Env, Which, DEV, SCRATCH};

crate::per_backend!(
    ucall_smoke =>
    ucall_smoke_kvm,
    ucall_smoke_arm_cca,
    ucall_smoke_riscv_cove
);
crate::per_backend!(
    mmio_every_width =>
    mmio_every_width_kvm,
    mmio_every_width_arm_cca,
    mmio_every_width_riscv_cove
);
crate::per_backend!(
    mmio_high_device =>
    mmio_high_device_kvm,
    mmio_high_device_arm_cca,
    mmio_high_device_riscv_cove
);
crate::per_backend!(
    failing_expect_is_reported =>
    failing_expect_is_reported_kvm,
    failing_expect_is_reported_arm_cca,
    failing_expect_is_reported_riscv_cove
);
crate::per_backend!(
    exit_detail_names_the_mmio_channel =>
    exit_detail_names_the_mmio_channel_kvm,
    exit_detail_names_the_mmio_channel_arm_cca,
    exit_detail_names_the_mmio_channel_riscv_cove
);

/// A value goes from guest RAM through the doorbell; the run ends with a clean power-off.
fn ucall_smoke(env: &Env) {
    // The facade hands out the same kind of backend.
    let facade = cvm::backend(env.name()).expect("cvm::backend");
    let finfo = facade.info();
    assert_eq!(
        (finfo.name.as_str(), finfo.arch, finfo.confidentiality),
        (env.name(), env.info.arch, env.info.confidentiality)
    );
    drop(facade);

    const VALUE: u64 = 0xC0FF_EE00_D00D_F00D;
    let layout = Layout::standard();
    let mut p = Program::new();
    p.mem_write(SCRATCH, 8, VALUE);
    let s = p.mem_read(SCRATCH, 8);
    p.report(s);
    let (out, l) = env.run(&p, &layout, |_| {});
    assert!(out.passed(), "{}: {out:#?}", env.name());
    assert_eq!(
        out.reports,
        vec![Report::Value {
            slot: s,
            value: VALUE
        }]
    );
    assert_eq!(out.value(s), Some(VALUE));
    assert!(out.done && out.powered_off);
    assert_eq!(out.end, VmExit::SystemOff);
    // One report = VALUE + CMD, then Done: exactly 3 doorbell writes, and nothing else leaves
    // the guest (RAM accesses never exit).
    assert_eq!(
        out.exits_of(ExitKind::MmioWrite),
        3,
        "{}: {out:#?}",
        env.name()
    );
    assert_eq!(
        out.exits_of(ExitKind::MmioRead),
        0,
        "{}: {out:#?}",
        env.name()
    );
    assert_eq!(out.exits_of(ExitKind::SystemOff), 1);
    assert_eq!(out.exits_of(ExitKind::Fault), 0);
    assert!(out.device_writes.is_empty() && out.conversions.is_empty());
    assert_eq!(l.vm.state(), LaunchState::Off);
    assert_eq!(l.vcpu.pending(), Some(&VmExit::SystemOff));
    let stats = l.vcpu.stats();
    assert_eq!(stats.exits_of(ExitKind::MmioWrite), 3);
    assert_eq!(l.vm.stats().exits_of(ExitKind::SystemOff), 1);
}

/// Device bank values whose top bit is set in each width.
const BANK: [(u8, u64); 4] = [
    (1, 0x80),
    (2, 0x8001),
    (4, 0x8000_0001),
    (8, 0x8000_0000_0000_0001),
];

/// Loads of 1/2/4/8 bytes, zero- and sign-extended, and stores of every width; checked on the
/// guest side (`expect`) and the host side (reports and recorded device writes).
fn mmio_every_width(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let mut reads = Vec::new();
    for (i, &(size, value)) in BANK.iter().enumerate() {
        let addr = DEV + 8 * i as u64;
        let zero = p.mmio_read(addr, size, false);
        let signed = p.mmio_read(addr, size, true);
        p.expect(zero, value);
        p.expect(signed, sign_extend(value, size));
        reads.push((size, zero, value));
        reads.push((size, signed, sign_extend(value, size)));
    }
    const STORE: u64 = 0xF1E2_D3C4_B5A6_9788;
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        p.mmio_write(DEV + 0x100 + 8 * i as u64, size, STORE);
    }
    for &(_, slot, _) in &reads {
        p.report(slot);
    }
    let (out, _l) = env.run(&p, &layout, |r| {
        for (i, &(_, value)) in BANK.iter().enumerate() {
            r.device_read(DEV + 8 * i as u64, value);
        }
    });
    assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
    for &(size, slot, want) in &reads {
        assert_eq!(
            out.value(slot),
            Some(want),
            "{}: {size}-byte read into {slot:?}",
            env.name()
        );
    }
    let want: Vec<DeviceWrite> = [1u8, 2, 4, 8]
        .into_iter()
        .enumerate()
        .map(|(i, size)| DeviceWrite {
            gpa: DEV + 0x100 + 8 * i as u64,
            size,
            value: cvm::mask_to_size(STORE, size),
        })
        .collect();
    assert_eq!(out.device_writes, want, "{}", env.name());
    assert_eq!(out.exits_of(ExitKind::MmioRead), 8);
    // 4 device stores + 8 reports × 2 + Done.
    assert_eq!(out.exits_of(ExitKind::MmioWrite), 4 + 16 + 1);
}

/// A device on the last page below `1 << vm.addr_bits()` (the device view; above any
/// backend-reserved window) is reached with loads and stores of full 64-bit addresses.
fn mmio_high_device(env: &Env) {
    let bits = {
        let vm = env.backend().create_vm(&env.config()).expect("create_vm");
        vm.addr_bits()
    };
    assert!(
        bits <= env.info.addr_bits,
        "{}: a default VM has {bits} address bits, more than BackendInfo's {}",
        env.name(),
        env.info.addr_bits
    );
    assert!(bits > 32, "{}: {bits} address bits", env.name());
    let high = (1u64 << bits) - 0x1000;
    if let Concrete::Kvm(b) = &env.backend {
        let vm = b.create_kvm_vm(&env.config()).expect("create_vm");
        if let Some((base, len)) = vm.ops().reserved_window() {
            assert!(
                high >= base + len || high + 0x1000 <= base,
                "the device page {high:#x} must lie outside the reserved window"
            );
        }
    }
    let layout = Layout {
        devices: vec![(high, 0x1000)],
        ..Layout::standard()
    };
    let mut p = Program::new();
    p.mmio_write(high + 0xFF8, 8, 0x8765_4321_0FED_CBA9);
    p.mmio_write(high, 1, 0x5A);
    let r32 = p.mmio_read(high + 0x10, 4, true);
    let r64 = p.mmio_read(high + 0xFF0, 8, false);
    p.expect(r32, 0xFFFF_FFFF_8000_0002);
    p.report(r32).report(r64);
    let (out, _l) = env.run(&p, &layout, |r| {
        r.device_read(high + 0x10, 0x8000_0002)
            .device_read(high + 0xFF0, 0xFEED_FACE_CAFE_BEEF);
    });
    assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
    assert_eq!(out.value(r32), Some(0xFFFF_FFFF_8000_0002));
    assert_eq!(out.value(r64), Some(0xFEED_FACE_CAFE_BEEF));
    assert_eq!(
        out.device_writes,
        vec![
            DeviceWrite {
                gpa: high + 0xFF8,
                size: 8,
                value: 0x8765_4321_0FED_CBA9
            },
            DeviceWrite {
                gpa: high,
                size: 1,
                value: 0x5A
            }
        ],
        "{}: addresses in exits are the device view",
        env.name()
    );
}

/// `expect` that does not hold reports `ExpectFailed` with both values, the program goes on
/// to its end and powers off; the run never hangs (a small exit budget proves it).
fn failing_expect_is_reported(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 4, false);
    p.expect(s, 0x1111);
    p.report(s);
    let (out, l) = env.run(&p, &layout, |r| {
        r.device_read(DEV, 0x2222).exit_budget(64);
    });
    assert_eq!(
        out.reports,
        vec![
            Report::ExpectFailed {
                slot: s,
                expected: 0x1111,
                actual: 0x2222
            },
            Report::Value {
                slot: s,
                value: 0x2222
            }
        ],
        "{}",
        env.name()
    );
    assert_eq!(out.failures().len(), 1);
    assert!(!out.passed());
    assert!(out.done && out.powered_off, "{}: {out:#?}", env.name());
    assert_eq!(out.end, VmExit::SystemOff);
    assert_eq!(l.vm.state(), LaunchState::Off);
}

/// Every backend explains its MMIO exits natively (`Vcpu::exit_detail`): a reason, the native
/// registers, and the channel the value travels through (DESIGN's register-transfer table).
fn exit_detail_names_the_mmio_channel(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 8, false);
    p.mmio_write(DEV + 8, 4, 0x1234);
    p.report(s);
    let mut l = env.launch(&p, &layout);
    let mut details = Vec::new();
    let mut runner = cvm::guest::Runner::new(&layout);
    runner.device_read(DEV, 7);
    let out = runner
        .run_observed(l.vcpu.as_mut(), &mut |exit, _, vcpu| {
            if let VmExit::Mmio { gpa, write, .. } = *exit {
                if (DEV..DEV + 0x1000).contains(&gpa) {
                    details.push((write.is_some(), vcpu.exit_detail()));
                }
            }
        })
        .expect("run");
    assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
    assert_eq!(details.len(), 2);
    for (write, detail) in details {
        let d = detail.unwrap_or_else(|| panic!("{}: no exit detail", env.name()));
        println!("{}: write={write}: {d:?}", env.name());
        assert!(!d.reason.is_empty() && !d.registers.is_empty(), "{d:?}");
        let want = match env.which {
            Which::Kvm => "kvm_run.mmio.data",
            Which::ArmCca => "gprs[0]",
            Which::RiscvCove => "a0",
        };
        assert!(
            d.channel.contains(want),
            "{}: the MMIO channel should name {want:?}: {d:?}",
            env.name()
        );
    }
}
