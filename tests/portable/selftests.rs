//! Mirrors of the kernel's KVM selftests, where a backend can express them:
//! `x86/private_mem_conversions_test.c`, `x86/private_mem_kvm_exits_test.c` and the host-side
//! region checks of `guest_memfd_test.c`.

use cvm::guest::{Layout, Program, RunError, Runner};
use cvm::vm_memory::{Bytes, GuestAddress};
use cvm::{
    Error, LaunchState, Measure, MemoryKind, MemoryRegion, RegionError, VcpuInit, VmExit, PAGE_SIZE,
};

use crate::harness::{build, shared_memory_contains, Env, RAM, RAM2, RAM_SIZE, SCRATCH};

crate::per_backend!(
    private_mem_conversions =>
    private_mem_conversions_kvm,
    private_mem_conversions_arm_cca,
    private_mem_conversions_riscv_cove
);
crate::per_backend!(
    private_mem_exits_without_backing =>
    private_mem_exits_without_backing_kvm,
    private_mem_exits_without_backing_arm_cca,
    private_mem_exits_without_backing_riscv_cove
);
crate::per_backend!(
    region_checks =>
    region_checks_kvm,
    region_checks_arm_cca,
    region_checks_riscv_cove
);

const PAGES: u64 = 4;
const PRIV_A: u64 = 0xA000_0000_0000_0000;
const PRIV_C: u64 = 0xC000_0000_0000_0000;
const SHARED_B: u64 = 0xB000_0000_0000_0000;

fn page(i: u64) -> u64 {
    SCRATCH + i * PAGE_SIZE
}

/// private_mem_conversions_test: a 4-page range is filled with private data, shared as a
/// whole, filled with shared data through the device alias, then converted back page by page
/// (the odd page first, then the rest in two sub-ranges). At every conversion request the host
/// sees exactly the shared data of the pages that are shared, and never any private data.
fn private_mem_conversions(env: &Env) {
    if env.skip_without_conversions() {
        return;
    }
    let layout = Layout::standard();
    let mut p = Program::new();
    for i in 0..PAGES {
        p.mem_write(page(i), 8, PRIV_A + i);
    }
    p.share(page(0), PAGES * PAGE_SIZE);
    for i in 0..PAGES {
        p.mmio_write(page(i), 8, SHARED_B + i);
    }
    for i in 0..PAGES {
        let s = p.mmio_read(page(i), 8, false);
        p.expect(s, SHARED_B + i);
    }
    // Convert the odd page back and use it privately while the others stay shared.
    p.unshare(page(1), PAGE_SIZE);
    p.mem_write(page(1), 8, PRIV_C + 1);
    let s1 = p.mem_read(page(1), 8);
    p.expect(s1, PRIV_C + 1);
    p.unshare(page(0), PAGE_SIZE);
    p.unshare(page(2), 2 * PAGE_SIZE);
    let mut tail = Vec::new();
    for i in [0, 2, 3] {
        p.mem_write(page(i), 8, PRIV_C + i);
        let s = p.mem_read(page(i), 8);
        p.expect(s, PRIV_C + i).report(s);
        tail.push((s, PRIV_C + i));
    }
    let mut l = env.launch(&p, &layout);
    let vm = l.vm.as_ref();
    let mut runner = Runner::new(&layout);
    runner.exit_budget(1000);
    // At each conversion request: (gpa, size, to_private, host view of each of the 4 pages).
    type Seen = (u64, u64, bool, Vec<Option<u64>>);
    let mut seen: Vec<Seen> = Vec::new();
    let result = runner.run_observed(l.vcpu.as_mut(), &mut |exit, _, _| {
        if let VmExit::ConvertMemory {
            gpa,
            size,
            to_private,
        } = *exit
        {
            let mem = vm.shared_memory();
            let views = (0..PAGES)
                .map(|i| mem.read_obj::<u64>(GuestAddress(page(i))).ok())
                .collect();
            seen.push((gpa, size, to_private, views));
        }
    });
    let out = result.unwrap_or_else(|e| {
        panic!(
            "{}: run failed: {e} ({e:?}); conversions seen {seen:x?}; exit detail {:?}",
            env.name(),
            l.vcpu.exit_detail()
        )
    });
    assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
    for (s, v) in tail {
        assert_eq!(out.value(s), Some(v));
    }
    let requests: Vec<(u64, u64, bool)> = seen.iter().map(|s| (s.0, s.1, s.2)).collect();
    assert_eq!(
        requests,
        vec![
            (page(0), PAGES * PAGE_SIZE, false),
            (page(1), PAGE_SIZE, true),
            (page(0), PAGE_SIZE, true),
            (page(2), 2 * PAGE_SIZE, true),
        ]
    );
    let private: Vec<u64> = (0..PAGES).flat_map(|i| [PRIV_A + i, PRIV_C + i]).collect();
    for (n, (_, _, _, views)) in seen.iter().enumerate() {
        for (i, v) in views.iter().enumerate() {
            assert!(
                !v.is_some_and(|v| private.contains(&v)),
                "{}: request {n}: private data visible at page {i}: {v:x?}",
                env.name()
            );
        }
    }
    // Which pages are shared when each unshare request arrives.
    let shared_at: [&[u64]; 3] = [&[0, 1, 2, 3], &[0, 2, 3], &[2, 3]];
    for (k, pages) in shared_at.iter().enumerate() {
        let views = &seen[k + 1].3;
        for &i in *pages {
            assert_eq!(
                views[i as usize],
                Some(SHARED_B + i),
                "{}: at unshare request {k} the host must see page {i}'s shared data",
                env.name()
            );
        }
    }
    let vm = l.vm.as_ref();
    for v in private {
        assert!(!shared_memory_contains(vm, &v.to_le_bytes()), "{v:#x}");
    }
}

/// private_mem_kvm_exits_test: the region behind a guest access is removed after the launch
/// (the selftest deletes the memslot). What each backend reports, with the exact address:
/// confidential backends stop the vCPU with a `Fault` naming it (there is nothing to emulate
/// in protected space); plain KVM, where the range was ordinary memory, exits with an MMIO
/// read of that address and size, which the runner does not serve.
fn private_mem_exits_without_backing(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    let s = p.mem_read(RAM2 + 0x40, 8);
    p.report(s);
    let extra = MemoryRegion {
        kind: env.ram_kind(),
        ..MemoryRegion::shared(RAM2, 4 * PAGE_SIZE)
    };
    let (vm, mut vcpu) = build(env, &p, &layout, &[extra]);
    let removed = vm.remove_memory(RAM2).unwrap_or_else(|e| {
        panic!(
            "{}: remove_memory of a {:?} region after finalize: {e}",
            env.name(),
            extra.kind
        )
    });
    assert_eq!(removed, extra);
    assert_eq!(vm.regions(), vec![env.ram()]);
    let mut runner = Runner::new(&layout);
    runner.exit_budget(100);
    let result = runner.run(vcpu.as_mut());
    if env.confidential() {
        let out = result.unwrap_or_else(|e| panic!("{}: {e} ({e:?})", env.name()));
        assert!(!out.done && !out.powered_off, "{}: {out:#?}", env.name());
        match &out.end {
            VmExit::Fault { reason, .. } => assert!(
                reason.contains(&format!("{:#x}", RAM2 + 0x40))
                    || reason.contains(&format!("{RAM2:#x}")),
                "{}: the fault should name the address: {reason}",
                env.name()
            ),
            other => panic!("{}: expected a Fault, got {other:?}", env.name()),
        }
        assert_eq!(vm.state(), LaunchState::Finalized);
        println!(
            "{}: access without backing → {:?}; detail {:?}",
            env.name(),
            out.end,
            vcpu.exit_detail()
        );
    } else {
        match result {
            Err(RunError::UnexpectedMmio { gpa, size, write }) => {
                assert_eq!((gpa, size, write), (RAM2 + 0x40, 8, false));
            }
            other => panic!("{}: expected an MMIO read exit, got {other:?}", env.name()),
        }
        assert_eq!(
            vcpu.pending(),
            Some(&VmExit::Mmio {
                gpa: RAM2 + 0x40,
                size: 8,
                write: None
            })
        );
    }
}

/// guest_memfd_test's host-side checks as region rules: misaligned, empty, overflowing,
/// overlapping and out-of-range regions are typed errors that change nothing; read-only
/// regions on confidential VMs, private memory where unsupported and late private regions
/// are refused; two VMs' regions at the same address are independent.
fn region_checks(env: &Env) {
    let vm = env.backend().create_vm(&env.config()).expect("create_vm");
    let bits = vm.addr_bits();
    let ram = env.ram();
    vm.add_memory(ram).expect("add RAM");
    let check = |region: MemoryRegion, want: RegionError| match vm.add_memory(region) {
        Err(Error::Region(e)) => assert_eq!(e, want, "{}: {region:x?}", env.name()),
        other => panic!("{}: {region:x?} gave {other:?}", env.name()),
    };
    let top = 1u64 << bits;
    check(
        MemoryRegion::shared(RAM2 + 0x800, 0x1000),
        RegionError::Misaligned {
            gpa: RAM2 + 0x800,
            size: 0x1000,
        },
    );
    check(
        MemoryRegion::shared(RAM2, 0x1800),
        RegionError::Misaligned {
            gpa: RAM2,
            size: 0x1800,
        },
    );
    check(
        MemoryRegion::shared(RAM2, 0),
        RegionError::Empty { gpa: RAM2 },
    );
    check(
        MemoryRegion::shared(u64::MAX - 0xFFF, 0x2000),
        RegionError::Overflow {
            gpa: u64::MAX - 0xFFF,
            size: 0x2000,
        },
    );
    check(
        MemoryRegion::shared(top, 0x1000),
        RegionError::BeyondAddressWidth {
            gpa: top,
            size: 0x1000,
            bits,
        },
    );
    check(
        MemoryRegion::shared(top - 0x1000, 0x2000),
        RegionError::BeyondAddressWidth {
            gpa: top - 0x1000,
            size: 0x2000,
            bits,
        },
    );
    for (gpa, size) in [
        (RAM + 0x1000, 0x1000),
        (RAM - 0x1000, 0x2000),
        (RAM, RAM_SIZE),
    ] {
        check(
            MemoryRegion::shared(gpa, size),
            RegionError::Overlap {
                gpa,
                size,
                existing: RAM,
            },
        );
    }
    let ro = MemoryRegion {
        read_only: true,
        ..MemoryRegion::shared(RAM2, 0x1000)
    };
    if env.confidential() {
        check(ro, RegionError::ReadOnlyConfidential);
    }
    if !env.info.private_memory {
        match vm.add_memory(MemoryRegion::private(RAM2, 0x1000)) {
            Err(Error::Region(RegionError::KindUnsupported {
                kind: MemoryKind::Private,
                ..
            })) => {}
            other => panic!("{}: private region gave {other:?}", env.name()),
        }
    }
    assert!(matches!(
        vm.remove_memory(RAM2),
        Err(Error::Region(RegionError::NotFound { gpa: RAM2 }))
    ));
    assert!(matches!(
        vm.remove_memory(RAM + 0x1000),
        Err(Error::Region(RegionError::NotFound { .. }))
    ));
    // Loads: zero bytes, measured at a non-page boundary, outside every region.
    assert!(matches!(
        vm.load(RAM, &[], Measure::Yes),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        vm.load(RAM + 8, &[1; 8], Measure::Yes),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        vm.load(RAM2, &[1; 8], Measure::Yes),
        Err(Error::NotMapped { gpa: RAM2, .. })
    ));
    assert!(matches!(
        vm.load(RAM + RAM_SIZE - 4, &[1; 8], Measure::No),
        Err(Error::NotMapped { .. })
    ));
    // Nothing above changed anything.
    assert_eq!(vm.regions(), vec![ram], "{}", env.name());
    assert!(vm.measurement_log().events.iter().all(|e| !matches!(
        e,
        cvm::MeasurementEvent::Data { .. }
            | cvm::MeasurementEvent::MeasuredPages { .. }
            | cvm::MeasurementEvent::Load { .. }
    )));

    // A second VM with a region at the same address is independent of the first.
    let other = env.backend().create_vm(&env.config()).expect("second VM");
    other.add_memory(ram).expect("same GPA in another VM");
    other
        .add_memory(MemoryRegion::shared(RAM2, 0x1000))
        .expect("shared region");
    other
        .shared_memory()
        .write_obj(0x1122_3344u32, GuestAddress(RAM2))
        .expect("host write");
    assert!(!shared_memory_contains(
        vm.as_ref(),
        &0x1122_3344u32.to_le_bytes()
    ));
    other.remove_memory(RAM2).expect("remove");
    drop(other);
    assert_eq!(vm.regions(), vec![ram]);

    // After finalize: no private regions, no vCPUs; a shared region can still come and go.
    vm.load(RAM, &[0; 0x1000], Measure::Yes).expect("load");
    let _vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).expect("vcpu");
    vm.finalize().expect("finalize");
    if env.info.private_memory {
        assert!(matches!(
            vm.add_memory(MemoryRegion::private(RAM2, 0x1000)),
            Err(Error::InvalidState {
                state: LaunchState::Finalized,
                ..
            })
        ));
    }
    vm.add_memory(MemoryRegion::shared(RAM2, 0x1000))
        .expect("shared region after finalize");
    assert_eq!(vm.regions().len(), 2);
    vm.remove_memory(RAM2).expect("remove shared region");
    assert_eq!(vm.regions(), vec![ram]);
    // Host conversions: ranges are checked before the backend sees them.
    assert!(matches!(
        vm.convert(RAM + 0x10, 0x1000, MemoryKind::Shared),
        Err(Error::Region(RegionError::Misaligned { .. }))
    ));
    assert!(matches!(
        vm.convert(RAM2, 0x1000, MemoryKind::Shared),
        Err(Error::NotMapped { .. })
    ));
    vm.destroy().expect("destroy");
    assert!(vm.regions().is_empty());
    assert!(matches!(
        vm.add_memory(MemoryRegion::shared(RAM2, 0x1000)),
        Err(Error::InvalidState {
            state: LaunchState::Off,
            ..
        })
    ));
}
