//! Portable guest programs (cvm-core lowering to RV64) on the CoVE model.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::mpsc;

use backend_riscv_cove::abi;
use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::{CoveBackend, CovePlatform};
use cvm_core::guest::{launch, lower, GuestPlatform, Layout, Program, Runner};
use cvm_core::vm_memory::{Bytes, GuestAddress};
use cvm_core::{
    Backend, Confidentiality, EntropyPolicy, ExitKind, LaunchState, Measure, Resume, VcpuInit,
    VmConfig, VmExit,
};

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
    assert_eq!(replayed.to_host_measurement(), host);
    assert!(host.register("PCR17").is_none());
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

#[test]
fn guest_shared_page_is_the_vmms_memory() {
    const PATTERN: u64 = 0x2121_4445_5241_4853;
    const REPLY: u64 = 0x0123_4567_89AB_CDEF;
    let layout = Layout::standard();
    // A private page nothing was loaded into.
    let page = layout.data + 0x10_0000;
    let mut p = Program::new();
    p.share(page, 0x1000);
    // A plain store to the now shared page: memory, not an MMIO exit (the runner would
    // reject MMIO outside the doorbell and the test device).
    p.mmio_write(page, 8, PATTERN);
    p.host_call(0x51, &[]);
    let back = p.mem_read(page + 8, 8);
    p.report(back).unshare(page, 0x1000);
    let after = p.mem_read(page, 8);
    p.report(after);
    let m = std::sync::Arc::new(backend_riscv_cove::TsmModel::default());
    let b = CoveBackend::with_model(m.clone(), HostIsa::default());
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let vm = &*l.vm;
    assert!(vm
        .shared_memory()
        .read_obj::<u64>(GuestAddress(page))
        .is_err());
    let (mut at_host_call, mut at_unshare, mut detail) = (None, None, None);
    let out = Runner::new(&layout)
        .run_observed(l.vcpu.as_mut(), &mut |exit, _, v| match exit {
            VmExit::HostCall { .. } => {
                let mem = vm.shared_memory();
                at_host_call = mem.read_obj::<u64>(GuestAddress(page)).ok();
                mem.write_obj(REPLY, GuestAddress(page + 8)).unwrap();
            }
            VmExit::ConvertMemory {
                to_private: true, ..
            } => {
                at_unshare = vm.shared_memory().read_obj::<u64>(GuestAddress(page)).ok();
                detail = v.exit_detail();
            }
            _ => {}
        })
        .unwrap();
    assert!(out.passed(), "{:?}", out.failures());
    assert_eq!(at_host_call, Some(PATTERN));
    assert_eq!(at_unshare, Some(PATTERN));
    // The guest read what the VMM wrote; after UNSHARE the page is a fresh zero page.
    assert_eq!(out.value(back), Some(REPLY));
    assert_eq!(out.value(after), Some(0));
    assert!(out.device_writes.is_empty());
    assert_eq!(out.conversions.len(), 2);
    assert!(out.conversions.iter().all(|c| c.accepted));
    // No longer shared: gone from the VMM's view and unmapped from the TVM.
    assert!(vm
        .shared_memory()
        .read_obj::<u64>(GuestAddress(page))
        .is_err());
    assert_eq!(m.shared_pages(), 0);
    assert_eq!(vm.stats().calls_of("COVH_TVM_ADD_SHARED_PAGES"), 1);
    let d = detail.unwrap();
    assert_eq!(d.reason, "scause=10 (forwarded ecall)");
    assert_eq!(d.channel, "NACL scratch a0..a7");
    let reg = |n: &str| d.registers.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
    assert_eq!(reg("a7"), Some(u64::from(abi::EID_COVG)));
    assert_eq!(reg("a6"), Some(u64::from(abi::covg::UNSHARE_MEMORY)));
    assert_eq!(reg("scause"), Some(10));
    vm.destroy().unwrap();
    assert_eq!(m.confidential_pages(), 0);
    assert_eq!(m.pinned_user_ranges(), 0);
}

#[test]
fn exit_detail_of_mmio_is_the_nacl_view() {
    let layout = Layout::standard();
    let dev = layout.devices[0].0;
    let mut p = Program::new();
    let s = p.mmio_read(dev + 0x10, 4, true);
    p.report(s).mmio_write(dev + 0x18, 2, 0xBEEF);
    let b = CoveBackend::model();
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    assert!(l.vcpu.exit_detail().is_none());
    let mut details = Vec::new();
    let out = Runner::new(&layout)
        .run_observed(l.vcpu.as_mut(), &mut |exit, _, v| {
            if let VmExit::Mmio { gpa, .. } = exit {
                if *gpa >= dev && *gpa < dev + 0x1000 {
                    details.push(v.exit_detail().unwrap());
                }
            }
        })
        .unwrap();
    assert!(out.passed(), "{:?}", out.failures());
    assert_eq!(details.len(), 2);
    let reg = |d: &cvm_core::ExitDetail, n: &str| {
        d.registers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap()
    };
    let (load, store) = (&details[0], &details[1]);
    assert_eq!(load.reason, "scause=21 (load guest-page fault)");
    assert_eq!(load.channel, "NACL scratch a0 (0x50)");
    // Salus htinst: LW to a0 (spec/cove.md §4.2); fault address = htval << 2 | stval & 3.
    assert_eq!(reg(load, "htinst"), 0x2503);
    assert_eq!(
        (reg(load, "htval") << 2) | (reg(load, "stval") & 3),
        dev + 0x10
    );
    assert_eq!(store.reason, "scause=23 (store guest-page fault)");
    assert_eq!(store.channel, "NACL scratch a0 (0x50)");
    assert_eq!(reg(store, "htinst"), 0xa01023);
    assert!(store.registers.iter().all(|(k, _)| k != "a7"));
}

#[test]
fn launch_measurement_index_is_pcr2() {
    let layout = Layout::standard();
    let platform = CovePlatform;
    let index = platform.launch_measurement_index();
    assert_eq!(index, 2);
    let mut p = Program::new();
    p.read_measurement(index);
    let b = CoveBackend::model();
    let mut l = launch(&b, &cfg(), &p, &layout, Layout::standard_ram()).unwrap();
    let out = Runner::new(&layout).run(l.vcpu.as_mut()).unwrap();
    assert!(out.passed(), "{:?}", out.failures());
    assert_eq!(
        out.measurement(index),
        l.vm.measurement().unwrap().register("PCR2")
    );
}

/// Two vCPUs, each served by its own `Runner` on its own thread, as a VMM runs them. vCPU 0
/// (the boot hart) does MMIO, starts vCPU 1 with HSM HART_START (`start_vcpu`), waits in a
/// host call until vCPU 1 has done its own MMIO, then powers the system off. vCPU 1 runs its
/// own program (own code, data page, doorbell and device) and parks in a host call until the
/// system is off; its next run then finds the VM off, which is how a VMM's vCPU thread learns
/// that another vCPU shut the system down.
#[test]
fn two_vcpus_start_vcpu_each_with_its_own_runner() {
    const JOIN: u64 = 0x10;
    const PARK: u64 = 0x11;
    let ram = Layout::standard_ram();
    let l0 = Layout::standard();
    let l1 = Layout {
        code: Layout::STANDARD_RAM_BASE + 0x20_0000,
        data: Layout::STANDARD_RAM_BASE + 0x11_0000,
        doorbell: l0.doorbell + 0x1000,
        devices: vec![(l0.devices[0].0 + 0x1000, 0x1000)],
    };
    let (dev0, dev1) = (l0.devices[0].0, l1.devices[0].0);
    let mut c = cfg();
    c.vcpus = 2;
    let b = CoveBackend::model();
    let vm = b.create_vm(&c).unwrap();
    vm.add_memory(ram).unwrap();
    let platform = vm.guest_platform();

    let mut p1 = Program::new();
    p1.mmio_write(dev1, 4, 0xB1);
    let r1 = p1.mmio_read(dev1 + 8, 8, false);
    p1.report(r1);
    p1.host_call(PARK, &[]);
    let img1 = lower(&p1, platform.as_ref(), &l1).unwrap();

    let mut p0 = Program::new();
    p0.mmio_write(dev0, 4, 0xA0)
        .start_vcpu(1, img1.entry, 0x5EC0);
    let j = p0.host_call(JOIN, &[]);
    p0.report(j).mmio_write(dev0 + 4, 4, 0xA1);
    let img0 = lower(&p0, platform.as_ref(), &l0).unwrap();

    for (img, l) in [(&img0, &l0), (&img1, &l1)] {
        let mut code = img.code.clone();
        code.resize(code.len().next_multiple_of(4096), 0);
        vm.load(l.code, &code, Measure::Yes).unwrap();
        vm.load(l.data, &[0; 4096], Measure::Yes).unwrap();
    }
    let mut v0 = vm.create_vcpu(VcpuInit::boot(img0.entry, &[])).unwrap();
    let mut v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    // Before HART_START the secondary only halts, without entering the TSM.
    assert_eq!(v1.run(Resume::Done).unwrap(), VmExit::Halt);
    assert!(v1.exit_detail().unwrap().reason.starts_with("not started"));
    assert_eq!(vm.stats().calls_of("COVH_TVM_VCPU_RUN"), 0);

    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (parked_tx, parked_rx) = mpsc::channel::<()>();
    let (off_tx, off_rx) = mpsc::channel::<()>();
    let t1 = std::thread::spawn(move || {
        go_rx.recv().unwrap();
        let mut r = Runner::new(&l1);
        r.device_read(dev1 + 8, 0x1111_2222_3333_4444)
            .host_call_handler(move |nr, _| {
                if nr == PARK {
                    parked_tx.send(()).unwrap();
                    off_rx.recv().unwrap();
                }
                [0, 0]
            });
        let mut seen = Vec::new();
        let res = r.run_observed(v1.as_mut(), &mut |exit, _, _| seen.push(exit.clone()));
        (res, seen)
    });
    let mut r0 = Runner::new(&l0);
    r0.host_call_handler(move |nr, _| {
        if nr == JOIN {
            // vCPU 1 was started by the HART_START before this call.
            go_tx.send(()).unwrap();
            parked_rx.recv().unwrap();
        }
        [nr, 0]
    });
    let out0 = r0.run(v0.as_mut()).unwrap();
    off_tx.send(()).unwrap();
    let (res1, seen1) = t1.join().unwrap();

    assert!(out0.passed(), "{:?}", out0.failures());
    assert_eq!(out0.value(j), Some(JOIN));
    let w0: Vec<(u64, u8, u64)> = out0
        .device_writes
        .iter()
        .map(|w| (w.gpa, w.size, w.value))
        .collect();
    assert_eq!(w0, vec![(dev0, 4, 0xA0), (dev0 + 4, 4, 0xA1)]);
    assert_eq!(vm.state(), LaunchState::Off);

    // vCPU 0 powered the VM off while vCPU 1 was parked in its host call: vCPU 1 is told once.
    let out1 = res1.unwrap();
    assert_eq!(out1.end, VmExit::SystemOff);
    assert!(out1.powered_off && !out1.done, "{out1:?}");
    assert_eq!(out1.value(r1), Some(0x1111_2222_3333_4444));
    assert!(seen1.contains(&VmExit::Mmio {
        gpa: dev1,
        size: 4,
        write: Some(0xB1)
    }));
    assert!(seen1.contains(&VmExit::Mmio {
        gpa: dev1 + 8,
        size: 8,
        write: None
    }));
    assert!(seen1
        .iter()
        .any(|e| matches!(e, VmExit::HostCall { nr, .. } if *nr == PARK)));
    // vCPU 1's doorbell is its own page: no exit of vCPU 1 touched vCPU 0's.
    assert!(!seen1.iter().any(
        |e| matches!(e, VmExit::Mmio { gpa, .. } if *gpa >= l0.doorbell && *gpa < l0.doorbell + 0x1000)
    ));
}
