//! Probing and fail-closed VM selection.

mod common;

use backend_kvm_plain::KvmBackend;
use cvm_core::{Backend, Confidentiality, Error, HashAlgorithm, Implementation, VmConfig};

#[test]
fn probe_never_panics_and_lists_every_capability() {
    let info = KvmBackend::probe();
    println!("{}", serde_json_like(&info));
    assert_eq!(info.name, "kvm");
    assert_eq!(info.implementation, Implementation::Kvm);
    assert_eq!(info.confidentiality, Confidentiality::None);
    if !info.available {
        let reason = info.unavailable_reason.expect("reason");
        assert!(reason.starts_with("unavailable: "), "{reason}");
        return;
    }
    for name in [
        "KVM_CAP_USER_MEMORY2",
        "KVM_CAP_GUEST_MEMFD",
        "KVM_CAP_GUEST_MEMFD_FLAGS",
        "KVM_CAP_GUEST_MEMFD_FLAGS.MMAP",
        "KVM_CAP_GUEST_MEMFD_FLAGS.INIT_SHARED",
        "KVM_CAP_MEMORY_ATTRIBUTES",
        "KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE",
        "KVM_CAP_VM_TYPES",
        "KVM_CAP_EXIT_HYPERCALL",
    ] {
        assert!(
            info.capabilities.iter().any(|c| c.name == name),
            "{name} missing from {:?}",
            info.capabilities
        );
    }
    let private = info
        .capabilities
        .iter()
        .find(|c| c.name == "KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE")
        .expect("listed");
    assert_eq!(info.private_memory, private.present);
    assert_eq!(info.conversions, private.present);
    assert_eq!(info.measurement, vec![HashAlgorithm::Sha256]);
    assert!(info.max_vcpus > 0);
}

fn serde_json_like(info: &cvm_core::BackendInfo) -> String {
    let mut s = format!(
        "available={} private={} addr_bits={} max_vcpus={} features={:?}\n",
        info.available, info.private_memory, info.addr_bits, info.max_vcpus, info.features
    );
    for c in &info.capabilities {
        s += &format!("  {:40} present={:5} {}\n", c.name, c.present, c.detail);
    }
    s
}

#[test]
fn confidential_vms_fail_closed() {
    let Some(b) = common::kvm() else { return };
    for c in [Confidentiality::ArmCca, Confidentiality::RiscvCove] {
        match b.create_vm(&VmConfig::new(c)) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("refusing"), "{msg}"),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("a {c:?} VM was created on plain KVM"),
        }
    }
    let sha384 = VmConfig {
        measurement: Some(HashAlgorithm::Sha384),
        ..VmConfig::default()
    };
    assert!(matches!(b.create_vm(&sha384), Err(Error::Unsupported(_))));
    let wide = VmConfig {
        addr_bits: 60,
        ..VmConfig::default()
    };
    assert!(matches!(b.create_vm(&wide), Err(Error::Unsupported(_))));
    let zero = VmConfig {
        vcpus: 0,
        ..VmConfig::default()
    };
    assert!(matches!(b.create_vm(&zero), Err(Error::InvalidArgument(_))));
}
