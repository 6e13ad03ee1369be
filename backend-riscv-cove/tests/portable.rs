//! Portable guest programs (cvm-core lowering to RV64) on the CoVE model.
#![allow(clippy::unwrap_used, clippy::panic)]

use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::CoveBackend;
use cvm_core::guest::{launch, Layout, Program, Runner};
use cvm_core::{Confidentiality, EntropyPolicy, ExitKind, VmConfig, VmExit};

fn cfg() -> VmConfig {
    VmConfig::new(Confidentiality::RiscvCove)
}

#[test]
fn mmio_every_width_and_sign() {
    let layout = Layout::standard();
    let dev = layout.devices[0].0;
    let mut p = Program::new();
    let mut slots = Vec::new();
    for size in [1u8, 2, 4, 8] {
        for signed in [false, true] {
            slots.push((size, signed, p.mmio_read(dev + 0x10, size, signed)));
        }
    }
    for &(_, _, s) in &slots {
        p.report(s);
    }
    p.mmio_write(dev + 0x20, 1, 0x1FF)
        .mmio_write(dev + 0x22, 2, 0x1_FFFF)
        .mmio_write(dev + 0x24, 4, 0x1_2345_6789)
        .mmio_write(dev + 0x28, 8, 0x8877_6655_4433_2211);
    let b = CoveBackend::model();
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let mut r = Runner::new(&layout);
    r.device_read(dev + 0x10, 0x8182_8384_8586_8788);
    let out = r.run(l.vcpu.as_mut()).unwrap();
    assert!(out.passed(), "{:?}", out.failures());
    let want = [
        0x88,
        0xFFFF_FFFF_FFFF_FF88,
        0x8788,
        0xFFFF_FFFF_FFFF_8788,
        0x8586_8788,
        0xFFFF_FFFF_8586_8788,
        0x8182_8384_8586_8788,
        0x8182_8384_8586_8788,
    ];
    for (&(size, signed, s), w) in slots.iter().zip(want) {
        assert_eq!(out.value(s), Some(w), "size {size} signed {signed}");
    }
    let writes: Vec<(u8, u64)> = out
        .device_writes
        .iter()
        .map(|w| (w.size, w.value))
        .collect();
    assert_eq!(
        writes,
        vec![
            (1, 0xFF),
            (2, 0xFFFF),
            (4, 0x2345_6789),
            (8, 0x8877_6655_4433_2211)
        ]
    );
    assert!(l.vm.stats().calls_of("COVH_TVM_VCPU_RUN") > 0);
}

#[test]
fn measurement_read_by_guest_equals_host() {
    let layout = Layout::standard();
    let mut p = Program::new();
    p.read_measurement(2).read_measurement(3);
    let b = CoveBackend::model();
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let out = Runner::new(&layout).run(l.vcpu.as_mut()).unwrap();
    assert!(out.passed(), "{:?}", out.failures());
    let host = l.vm.measurement().unwrap();
    assert_eq!(out.measurement(2), host.register("PCR2"));
    assert_eq!(out.measurement(3), host.register("PCR3"));
    let replayed = backend_riscv_cove::replay(&l.vm.measurement_log()).unwrap();
    assert_eq!(replayed.to_measurement(), host);
}

#[test]
fn share_unshare_host_call_entropy() {
    let layout = Layout::standard();
    let mut p = Program::new();
    let page = layout.data + 0x10_0000;
    p.mem_write(page, 8, 0x55);
    p.share(page, 0x1000).mem_write(page, 8, 0x66);
    let s = p.mem_read(page, 8);
    p.report(s).unshare(page, 0x1000);
    let hc = p.host_call(7, &[1, 2]);
    p.report(hc);
    let e = p.read_entropy();
    p.report(e);
    for (policy, entropy) in [
        (EntropyPolicy::Firmware, None),
        (EntropyPolicy::ForwardToVmm, Some(0xBEEF)),
    ] {
        let b = CoveBackend::model();
        let mut c = cfg();
        c.entropy = policy;
        let mut l = launch(&b, &c, &p, &layout, Layout::standard_ram()).unwrap();
        let mut r = Runner::new(&layout);
        r.host_call_handler(|nr, a| [nr * 100 + a[0] + a[1], 0])
            .entropy(0xBEEF);
        let out = r.run(l.vcpu.as_mut()).unwrap();
        assert!(out.passed(), "{:?}", out.failures());
        assert_eq!(out.value(s), Some(0x66));
        assert_eq!(out.value(hc), Some(703));
        assert_eq!(out.conversions.len(), 2);
        let v = out.value(e).unwrap();
        assert!(v <= 0xFFFF);
        match entropy {
            Some(x) => {
                assert_eq!(v, x);
                assert_eq!(out.exits_of(ExitKind::SysReg), 1);
            }
            None => assert_eq!(out.exits_of(ExitKind::SysReg), 0),
        }
    }
    // Rejected conversions fail the platform step.
    let b = CoveBackend::model();
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let mut r = Runner::new(&layout);
    r.accept_conversions(false);
    let out = r.run(l.vcpu.as_mut()).unwrap();
    assert!(!out.failures().is_empty());
}

#[test]
fn entropy_without_zkr_faults_or_reports() {
    let layout = Layout::standard();
    let mut p = Program::new();
    let e = p.read_entropy();
    p.report(e);
    let m = std::sync::Arc::new(backend_riscv_cove::TsmModel::default());
    let b = CoveBackend::with_model(m, HostIsa::without(&["zkr"]));
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let out = Runner::new(&layout).run(l.vcpu.as_mut()).unwrap();
    // The guest takes an illegal-instruction exception (the lowering's handler reports it).
    assert!(!out.passed());
    assert!(matches!(out.end, VmExit::SystemOff | VmExit::Fault { .. }));
}
