//! Portable guest programs (cvm_core::guest) lowered to x86-64 and run on real KVM.
#![cfg(target_arch = "x86_64")]

mod common;

use backend_kvm_plain::KvmBackend;
use common::kvm;
use cvm_core::guest::{launch, Launched, Layout, Program, Runner};
use cvm_core::{ExitKind, VmConfig, VmExit};

const DEV: u64 = 0x0a00_0000;

#[allow(clippy::expect_used)]
fn launch_std(b: &KvmBackend, p: &Program) -> Launched {
    launch(
        b,
        &VmConfig::default(),
        p,
        &Layout::standard(),
        Layout::standard_ram(),
    )
    .expect("launch")
}

#[test]
fn mmio_every_width_expect_and_report() {
    let Some(b) = kvm() else { return };
    let mut p = Program::new();
    let value = 0x8877_6655_4433_2211u64;
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        p.mmio_write(DEV + 0x10 * i as u64, size, value);
    }
    let mut slots = Vec::new();
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        let addr = DEV + 0x100 + 0x10 * i as u64;
        let u = p.mmio_read(addr, size, false);
        let s = p.mmio_read(addr, size, true);
        p.report(u).report(s);
        slots.push((size, addr, u, s));
    }
    let zero = p.mmio_read(DEV + 0x100, 1, false);
    p.expect(zero, 0x80).system_off();
    let mut l = launch_std(&b, &p);
    let mut runner = Runner::new(&Layout::standard());
    for &(_, addr, _, _) in &slots {
        runner.device_read(addr, 0xf0e0_d0c0_b0a0_9080);
    }
    let out = runner.run(l.vcpu.as_mut()).expect("run");
    assert!(out.passed(), "{out:?}");
    assert_eq!(out.end, VmExit::SystemOff);
    let writes: Vec<(u64, u8, u64)> = out
        .device_writes
        .iter()
        .map(|w| (w.gpa, w.size, w.value))
        .collect();
    assert_eq!(
        writes,
        vec![
            (DEV, 1, 0x11),
            (DEV + 0x10, 2, 0x2211),
            (DEV + 0x20, 4, 0x4433_2211),
            (DEV + 0x30, 8, value)
        ]
    );
    for (size, _, u, s) in slots {
        let low = cvm_core::mask_to_size(0xf0e0_d0c0_b0a0_9080, size);
        assert_eq!(out.value(u), Some(low), "size {size} zero-extended");
        assert_eq!(
            out.value(s),
            Some(cvm_core::sign_extend(low, size)),
            "size {size} signed"
        );
    }
    // A failing expectation is reported, not hung.
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 4, false);
    p.expect(s, 1).system_off();
    let mut l = launch_std(&b, &p);
    let out = Runner::new(&Layout::standard())
        .run(l.vcpu.as_mut())
        .expect("run");
    assert_eq!(out.failures().len(), 1, "{out:?}");
    assert!(out.powered_off);
}

#[test]
fn repeat_runs_the_body_count_times() {
    let Some(b) = kvm() else { return };
    let mut p = Program::new();
    p.repeat(500, |body| {
        body.mmio_write(DEV, 4, 7);
    });
    p.system_off();
    let mut l = launch_std(&b, &p);
    let out = Runner::new(&Layout::standard())
        .run(l.vcpu.as_mut())
        .expect("run");
    assert!(out.passed(), "{out:?}");
    assert_eq!(out.device_writes.len(), 500);
    assert!(out.exits_of(ExitKind::MmioWrite) >= 500);
}

#[test]
fn host_call_reaches_the_vmm_with_six_arguments() {
    let Some(b) = kvm() else { return };
    let mut p = Program::new();
    let r = p.host_call(0x42, &[1, 2, 3, 4, 5, 6]);
    let r2 = p.host_call(0x43, &[9]);
    p.report(r).report(r2).system_off();
    let mut l = launch_std(&b, &p);
    let mut runner = Runner::new(&Layout::standard());
    runner.host_call_handler(|nr, args| [nr * 1000 + args.iter().sum::<u64>(), 0]);
    let out = runner.run(l.vcpu.as_mut()).expect("run");
    assert!(out.passed(), "{out:?}");
    assert_eq!(out.host_calls.len(), 2);
    assert_eq!(out.host_calls[0].nr, 0x42);
    assert_eq!(out.host_calls[0].args, [1, 2, 3, 4, 5, 6]);
    assert_eq!(out.host_calls[1].args, [9, 0, 0, 0, 0, 0]);
    assert_eq!(out.value(r), Some(0x42 * 1000 + 21));
    assert_eq!(out.value(r2), Some(0x43 * 1000 + 9));
}

#[test]
fn platform_ops_plain_kvm_cannot_do_are_skips_not_failures() {
    let Some(b) = kvm() else { return };
    let mut p = Program::new();
    p.read_measurement(0).system_off();
    let e = launch(
        &b,
        &VmConfig::default(),
        &p,
        &Layout::standard(),
        Layout::standard_ram(),
    )
    .expect_err("no guest-visible measurement on plain KVM");
    let ns = e.not_supported().expect("a NotSupported skip");
    assert_eq!(ns.op, "read_measurement");
    println!("skipped (by design): {ns}");

    let mut p = Program::new();
    p.share(Layout::STANDARD_RAM_BASE + 0x20_0000, 0x1000)
        .system_off();
    match launch(
        &b,
        &VmConfig::default(),
        &p,
        &Layout::standard(),
        Layout::standard_ram(),
    ) {
        Ok(mut l) => {
            let out = Runner::new(&Layout::standard())
                .run(l.vcpu.as_mut())
                .expect("run");
            assert!(out.passed(), "{out:?}");
            assert_eq!(out.conversions.len(), 1);
            assert!(!out.conversions[0].to_private);
        }
        Err(e) => println!("skipped: share: {}", e.not_supported().expect("a skip")),
    }

    let mut p = Program::new();
    let s = p.read_entropy();
    p.report(s).system_off();
    match launch(
        &b,
        &VmConfig::default(),
        &p,
        &Layout::standard(),
        Layout::standard_ram(),
    ) {
        Ok(mut l) => {
            let out = Runner::new(&Layout::standard())
                .run(l.vcpu.as_mut())
                .expect("run");
            assert!(out.passed(), "{out:?}");
        }
        Err(e) => println!("skipped: entropy: {}", e.not_supported().expect("a skip")),
    }
}
