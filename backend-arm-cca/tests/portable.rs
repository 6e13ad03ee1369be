//! Portable guest programs on the CCA model (cvm_core::guest::launch + Runner).

#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;

use backend_arm_cca::{replay, CcaBackend, Rmm};
use cvm_core::guest::{launch, Layout, Program, Runner};
use cvm_core::{Confidentiality, HashAlgorithm, VmConfig};

fn cfg(algo: HashAlgorithm) -> VmConfig {
    VmConfig {
        measurement: Some(algo),
        ..VmConfig::new(Confidentiality::ArmCca)
    }
}

fn run(
    program: &Program,
    algo: HashAlgorithm,
    setup: impl FnOnce(&mut Runner),
) -> (
    cvm_core::guest::RunOutcome,
    Arc<Rmm>,
    cvm_core::guest::Launched,
) {
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let layout = Layout::standard();
    let mut l = launch(
        &backend,
        &cfg(algo),
        program,
        &layout,
        Layout::standard_ram(),
    )
    .unwrap();
    let mut runner = Runner::new(&layout);
    setup(&mut runner);
    let out = runner.run(l.vcpu.as_mut()).unwrap();
    (out, rmm, l)
}

#[test]
fn mmio_every_width_with_sign_extension() {
    let dev = Layout::standard().devices[0].0;
    let mut p = Program::new();
    let mut slots = Vec::new();
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        let off = 8 * i as u64;
        slots.push((p.mmio_read(dev + off, size, false), size, false));
        slots.push((p.mmio_read(dev + off, size, true), size, true));
        p.mmio_write(dev + 0x100 + off, size, 0x1122_3344_5566_7788);
    }
    for (s, _, _) in &slots {
        p.report(*s);
    }
    let (out, _, _) = run(&p, HashAlgorithm::Sha256, |r| {
        r.device_read(dev, 0x80);
        r.device_read(dev + 8, 0x8001);
        r.device_read(dev + 16, 0x8000_0001);
        r.device_read(dev + 24, 0x8000_0000_0000_0001);
    });
    assert!(out.passed(), "{out:#?}");
    let expect = [
        0x80,
        0xFFFF_FFFF_FFFF_FF80,
        0x8001,
        0xFFFF_FFFF_FFFF_8001,
        0x8000_0001,
        0xFFFF_FFFF_8000_0001,
        0x8000_0000_0000_0001,
        0x8000_0000_0000_0001,
    ];
    for ((s, size, signed), e) in slots.iter().zip(expect) {
        assert_eq!(out.value(*s), Some(e), "size {size} signed {signed}");
    }
    let writes: Vec<(u8, u64)> = out
        .device_writes
        .iter()
        .map(|w| (w.size, w.value))
        .collect();
    assert_eq!(
        writes,
        vec![
            (1, 0x88),
            (2, 0x7788),
            (4, 0x5566_7788),
            (8, 0x1122_3344_5566_7788)
        ]
    );
}

#[test]
fn guest_reads_its_rim_and_it_equals_the_host_and_the_replay() {
    for algo in [HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
        let mut p = Program::new();
        p.read_measurement(0);
        let (out, rmm, l) = run(&p, algo, |_| {});
        assert!(out.passed(), "{out:#?}");
        let guest = out.measurement(0).unwrap().to_vec();
        assert_eq!(guest.len(), algo.len());
        let host = l.vm.measurement().unwrap();
        assert_eq!(host.register("RIM"), Some(guest.as_slice()));
        let replayed = replay(&l.vm.measurement_log()).unwrap();
        assert_eq!(replayed.rim, guest);
        let rd = rmm.realm_rds()[0];
        assert_eq!(rmm.realm_measurement(rd).unwrap().rim, guest);
    }
}

#[test]
fn host_call_round_trip() {
    let mut p = Program::new();
    let s = p.host_call(0x42, &[1, 2, 3]);
    p.report(s);
    let (out, _, _) = run(&p, HashAlgorithm::Sha256, |r| {
        r.host_call_handler(|nr, args| [nr + args[0] + args[1] + args[2], 0]);
    });
    assert!(out.passed(), "{out:#?}");
    assert_eq!(out.host_calls.len(), 1);
    assert_eq!(out.host_calls[0].nr, 0x42);
    assert_eq!(&out.host_calls[0].args[..3], &[1, 2, 3]);
    assert_eq!(out.value(s), Some(0x48));
}

#[test]
fn ripas_change_accepted_and_rejected() {
    let page = Layout::standard().data + 0x1000;
    for accept in [true, false] {
        let mut p = Program::new();
        p.share(page, 0x1000);
        p.unshare(page, 0x1000);
        let (out, _, _) = run(&p, HashAlgorithm::Sha256, |r| {
            r.accept_conversions(accept);
        });
        assert!(out.done, "{out:#?}");
        assert_eq!(out.conversions.len(), 2, "{out:#?}");
        assert_eq!(out.passed(), accept, "{out:#?}");
    }
}

#[test]
fn entropy_comes_from_rndr() {
    let mut p = Program::new();
    let a = p.read_entropy();
    let b = p.read_entropy();
    p.report(a).report(b);
    let (out, _, _) = run(&p, HashAlgorithm::Sha256, |_| {});
    assert!(out.passed(), "{out:#?}");
    assert_ne!(out.value(a), out.value(b));
}
