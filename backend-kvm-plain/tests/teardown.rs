//! Teardown releases every fd: the only test in this binary, so no other test opens fds
//! while it counts.

mod common;

use cvm_core::{Backend, Measure, MemoryRegion, Resume, VcpuInit, VmConfig};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn create_destroy_drop_leaks_no_fd() {
    let Some(b) = common::kvm() else { return };
    let config = VmConfig {
        vcpus: 2,
        ..VmConfig::default()
    };
    // Warm up (lazy statics, the test harness' own fds).
    drop(b.create_vm(&config).unwrap());
    let before = open_fds();
    for round in 0..3 {
        let vm = b.create_vm(&config).unwrap();
        vm.add_memory(MemoryRegion::shared(0x10_0000, 0x10_0000))
            .unwrap();
        vm.add_memory(MemoryRegion::shared(0x40_0000, 0x1000))
            .unwrap();
        let mut ro = MemoryRegion::shared(0x50_0000, 0x1000);
        ro.read_only = true;
        vm.add_memory(ro).unwrap();
        vm.remove_memory(0x40_0000).unwrap();
        if cfg!(target_arch = "x86_64") {
            vm.load(0x10_0000, &[0xf4], Measure::Yes).unwrap();
        }
        let mut v0 = vm.create_vcpu(VcpuInit::boot(0x10_0000, &[])).unwrap();
        let v1 = vm.create_vcpu(VcpuInit::secondary()).unwrap();
        vm.finalize().unwrap();
        if cfg!(target_arch = "x86_64") {
            v0.run(Resume::Done).unwrap();
        }
        let mem = vm.shared_memory();
        assert!(open_fds() > before, "round {round}: the VM holds fds");
        drop(mem);
        if round % 2 == 0 {
            vm.destroy().unwrap();
        }
        drop(v0);
        drop(v1);
        drop(vm);
        assert_eq!(open_fds(), before, "round {round}: fds leaked");
    }
}
