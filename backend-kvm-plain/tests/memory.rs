//! Memory on real KVM: guest_memfd-backed shared regions through vm-memory, validation,
//! private-memory refusal, read-only regions, removal and slot reuse.

#![cfg(target_arch = "x86_64")]
mod common;

use common::{kvm, r, run, Asm, MMIO, RAM, RAM_SIZE};
use cvm_core::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use cvm_core::{
    Backend, Error, Measure, MemoryKind, MemoryRegion, RegionError, Resume, VcpuInit, Vm, VmConfig,
    VmExit,
};

#[test]
fn guest_reads_host_initialised_shared_memory_and_writes_it_back() {
    let Some(b) = kvm() else { return };
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    let data = 0x20_0000u64;
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    vm.add_memory(MemoryRegion::shared(data, 0x1000)).unwrap();
    if b.caps().gmem_shared() {
        assert_eq!(
            vm.ops().backing_of(data),
            Some("guest_memfd(mmap,init_shared)")
        );
    }
    // The host initialises the data page through vm-memory.
    let mem = vm.shared_memory();
    assert_eq!(mem.num_regions(), 2);
    mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(data))
        .unwrap();
    // Guest: rax = [data]; report it; [data + 8] = rax + 1; hlt.
    let mut a = Asm::new();
    a.mov_imm(r::RDI, data)
        .load_rdi(8)
        .mov_imm(r::RSI, MMIO)
        .store_rax_rsi();
    a.code.extend_from_slice(&[0x48, 0xff, 0xc0]); // inc rax
    a.mov_imm(r::RDI, data + 8).store_rdi(8).hlt();
    vm.load(RAM, &a.bytes(), Measure::No).unwrap();
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: MMIO,
            size: 8,
            write: Some(0x1122_3344_5566_7788)
        }
    );
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    // The guest's write is visible to the host through the same vm-memory object.
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(data + 8)).unwrap(),
        0x1122_3344_5566_7789
    );
}

#[test]
fn region_validation_is_typed_and_changes_nothing() {
    let Some(b) = kvm() else { return };
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    let bits = vm.addr_bits();
    let cases = [
        MemoryRegion::shared(0x1001, 0x1000),
        MemoryRegion::shared(0x1000, 0x1800),
        MemoryRegion::shared(0x1000, 0),
        MemoryRegion::shared(RAM + 0x1000, 0x1000),
        MemoryRegion::shared((1u64 << bits) - 0x1000, 0x2000),
        MemoryRegion::shared(u64::MAX - 0xfff, 0x1000),
        // The backend's hidden window (x86) [0xFFC0_0000, 4 GiB).
        MemoryRegion::shared(0xFFC0_0000, 0x1000),
        MemoryRegion::shared(0xFFBF_F000, 0x2000),
        MemoryRegion::shared(0xFFFF_F000, 0x1000),
    ];
    for (i, region) in cases.iter().enumerate() {
        if i >= 6 && vm.ops().reserved_window().is_none() {
            continue;
        }
        match vm.add_memory(*region) {
            Err(Error::Region(e)) => {
                let ok = match i {
                    0 | 1 => matches!(e, RegionError::Misaligned { .. }),
                    2 => matches!(e, RegionError::Empty { .. }),
                    3 => matches!(e, RegionError::Overlap { existing: RAM, .. }),
                    4 => matches!(e, RegionError::BeyondAddressWidth { .. }),
                    5 => matches!(
                        e,
                        RegionError::BeyondAddressWidth { .. } | RegionError::Overflow { .. }
                    ),
                    _ => matches!(
                        e,
                        RegionError::Overlap {
                            existing: 0xFFC0_0000,
                            ..
                        }
                    ),
                };
                assert!(ok, "case {i}: {e}");
            }
            other => panic!("case {i} {region:?}: {other:?}"),
        }
        assert_eq!(vm.regions(), vec![MemoryRegion::shared(RAM, RAM_SIZE)]);
    }
}

#[test]
fn private_memory_needs_the_capability() {
    let Some(b) = kvm() else { return };
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    let r = vm.add_memory(MemoryRegion::private(RAM, 0x1000));
    if b.info().private_memory {
        r.unwrap();
        return;
    }
    match r {
        Err(Error::Region(RegionError::KindUnsupported {
            kind: MemoryKind::Private,
            reason,
        })) => {
            assert!(
                reason.contains("KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(vm.regions().is_empty());
    // Host conversion to private is refused the same way; to shared is a no-op.
    vm.add_memory(MemoryRegion::shared(RAM, 0x2000)).unwrap();
    vm.load(RAM, &[0xf4], Measure::No).unwrap();
    let _vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert!(matches!(
        vm.convert(RAM, 0x1000, MemoryKind::Private),
        Err(Error::Region(RegionError::KindUnsupported { .. }))
    ));
    vm.convert(RAM, 0x1000, MemoryKind::Shared).unwrap();
}

#[test]
fn remove_releases_and_slots_are_reused() {
    let Some(b) = kvm() else { return };
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    for round in 0..3u64 {
        for i in 0..8u64 {
            vm.add_memory(MemoryRegion::shared(RAM + i * 0x10_0000, 0x1000))
                .unwrap();
        }
        assert_eq!(vm.shared_memory().num_regions(), 8, "round {round}");
        for i in 0..8u64 {
            let r = vm.remove_memory(RAM + i * 0x10_0000).unwrap();
            assert_eq!(r.gpa, RAM + i * 0x10_0000);
        }
        assert!(vm.regions().is_empty());
        assert_eq!(vm.shared_memory().num_regions(), 0);
    }
    assert!(matches!(
        vm.remove_memory(RAM),
        Err(Error::Region(RegionError::NotFound { .. }))
    ));
}

#[test]
fn removed_memory_becomes_mmio() {
    let Some(b) = kvm() else { return };
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    let data = 0x20_0000u64;
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    vm.add_memory(MemoryRegion::shared(data, 0x1000)).unwrap();
    let mut a = Asm::new();
    a.hlt()
        .mov_imm(r::RDI, data)
        .mov_imm(r::RAX, 9)
        .store_rdi(4)
        .hlt();
    vm.load(RAM, &a.bytes(), Measure::No).unwrap();
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    vm.remove_memory(data).unwrap();
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: data,
            size: 4,
            write: Some(9)
        }
    );
}

#[test]
fn read_only_region_write_is_an_mmio_exit() {
    let Some(b) = kvm() else { return };
    if !b.caps().readonly_mem {
        println!("skipped: KVM_CAP_READONLY_MEM absent");
        return;
    }
    let vm = b.create_kvm_vm(&VmConfig::default()).unwrap();
    let rom = 0x30_0000u64;
    vm.add_memory(MemoryRegion::shared(RAM, RAM_SIZE)).unwrap();
    let mut ro = MemoryRegion::shared(rom, 0x1000);
    ro.read_only = true;
    vm.add_memory(ro).unwrap();
    assert_eq!(vm.ops().backing_of(rom), Some("memfd"));
    vm.load(rom, &0xabcdu64.to_le_bytes(), Measure::No).unwrap();
    // Guest: rax = [rom]; report; [rom] = 5 (→ MMIO write); hlt.
    let mut a = Asm::new();
    a.mov_imm(r::RDI, rom)
        .load_rdi(8)
        .mov_imm(r::RSI, MMIO)
        .store_rax_rsi();
    a.mov_imm(r::RAX, 5).store_rdi(8).hlt();
    vm.load(RAM, &a.bytes(), Measure::No).unwrap();
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: MMIO,
            size: 8,
            write: Some(0xabcd)
        }
    );
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: rom,
            size: 8,
            write: Some(5)
        }
    );
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    let mem = vm.shared_memory();
    assert_eq!(mem.read_obj::<u64>(GuestAddress(rom)).unwrap(), 0xabcd);
}

#[test]
fn dyn_backend_works_too() {
    let Some(b) = kvm() else { return };
    let backend: Box<dyn Backend> = Box::new(b);
    let vm: Box<dyn Vm> = backend.create_vm(&VmConfig::default()).unwrap();
    vm.add_memory(MemoryRegion::shared(RAM, 0x1000)).unwrap();
    vm.load(RAM, &[0xf4], Measure::Yes).unwrap();
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(RAM, &[])).unwrap();
    vm.finalize().unwrap();
    assert_eq!(vcpu.run(Resume::Done).unwrap(), VmExit::Halt);
}
