//! Private memory stays private; share → unshare with the host seeing the shared bytes;
//! rejected conversions; a VMM shared region seen from both sides.

use cvm::guest::{Layout, PlatformOp, Program, Report};
use cvm::vm_memory::{Bytes, GuestAddress};
use cvm::{Error, ExitKind, Measure, MemoryKind, MemoryRegion, RegionError, VmExit};

use crate::harness::{
    host_maps, host_view, shared_memory_contains, Env, Which, SCRATCH, SHARED_GPA,
};

crate::per_backend!(
    private_memory_is_private =>
    private_memory_is_private_kvm,
    private_memory_is_private_arm_cca,
    private_memory_is_private_riscv_cove
);
crate::per_backend!(
    share_then_unshare =>
    share_then_unshare_kvm,
    share_then_unshare_arm_cca,
    share_then_unshare_riscv_cove
);
crate::per_backend!(
    rejected_share_is_honoured =>
    rejected_share_is_honoured_kvm,
    rejected_share_is_honoured_arm_cca,
    rejected_share_is_honoured_riscv_cove
);
crate::per_backend!(
    shared_region_seen_both_ways =>
    shared_region_seen_both_ways_kvm,
    shared_region_seen_both_ways_arm_cca,
    shared_region_seen_both_ways_riscv_cove
);

const PRIV: [u64; 4] = [
    0x9A1E_0000_0000_0001,
    0x9A1E_0000_0000_0002,
    0x9A1E_0000_0000_0003,
    0x9A1E_0000_0000_0004,
];

/// The honest refusal of private memory where the backend lacks it; returns whether the
/// caller should skip.
fn private_memory_refused(env: &Env) -> bool {
    if env.info.private_memory {
        return false;
    }
    let vm = env.backend().create_vm(&env.config()).expect("create_vm");
    match vm.add_memory(Layout::standard_ram()) {
        Err(Error::Region(RegionError::KindUnsupported {
            kind: MemoryKind::Private,
            reason,
        })) => {
            assert!(vm.regions().is_empty());
            env.skip(format!("private memory unsupported: {reason}"));
            true
        }
        other => panic!(
            "{}: BackendInfo says no private memory, but add_memory(private) gave {other:?}",
            env.name()
        ),
    }
}

/// Guest writes to private RAM survive and read back; no host API returns the bytes: the
/// range is not in `shared_memory()`, reading it through vm-memory fails, no shared region
/// holds them, and the host cannot load into it after the launch.
fn private_memory_is_private(env: &Env) {
    if private_memory_refused(env) {
        return;
    }
    let layout = Layout::standard();
    let mut p = Program::new();
    let mut slots = Vec::new();
    for (i, &v) in PRIV.iter().enumerate() {
        p.mem_write(SCRATCH + 8 * i as u64, 8, v);
    }
    for (i, &v) in PRIV.iter().enumerate() {
        let s = p.mem_read(SCRATCH + 8 * i as u64, 8);
        p.expect(s, v).report(s);
        slots.push(s);
    }
    let mut l = env.launch(&p, &layout);
    let vm = l.vm.as_ref();
    // A VMM shared region next to it, so there is shared memory to search.
    vm.add_memory(MemoryRegion::shared(SHARED_GPA, 0x2000))
        .expect("add shared region after finalize");
    assert!(vm
        .regions()
        .iter()
        .any(|r| r.gpa == Layout::STANDARD_RAM_BASE && r.kind == MemoryKind::Private));
    // The host cannot put bytes into private memory after the launch.
    match vm.load(SCRATCH, &[0xEE; 8], Measure::No) {
        Err(Error::InvalidState { .. } | Error::Unsupported(_)) => {}
        other => panic!(
            "{}: host load into private memory gave {other:?}",
            env.name()
        ),
    }
    let mut runner = cvm::guest::Runner::new(&layout);
    let out = runner.run(l.vcpu.as_mut()).expect("run");
    assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
    for (s, v) in slots.iter().zip(PRIV) {
        assert_eq!(out.value(*s), Some(v));
    }
    let vm = l.vm.as_ref();
    for v in PRIV {
        assert!(
            !shared_memory_contains(vm, &v.to_le_bytes()),
            "{}: private data {v:#x} visible in shared memory",
            env.name()
        );
    }
    let view = host_view(vm, SCRATCH);
    assert_ne!(view, Some(PRIV[0]), "{}", env.name());
    assert!(
        !host_maps(vm, SCRATCH) && view.is_none(),
        "{}: shared_memory() covers the private GPA {SCRATCH:#x} (a vm-memory read there gives \
         {view:#x?}); private memory must never appear in shared_memory(), so that a device \
         model touching it fails instead of silently using memory the guest does not see",
        env.name()
    );
    assert!(vm
        .shared_memory()
        .read_obj::<u64>(GuestAddress(Layout::STANDARD_RAM_BASE))
        .is_err());
}

const SHARED_PAT: u64 = 0x5AFE_5AFE_0000_0001;
const SHARED_PAT2: u32 = 0x1234_5678;

/// The guest writes private data, shares the page, writes through the device alias (how a
/// realm reaches shared memory), reads it back, unshares and writes private data again. At
/// the share request the host must not see the private data; at the unshare request it sees
/// the shared bytes; after the run it never sees the later private data.
fn share_then_unshare(env: &Env) {
    if env.skip_without_conversions() {
        return;
    }
    let layout = Layout::standard();
    let page = SCRATCH;
    let mut p = Program::new();
    p.mem_write(page, 8, PRIV[0]);
    p.share(page, 0x1000);
    p.mmio_write(page, 8, SHARED_PAT);
    p.mmio_write(page + 8, 4, u64::from(SHARED_PAT2));
    let s = p.mmio_read(page, 8, false);
    p.expect(s, SHARED_PAT).report(s);
    p.unshare(page, 0x1000);
    p.mem_write(page, 8, PRIV[1]);
    let t = p.mem_read(page, 8);
    p.expect(t, PRIV[1]).report(t);
    let mut l = env.launch(&p, &layout);
    let mut runner = cvm::guest::Runner::new(&layout);
    runner.exit_budget(1000);
    let vm = l.vm.as_ref();
    // (to_private, host view of the page, host view of page + 8) at each conversion request.
    let mut seen: Vec<(bool, Option<u64>, Option<u32>)> = Vec::new();
    let result = runner.run_observed(l.vcpu.as_mut(), &mut |exit, _, _| {
        if let VmExit::ConvertMemory { to_private, .. } = *exit {
            let mem = vm.shared_memory();
            seen.push((
                to_private,
                mem.read_obj::<u64>(GuestAddress(page)).ok(),
                mem.read_obj::<u32>(GuestAddress(page + 8)).ok(),
            ));
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
    assert_eq!(out.value(s), Some(SHARED_PAT));
    assert_eq!(out.value(t), Some(PRIV[1]));
    let conv: Vec<(u64, u64, bool, bool)> = out
        .conversions
        .iter()
        .map(|c| (c.gpa, c.size, c.to_private, c.accepted))
        .collect();
    assert_eq!(
        conv,
        vec![(page, 0x1000, false, true), (page, 0x1000, true, true)]
    );
    assert_eq!(seen.len(), 2, "{}: {seen:x?}", env.name());
    assert_ne!(
        seen[0].1,
        Some(PRIV[0]),
        "{}: private data visible to the host before sharing",
        env.name()
    );
    assert_eq!(
        (seen[1].1, seen[1].2),
        (Some(SHARED_PAT), Some(SHARED_PAT2)),
        "{}: the host must see the guest's shared data at the unshare request",
        env.name()
    );
    let vm = l.vm.as_ref();
    assert_ne!(host_view(vm, page), Some(PRIV[1]));
    for v in PRIV {
        assert!(!shared_memory_contains(vm, &v.to_le_bytes()), "{v:#x}");
    }
}

/// A share the host rejects: the guest's share step reports the platform's failure, the page
/// stays private (its data survives and the host never sees it) and the run ends normally.
fn rejected_share_is_honoured(env: &Env) {
    if env.skip_without_conversions() {
        return;
    }
    let layout = Layout::standard();
    let page = SCRATCH;
    let mut p = Program::new();
    p.mem_write(page, 8, PRIV[2]); // op 0
    p.share(page, 0x1000); // op 1
    let s = p.mem_read(page, 8);
    p.expect(s, PRIV[2]).report(s);
    let (out, l) = env.run(&p, &layout, |r| {
        r.accept_conversions(false);
    });
    assert!(out.done && out.powered_off, "{}: {out:#?}", env.name());
    assert_eq!(
        out.value(s),
        Some(PRIV[2]),
        "{}: the page stays private",
        env.name()
    );
    assert_eq!(out.conversions.len(), 1);
    assert!(!out.conversions[0].accepted && !out.conversions[0].to_private);
    let failures: Vec<(PlatformOp, u16, u16, u64, u64)> = out
        .failures()
        .into_iter()
        .map(|r| match r {
            Report::PlatformFailed {
                op,
                step,
                position,
                expected,
                actual,
            } => (*op, *step, *position, *expected, *actual),
            other => panic!("{}: unexpected failure {other:?}", env.name()),
        })
        .collect();
    match env.which {
        // RSI_IPA_STATE_SET returns SUCCESS with X1 = the base (no progress) and X2 = ACCEPT:
        // the RMM does not let a host refuse a change to EMPTY; refusal shows as no progress
        // (step 2 expects X1 == top).
        Which::ArmCca => assert_eq!(
            failures,
            vec![(PlatformOp::Share, 2, 1, page + 0x1000, page)],
            "{}",
            env.name()
        ),
        // COVG SHARE_MEMORY returns SBI_ERR_DENIED (-4) in a0 (step 1 expects 0).
        Which::RiscvCove => assert_eq!(
            failures,
            vec![(PlatformOp::Share, 1, 1, 0, (-4i64) as u64)],
            "{}",
            env.name()
        ),
        // KVM_HC_MAP_GPA_RANGE: hypercall.ret = -KVM_EPERM (-1) in rax (step 1 expects 0).
        Which::Kvm => assert_eq!(
            failures,
            vec![(PlatformOp::Share, 1, 1, 0, (-1i64) as u64)],
            "{}",
            env.name()
        ),
    }
    let vm = l.vm.as_ref();
    assert_ne!(host_view(vm, page), Some(PRIV[2]));
    assert!(!shared_memory_contains(vm, &PRIV[2].to_le_bytes()));
}

/// guest_memfd_test's last check, on a VMM shared region: the guest reads bytes the host
/// initialised (0xaa) and its stores (0xff) are visible to the host — plain memory, no MMIO
/// exits, reached through the device alias.
fn shared_region_seen_both_ways(env: &Env) {
    let layout = Layout::standard();
    let mut p = Program::new();
    // Where the platform has conversions, a guest accepts VMM memory as shared before using
    // it (CoVE: an access outside every TVM region is fatal until COVG SHARE_MEMORY declares
    // the range shared; CCA: the range is EMPTY already and stays so).
    if env.info.conversions {
        p.share(SHARED_GPA, 0x2000);
    }
    let a = p.mmio_read(SHARED_GPA, 8, false);
    let b = p.mmio_read(SHARED_GPA + 0x1FF8, 8, false);
    p.expect(a, 0xAAAA_AAAA_AAAA_AAAA)
        .expect(b, 0xAAAA_AAAA_AAAA_AAAA);
    p.mmio_write(SHARED_GPA + 0x100, 8, u64::MAX);
    p.mmio_write(SHARED_GPA + 0x1000, 1, 0xFF);
    let c = p.mmio_read(SHARED_GPA + 0x100, 8, false);
    p.report(a).report(b).report(c);
    let mut l = env.launch(&p, &layout);
    let vm = l.vm.as_ref();
    vm.add_memory(MemoryRegion::shared(SHARED_GPA, 0x2000))
        .expect("add shared region");
    vm.shared_memory()
        .write_slice(&[0xAA; 0x2000], GuestAddress(SHARED_GPA))
        .expect("host initialises the shared region");
    let mut runner = cvm::guest::Runner::new(&layout);
    runner.exit_budget(1000);
    let out = runner
        .run(l.vcpu.as_mut())
        .unwrap_or_else(|e| panic!("{}: {e} ({e:?})", env.name()));
    assert!(
        out.passed(),
        "{}: {out:#?}; exit detail {:?}",
        env.name(),
        l.vcpu.exit_detail()
    );
    assert_eq!(out.value(c), Some(u64::MAX));
    assert_eq!(
        out.exits_of(ExitKind::MmioRead),
        0,
        "{}: shared memory must not be emulated MMIO",
        env.name()
    );
    assert!(out.device_writes.is_empty());
    if env.info.conversions {
        assert_eq!(out.conversions.len(), 1);
        assert!(out.conversions[0].accepted && !out.conversions[0].to_private);
    }
    let mem = l.vm.shared_memory();
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(SHARED_GPA + 0x100)).ok(),
        Some(u64::MAX)
    );
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(SHARED_GPA + 0x1000)).ok(),
        Some(0xFF)
    );
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(SHARED_GPA + 0x1001)).ok(),
        Some(0xAA)
    );
}
