//! Every page converted for a TVM is reclaimed, nothing stays shared and no VMM memory stays
//! pinned: after a normal teardown and after a launch made to fail at each COVH/NACL call in
//! turn (a `Covh` wrapper failing the Nth call). The scenario shares private pages (their
//! user pages, seen by the VMM through `shared_memory()`), unshares one and leaves another
//! shared at teardown.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use backend_riscv_cove::abi::{self, atst, covg, hsm};
use backend_riscv_cove::features::HostIsa;
use backend_riscv_cove::CoveBackend;
use common::*;
use cvm_core::vm_memory::{Bytes, GuestAddress};
use cvm_core::{Measure, MemoryRegion, Resume, VcpuInit, Vm, VmExit};

const SHARED: u64 = 0x9000_0000;
/// A private page the guest shares and unshares again.
const SHARED_THEN_PRIVATE: u64 = RAM + 0x4_0000;
/// A private page the guest shares and leaves shared.
const STAYS_SHARED: u64 = RAM + 0x5_0000;

fn program() -> Vec<u8> {
    let mut a = Asm::new();
    a.prologue();
    a.li(T0, RAM + 0x4_0000).li(T1, 5).sd(T1, T0, 0); // zero page
    a.sbi(abi::EID_ATST, atst::READ_MEASUREMENT, &[DATA, 48, 2]);
    a.sbi(
        abi::EID_COVG,
        covg::SHARE_MEMORY,
        &[SHARED_THEN_PRIVATE, 0x1000],
    );
    a.li(T0, SHARED_THEN_PRIVATE).sd(T1, T0, 0); // its user page
    a.sbi(
        abi::EID_COVG,
        covg::UNSHARE_MEMORY,
        &[SHARED_THEN_PRIVATE, 0x1000],
    );
    a.sbi(abi::EID_COVG, covg::SHARE_MEMORY, &[STAYS_SHARED, 0x1000]);
    a.li(T0, STAYS_SHARED).sd(T1, T0, 8); // shared until teardown
    a.sbi(abi::EID_COVG, covg::SHARE_MEMORY, &[SHARED, 0x1000]);
    a.li(T0, SHARED).sd(T1, T0, 0); // VMM shared page
    a.sbi(abi::EID_HSM, hsm::HART_START, &[1, RAM, 0]);
    a.lw(A1, S0, 4).report(A1);
    a.off();
    a.bytes()
}

/// What the VMM saw through `shared_memory()`: the shared-then-private page at its UNSHARE
/// exit, and the page left shared at SystemOff.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    at_unshare: Option<u64>,
    at_off: Option<u64>,
}

/// The whole flow; stops at the first error. Returns whether it ran to SystemOff.
fn scenario(b: &CoveBackend) -> bool {
    scenario_seen(b, &mut Seen::default())
}

fn scenario_seen(b: &CoveBackend, seen: &mut Seen) -> bool {
    let Ok(vm) = b.create_cove_vm(&config()) else {
        return false;
    };
    let read = |gpa: u64| vm.shared_memory().read_obj::<u64>(GuestAddress(gpa)).ok();
    let r = (|| -> cvm_core::Result<bool> {
        vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE))?;
        vm.add_memory(MemoryRegion::shared(SHARED, 0x2000))?;
        vm.load(RAM, &program(), Measure::Yes)?;
        let mut v0 = vm.create_vcpu(VcpuInit::boot(RAM, &[0, DATA]))?;
        let _v1 = vm.create_vcpu(VcpuInit::secondary())?;
        vm.finalize()?;
        let mut resume = Resume::Done;
        for _ in 0..100 {
            match v0.run(resume)? {
                VmExit::SystemOff => {
                    seen.at_off = read(STAYS_SHARED + 8);
                    return Ok(true);
                }
                VmExit::Mmio { write: None, .. } => resume = Resume::MmioRead(1),
                VmExit::ConvertMemory {
                    gpa, to_private, ..
                } => {
                    if to_private && gpa == SHARED_THEN_PRIVATE {
                        seen.at_unshare = read(SHARED_THEN_PRIVATE);
                    }
                    resume = Resume::Conversion(true)
                }
                VmExit::Mmio { .. } => resume = Resume::Done,
                _ => return Ok(false),
            }
        }
        Ok(false)
    })();
    let ok = matches!(r, Ok(true));
    // Teardown (Drop also tears down if this fails).
    let _ = vm.destroy();
    ok
}

#[test]
fn normal_teardown_leaves_nothing_converted() {
    let m = model();
    let b = backend_with(&m, HostIsa::default());
    let base = b.host_pages_in_use();
    let mut seen = Seen::default();
    assert!(scenario_seen(&b, &mut seen));
    assert_eq!(
        seen,
        Seen {
            at_unshare: Some(5),
            at_off: Some(5)
        }
    );
    assert_eq!(m.confidential_pages(), 0);
    assert_eq!(m.shared_pages(), 0);
    assert_eq!(m.pinned_user_ranges(), 0);
    assert_eq!(m.tvm_count(), 0);
    // Only the per-hart NACL shared memory (registered once) stays allocated.
    assert_eq!(
        b.host_pages_in_use(),
        base.max(4 * abi::NACL_SHMEM_PAGES as usize)
    );
    // Dropping a VM without destroy tears it down too.
    {
        let vm = b.create_cove_vm(&config()).unwrap();
        vm.add_memory(MemoryRegion::private(RAM, RAM_SIZE)).unwrap();
        vm.load(RAM, &[1; 9000], Measure::Yes).unwrap();
        assert!(m.confidential_pages() > 0);
    }
    assert_eq!(m.confidential_pages(), 0);
    assert_eq!(m.pinned_user_ranges(), 0);
    assert_eq!(m.tvm_count(), 0);
}

#[test]
fn failing_each_call_in_turn_leaks_nothing() {
    // Count the calls of a successful run.
    let m = model();
    let spy = Arc::new(Spy::new(Arc::clone(&m), None));
    let b = CoveBackend::new(spy.clone(), HostIsa::default());
    assert!(scenario(&b));
    let total = spy.calls.load(Ordering::SeqCst);
    assert!(total > 50, "{total} calls");
    assert_eq!(m.confidential_pages(), 0);
    let mut failed_runs = 0;
    for n in 1..=total {
        let m = model();
        let spy = Arc::new(Spy::new(Arc::clone(&m), Some(n)));
        let b = CoveBackend::new(spy.clone(), HostIsa::default());
        if !scenario(&b) {
            failed_runs += 1;
        }
        let what = *spy.failed.lock().unwrap();
        assert_eq!(
            m.confidential_pages(),
            0,
            "failing call {n} ({what:x?}) leaked pages"
        );
        assert_eq!(
            m.tvm_count(),
            0,
            "failing call {n} ({what:x?}) leaked a TVM"
        );
        assert_eq!(
            m.shared_pages(),
            0,
            "failing call {n} ({what:x?}) left pages shared"
        );
        assert_eq!(
            m.pinned_user_ranges(),
            0,
            "failing call {n} ({what:x?}) left VMM memory pinned"
        );
    }
    assert!(failed_runs > 0);
}
