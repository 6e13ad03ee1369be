//! Teardown leaves nothing behind: after `destroy()` and drop — and after a drop without
//! `destroy()` — the backend's own counters are back where they were: CCA's delegated and
//! host granules, host windows and realms; CoVE's converted/shared pages, TVMs and host pages;
//! plain KVM's file descriptors (VM, vCPU, guest_memfd, memfd).

use cvm::guest::{Layout, Program, Runner};
use cvm::vm_memory::GuestMemoryBackend;
use cvm::{LaunchState, Measure, MemoryRegion};

use crate::harness::{Concrete, Env, DEV, RAM, SCRATCH, SHARED_GPA};

crate::per_backend!(
    teardown_leaves_nothing =>
    teardown_leaves_nothing_kvm,
    teardown_leaves_nothing_arm_cca,
    teardown_leaves_nothing_riscv_cove
);

/// Open file descriptors of this process whose target names this backend (`/dev/kvm`,
/// `anon_inode:kvm-vm`, `kvm-vcpu:N`, guest_memfd, `memfd:cvm-kvm-plain`; CoVE's
/// `memfd:cvm-cove-user-pages`; anything CCA's host opens with "cca" in it). The harness
/// serialises each backend's tests, so only this test opens or closes such descriptors now.
fn backend_fds(marker: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains(marker))
        .count()
}

/// The backend's resource counters, by name.
fn counters(env: &Env) -> Vec<(&'static str, usize)> {
    match &env.backend {
        Concrete::Kvm(_) => vec![("kvm fds", backend_fds("kvm"))],
        Concrete::Cca(b) => {
            let rmm = b.rmm().expect("the model RMM");
            vec![
                ("delegated granules", rmm.delegated_granules()),
                ("host granules", rmm.host_granules()),
                ("host windows", rmm.host_windows()),
                ("realms", rmm.realms()),
                ("cca fds", backend_fds("cca")),
            ]
        }
        Concrete::Cove(b) => {
            let m = b.tsm_model().expect("the model TSM");
            vec![
                ("confidential pages", m.confidential_pages()),
                ("shared pages", m.shared_pages()),
                ("TVMs", m.tvm_count()),
                ("host pages in use", b.host_pages_in_use()),
                ("cove fds", backend_fds("cove")),
            ]
        }
    }
}

/// Counters that must be zero when no VM exists.
fn must_be_zero(name: &str) -> bool {
    matches!(
        name,
        "delegated granules" | "realms" | "confidential pages" | "shared pages" | "TVMs"
    )
}

fn teardown_leaves_nothing(env: &Env) {
    // Warm-up: per-backend state kept for the backend's lifetime (e.g. CoVE's per-hart NACL
    // shared memory, registered with the first VM) is not a leak.
    drop(env.backend().create_vm(&env.config()).expect("warm-up VM"));
    let baseline = counters(env);
    for (name, v) in &baseline {
        if must_be_zero(name) {
            assert_eq!(*v, 0, "{}: {name} with no VM", env.name());
        }
    }

    // 1. A VM that ran: private (or plain) RAM touched by the guest, a VMM shared region the
    //    guest used, a share/unshare round trip where conversions exist; destroy, then drop.
    let layout = Layout::standard();
    let mut p = Program::new();
    p.mem_write(SCRATCH, 8, 1);
    p.mem_write(SCRATCH + 0x10_0000, 8, 2);
    if env.info.conversions {
        p.share(SHARED_GPA, 0x4000);
    }
    p.mmio_write(SHARED_GPA, 8, 3);
    let s = p.mmio_read(DEV, 8, false);
    p.report(s);
    if env.info.conversions {
        p.share(SCRATCH + 0x1000, 0x1000)
            .unshare(SCRATCH + 0x1000, 0x1000);
    }
    {
        let mut l = env.launch(&p, &layout);
        l.vm.add_memory(MemoryRegion::shared(SHARED_GPA, 0x4000))
            .expect("shared region");
        let out = Runner::new(&layout)
            .run(l.vcpu.as_mut())
            .unwrap_or_else(|e| panic!("{}: {e} ({e:?})", env.name()));
        assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
        let in_use = counters(env);
        println!("{}: baseline {baseline:?}, in use {in_use:?}", env.name());
        assert_ne!(in_use, baseline, "{}: the VM used nothing?", env.name());
        l.vm.destroy().expect("destroy");
        assert_eq!(l.vm.state(), LaunchState::Off);
        assert!(l.vm.regions().is_empty());
        assert_eq!(
            l.vm.shared_memory().num_regions(),
            0,
            "{}: shared memory after destroy",
            env.name()
        );
    }
    assert_eq!(
        counters(env),
        baseline,
        "{}: after destroy + drop",
        env.name()
    );

    // 2. A VM dropped while building, without destroy.
    {
        let vm = env.backend().create_vm(&env.config()).expect("create_vm");
        vm.add_memory(env.ram()).expect("RAM");
        vm.add_memory(MemoryRegion::shared(SHARED_GPA, 0x2000))
            .expect("shared");
        vm.load(RAM, &[0x42; 9000], Measure::Yes).expect("load");
        let _vcpu = vm.create_vcpu(cvm::VcpuInit::boot(RAM, &[])).expect("vcpu");
        assert_ne!(counters(env), baseline);
    }
    assert_eq!(counters(env), baseline, "{}: after a bare drop", env.name());

    // 3. A finalized VM that never ran, destroyed twice.
    {
        let l = env.launch(&p, &layout);
        l.vm.destroy().expect("destroy");
        l.vm.destroy().expect("destroy again");
    }
    assert_eq!(counters(env), baseline, "{}: never-run VM", env.name());
}
