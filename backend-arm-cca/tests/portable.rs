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

#[test]
fn shared_pages_are_memory_behind_the_alias_and_the_vmm_sees_them() {
    use cvm_core::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
    use cvm_core::VmExit;
    const PATTERN: u64 = 0x5A5A_1234_C0DE_F00D;
    const FROM_VMM: u64 = 0xFEED_FACE;
    let page = Layout::standard().data + 0x1000;
    let mut p = Program::new();
    p.share(page, 0x1000);
    // MMIO ops go through device_address, i.e. the unprotected alias: shared memory now.
    p.mmio_write(page, 8, PATTERN);
    let back = p.mmio_read(page, 8, false);
    // The VMM writes the shared page while it handles this call.
    p.host_call(7, &[]);
    let vmm = p.mmio_read(page + 8, 8, false);
    p.report(back).report(vmm);
    p.unshare(page, 0x1000);
    // Private again: a fresh page (populated on first touch), not the shared bytes.
    let after = p.mem_read(page, 8);
    p.report(after);
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let layout = Layout::standard();
    let cvm_core::guest::Launched { vm, mut vcpu, .. } = launch(
        &backend,
        &cfg(HashAlgorithm::Sha256),
        &p,
        &layout,
        Layout::standard_ram(),
    )
    .unwrap();
    // Private memory's shared backing is not mapped anywhere yet.
    assert_eq!(vm.stats().calls_of("RMI_RTT_MAP_UNPROTECTED"), 0);
    // (to_private, host view of the page) at each conversion request.
    let mut host_saw = Vec::new();
    let vm_ref: &dyn cvm_core::Vm = vm.as_ref();
    let out = Runner::new(&layout)
        .run_observed(vcpu.as_mut(), &mut |exit, _, _| {
            let mem = vm_ref.shared_memory();
            match exit {
                VmExit::ConvertMemory {
                    gpa, to_private, ..
                } => {
                    assert_eq!(*gpa, page);
                    host_saw.push((*to_private, mem.read_obj::<u64>(GuestAddress(page)).ok()));
                }
                VmExit::HostCall { nr: 7, .. } => {
                    mem.write_obj(FROM_VMM, GuestAddress(page + 8)).unwrap();
                }
                _ => {}
            }
        })
        .unwrap();
    assert!(out.passed(), "{out:#?}");
    // Private at the share request (no host view), the realm's bytes at the unshare request.
    assert_eq!(host_saw, vec![(false, None), (true, Some(PATTERN))]);
    assert!(
        !vm.shared_memory().address_in_range(GuestAddress(page)),
        "private again: not in shared_memory()"
    );
    assert_eq!(out.value(back), Some(PATTERN));
    assert_eq!(
        out.value(vmm),
        Some(FROM_VMM),
        "the realm sees the VMM's bytes"
    );
    assert_eq!(out.value(after), Some(0));
    // The accesses through the alias hit memory: the only non-doorbell exits are the two
    // conversions.
    assert_eq!(out.exits_of(cvm_core::ExitKind::ConvertMemory), 2);
    assert_eq!(out.exits_of(cvm_core::ExitKind::HostCall), 1);
    assert_eq!(out.exits_of(cvm_core::ExitKind::MmioRead), 0);
    assert!(out.device_writes.is_empty());
    let stats = vm.stats();
    assert_eq!(stats.calls_of("RMI_RTT_MAP_UNPROTECTED"), 1);
    assert_eq!(stats.calls_of("RMI_RTT_UNMAP_UNPROTECTED"), 1);
    vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
    assert_eq!(rmm.host_granules(), 0);
    assert_eq!(rmm.host_windows(), 0);
}

#[test]
fn conversions_failing_at_each_rmi_call_leave_nothing_behind() {
    use backend_arm_cca::FailNth;
    let page = Layout::standard().data + 0x1000;
    let mut p = Program::new();
    p.share(page, 0x2000);
    p.mmio_write(page + 0x1000, 8, 1);
    p.unshare(page + 0x1000, 0x1000);
    p.unshare(page, 0x1000);
    // A block split by a partial unshare.
    let half = Layout::STANDARD_RAM_BASE + 0x20_0000;
    p.share(half, 0x20_0000);
    p.mmio_write(half + 0x3000, 8, 2);
    p.unshare(half + 0x1000, 0x1000);
    let attempt = |rmi: Arc<dyn backend_arm_cca::Rmi>| -> bool {
        let backend = CcaBackend::with_rmi(rmi);
        let layout = Layout::standard();
        let Ok(mut l) = launch(
            &backend,
            &cfg(HashAlgorithm::Sha256),
            &p,
            &layout,
            Layout::standard_ram(),
        ) else {
            return false;
        };
        let ok = Runner::new(&layout)
            .run(l.vcpu.as_mut())
            .is_ok_and(|o| o.passed());
        ok && l.vm.destroy().is_ok()
    };
    let rmm = Rmm::shared();
    let counter = Arc::new(FailNth::new(Arc::clone(&rmm), 0));
    assert!(attempt(counter.clone()));
    let total = counter.calls();
    for n in 1..=total {
        let rmm = Rmm::shared();
        let _ = attempt(Arc::new(FailNth::new(Arc::clone(&rmm), n)));
        assert_eq!(rmm.delegated_granules(), 0, "failure at call {n}");
        assert_eq!(rmm.host_granules(), 0, "failure at call {n}");
        assert_eq!(rmm.host_windows(), 0, "failure at call {n}");
        assert_eq!(rmm.realms(), 0, "failure at call {n}");
    }
}

#[test]
fn exit_detail_names_the_rec_exit_and_the_channel() {
    use cvm_core::{ExitDetail, VmExit};
    let dev = Layout::standard().devices[0].0;
    let page = Layout::standard().data + 0x1000;
    let mut p = Program::new();
    p.mmio_write(dev + 0x100, 4, 0xDEAD_BEEF);
    let r = p.mmio_read(dev + 0x8, 2, true);
    p.report(r);
    let h = p.host_call(0x42, &[1]);
    p.report(h);
    p.share(page, 0x1000);
    p.unshare(page, 0x1000);
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(rmm);
    let layout = Layout::standard();
    let mut l = launch(
        &backend,
        &cfg(HashAlgorithm::Sha256),
        &p,
        &layout,
        Layout::standard_ram(),
    )
    .unwrap();
    assert_eq!(l.vcpu.exit_detail(), None, "before the first run");
    let mut seen: Vec<(VmExit, ExitDetail)> = Vec::new();
    let out = Runner::new(&layout)
        .run_observed(l.vcpu.as_mut(), &mut |exit, _, v| {
            seen.push((exit.clone(), v.exit_detail().unwrap()));
        })
        .unwrap();
    assert!(out.passed(), "{out:#?}");
    let reg =
        |d: &ExitDetail, name: &str| d.registers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let top = 1u64 << 39;
    let detail_of = |pred: &dyn Fn(&VmExit) -> bool| {
        seen.iter()
            .find(|(e, _)| pred(e))
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    // MMIO write: ESR (EC 0x24, ISV, WnR, SAS = word), page offset in FAR, the alias in HPFAR,
    // the value in RecExit.gprs[0].
    let w = detail_of(
        &|e| matches!(e, VmExit::Mmio { gpa, write: Some(_), .. } if *gpa == dev + 0x100),
    );
    assert_eq!(w.reason, "RMI_EXIT_SYNC (data abort)");
    assert_eq!(w.channel, "RecExit.gprs[0]");
    let esr = reg(&w, "esr").unwrap();
    assert_eq!(esr >> 26, 0x24);
    assert_ne!(esr & (1 << 24), 0, "ISV");
    assert_ne!(esr & (1 << 6), 0, "WnR");
    assert_eq!((esr >> 22) & 3, 2, "SAS word");
    assert_eq!(reg(&w, "far"), Some(0x100));
    assert_eq!(reg(&w, "hpfar").map(|h| (h >> 4) << 12), Some(dev | top));
    assert_eq!(reg(&w, "gprs[0]"), Some(0xDEAD_BEEF));
    // MMIO read: no value in the exit; the answer travels in RecEntry.gprs[0].
    let rd = detail_of(&|e| matches!(e, VmExit::Mmio { write: None, .. }));
    assert_eq!(rd.channel, "RecEntry.gprs[0] + EMULATED_MMIO");
    assert_eq!(reg(&rd, "gprs[0]"), None);
    assert_eq!(reg(&rd, "esr").map(|e| e & (1 << 6)), Some(0));
    assert_eq!(reg(&rd, "far"), Some(0x8));
    // Host call and RIPAS changes.
    let hc = detail_of(&|e| matches!(e, VmExit::HostCall { .. }));
    assert_eq!(hc.reason, "RMI_EXIT_HOST_CALL");
    assert_eq!(reg(&hc, "imm"), Some(0x42));
    assert!(hc.channel.starts_with("RsiHostCall.gprs"));
    let share = detail_of(&|e| {
        matches!(
            e,
            VmExit::ConvertMemory {
                to_private: false,
                ..
            }
        )
    });
    assert_eq!(share.reason, "RMI_EXIT_RIPAS_CHANGE");
    assert_eq!(reg(&share, "ripas_base"), Some(page));
    assert_eq!(reg(&share, "ripas_top"), Some(page + 0x1000));
    assert_eq!(reg(&share, "ripas_value"), Some(0));
    let unshare = detail_of(&|e| {
        matches!(
            e,
            VmExit::ConvertMemory {
                to_private: true,
                ..
            }
        )
    });
    assert_eq!(reg(&unshare, "ripas_value"), Some(1));
    // Power-off.
    let off = detail_of(&|e| matches!(e, VmExit::SystemOff));
    assert_eq!(off.reason, "RMI_EXIT_PSCI");
    assert_eq!(reg(&off, "gprs[0]"), Some(0x8400_0008));
}

/// vCPU 0 does MMIO, starts vCPU 1 with PSCI CPU_ON (RMI_PSCI_COMPLETE by the host) and
/// finishes its program; vCPU 1, lowered for its own code and data pages, then runs under its
/// own `Runner`, does its MMIO and powers the realm off. A SystemOff from either vCPU powers
/// the whole VM off, so only one program can run to its power-off: vCPU 0's run ends with
/// `InvalidState(Off)` by design and its reports are decoded from the exits it took.
#[test]
fn two_vcpus_each_with_its_program_and_runner() {
    use cvm_core::guest::doorbell::DoorbellState;
    use cvm_core::guest::lower;
    use cvm_core::{Backend, Measure, MemoryRegion, VcpuInit, VmExit};
    let layout0 = Layout::standard();
    let dev = layout0.devices[0].0;
    let ram = Layout::STANDARD_RAM_BASE;
    let layout1 = Layout {
        code: ram + 0x20_0000,
        data: ram + 0x30_0000,
        ..Layout::standard()
    };
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let config = VmConfig {
        vcpus: 2,
        ..cfg(HashAlgorithm::Sha256)
    };
    let vm = backend.create_vm(&config).unwrap();
    vm.add_memory(MemoryRegion::private(ram, Layout::STANDARD_RAM_SIZE))
        .unwrap();
    let platform = vm.guest_platform();
    // vCPU 1: its own MMIO write and read, reported through the doorbell.
    let mut p1 = Program::new();
    p1.mmio_write(dev + 0x10, 8, 0xB1);
    let s1 = p1.mmio_read(dev + 0x18, 8, false);
    p1.report(s1);
    let image1 = lower(&p1, platform.as_ref(), &layout1).unwrap();
    // vCPU 0: MMIO, then PSCI CPU_ON of vCPU 1 at its entry, then more MMIO.
    let mut p0 = Program::new();
    p0.mmio_write(dev, 8, 0xA0);
    p0.start_vcpu(1, image1.entry, 0x5EC0);
    let s0 = p0.mmio_read(dev + 0x8, 8, false);
    p0.report(s0);
    let image0 = lower(&p0, platform.as_ref(), &layout0).unwrap();
    let page = |code: &[u8]| {
        let mut c = code.to_vec();
        c.resize(c.len().next_multiple_of(4096), 0);
        c
    };
    // Loaded in descending order; issued ascending at finalize.
    vm.load(layout1.data, &[0; 4096], Measure::Yes).unwrap();
    vm.load(layout1.code, &page(&image1.code), Measure::Yes)
        .unwrap();
    vm.load(layout0.data, &[0; 4096], Measure::Yes).unwrap();
    vm.load(layout0.code, &page(&image0.code), Measure::Yes)
        .unwrap();
    let mut v0 = vm.create_vcpu(VcpuInit::boot(image0.entry, &[])).unwrap();
    let mut v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
    vm.finalize().unwrap();
    // Not started yet.
    assert_eq!(v1.run(cvm_core::Resume::Done).unwrap(), VmExit::Halt);

    let mut runner0 = Runner::new(&layout0);
    runner0.device_read(dev + 0x8, 0xA8);
    let mut runner1 = Runner::new(&layout1);
    runner1.device_read(dev + 0x18, 0xB8);
    // vCPU 0's doorbell as the runner sees it (its outcome is lost when vCPU 1 powers off).
    let mut bell0 = DoorbellState::default();
    let mut writes0 = Vec::new();
    let mut out1 = None;
    let r0 = runner0.run_observed(v0.as_mut(), &mut |exit, _, _| {
        if let VmExit::Mmio {
            gpa,
            size,
            write: Some(v),
        } = exit
        {
            if (layout0.doorbell..layout0.doorbell + 4096).contains(gpa) {
                bell0.write(gpa - layout0.doorbell, *size, *v).unwrap();
                // vCPU 0 has finished its program: run vCPU 1 (started by CPU_ON) to its end,
                // which powers the realm off.
                if bell0.done && out1.is_none() {
                    out1 = Some(runner1.run(v1.as_mut()).unwrap());
                }
            } else {
                writes0.push((*gpa, *v));
            }
        }
    });
    // vCPU 1 powered the system off; vCPU 0 is told so once, without being entered again.
    let out0 = r0.unwrap();
    assert_eq!(out0.end, VmExit::SystemOff);
    assert!(out0.powered_off && out0.done);
    assert_eq!(out0.reports, bell0.reports);
    assert!(
        bell0.done && bell0.reports.iter().all(|r| !r.is_failure()),
        "{bell0:?}"
    );
    assert_eq!(
        bell0.reports,
        vec![cvm_core::guest::Report::Value {
            slot: s0,
            value: 0xA8
        }]
    );
    assert_eq!(writes0, vec![(dev, 0xA0)]);
    let out1 = out1.unwrap();
    assert!(out1.passed(), "{out1:#?}");
    assert_eq!(out1.value(s1), Some(0xB8));
    assert_eq!(
        out1.device_writes
            .iter()
            .map(|w| (w.gpa, w.value))
            .collect::<Vec<_>>(),
        vec![(dev + 0x10, 0xB1)]
    );
    assert_eq!(vm.stats().calls_of("RMI_PSCI_COMPLETE"), 1);
    // The launch measured both programs, sorted by IPA, and replays to the RMM's RIM.
    let log = vm.measurement_log();
    let rd = rmm.realm_rds()[0];
    assert_eq!(
        replay(&log).unwrap().rim,
        rmm.realm_measurement(rd).unwrap().rim
    );
    drop((v0, v1));
    vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
}

#[test]
fn unsharing_part_of_a_shared_block_keeps_the_rest_mapped() {
    use cvm_core::vm_memory::{Bytes, GuestAddress};
    // The second 2 MiB of RAM is shared as one level-2 block; unsharing one page inside
    // splits it (RMI_RTT_CREATE) and the rest stays memory behind the alias.
    let half = Layout::STANDARD_RAM_BASE + 0x20_0000;
    let mut p = Program::new();
    p.share(half, 0x20_0000);
    p.mmio_write(half + 0x1000, 8, 0x11);
    p.unshare(half + 0x1000, 0x1000);
    p.mmio_write(half + 0x10_0000, 8, 0x22);
    let a = p.mmio_read(half + 0x10_0000, 8, false);
    p.report(a);
    p.share(half + 0x1000, 0x1000);
    let b = p.mmio_read(half + 0x1000, 8, false);
    p.report(b);
    let rmm = Rmm::shared();
    let backend = CcaBackend::with_model(Arc::clone(&rmm));
    let layout = Layout::standard();
    let mut l = launch(
        &backend,
        &cfg(HashAlgorithm::Sha256),
        &p,
        &layout,
        Layout::standard_ram(),
    )
    .unwrap();
    let out = Runner::new(&layout).run(l.vcpu.as_mut()).unwrap();
    assert!(out.passed(), "{out:#?}");
    assert_eq!(out.exits_of(cvm_core::ExitKind::ConvertMemory), 3);
    assert!(out.device_writes.is_empty());
    assert_eq!(out.value(a), Some(0x22));
    // The page was shared again: the backing still holds what the realm wrote before.
    assert_eq!(out.value(b), Some(0x11));
    let mem = l.vm.shared_memory();
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(half + 0x10_0000)).unwrap(),
        0x22
    );
    let stats = l.vm.stats();
    // One block, then the re-shared page; one page unmapped.
    assert_eq!(stats.calls_of("RMI_RTT_MAP_UNPROTECTED"), 2);
    assert_eq!(stats.calls_of("RMI_RTT_UNMAP_UNPROTECTED"), 1);
    l.vm.destroy().unwrap();
    assert_eq!(rmm.delegated_granules(), 0);
    assert_eq!(rmm.host_windows(), 0);
}
