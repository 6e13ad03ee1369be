//! Probing `/dev/kvm`: which capabilities this host's KVM has, as values.
//!
//! Every capability the backend looks at is reported in [`BackendInfo::capabilities`], present
//! or not, with the raw value `KVM_CHECK_EXTENSION` returned. Probing never fails: a host
//! without `/dev/kvm` yields an `available: false` info with the reason.

use cvm_core::{Arch, BackendInfo, Capability, Confidentiality, HashAlgorithm, Implementation};
use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_NR_MEMSLOTS,
    KVM_CAP_READONLY_MEM, KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_MEMORY_ATTRIBUTE_PRIVATE,
};
use kvm_ioctls::{Kvm, VmFd};

/// `KVM_CAP_GUEST_MEMFD_FLAGS`: the `KVM_CREATE_GUEST_MEMFD` flags the VM supports.
///
/// Defined locally because kvm-bindings 0.14 (generated from Linux 6.15) predates it; the value
/// is from the kernel uAPI `include/uapi/linux/kvm.h` (Linux 6.18: `#define
/// KVM_CAP_GUEST_MEMFD_FLAGS 244`).
pub const KVM_CAP_GUEST_MEMFD_FLAGS: u32 = 244;
/// `GUEST_MEMFD_FLAG_MMAP` (include/uapi/linux/kvm.h, Linux 6.18): the guest_memfd may be
/// `mmap`ped by user space (shared pages only).
pub const GUEST_MEMFD_FLAG_MMAP: u64 = 1 << 0;
/// `GUEST_MEMFD_FLAG_INIT_SHARED` (include/uapi/linux/kvm.h, Linux 6.18): the guest_memfd's
/// pages start out shared, so a mapping can be used without a conversion.
pub const GUEST_MEMFD_FLAG_INIT_SHARED: u64 = 1 << 1;
/// `KVM_HC_MAP_GPA_RANGE` (include/uapi/linux/kvm_para.h): the guest asks to change a range's
/// private/shared state.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED` (include/uapi/linux/kvm_para.h): attribute bit meaning
/// "make private".
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;

/// The backend's short name.
pub const NAME: &str = "kvm";

/// What this host's KVM offers, as read by `KVM_CHECK_EXTENSION` (and, on x86,
/// `KVM_GET_SUPPORTED_CPUID`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostCaps {
    /// `KVM_GET_API_VERSION`.
    pub api_version: i32,
    /// `KVM_CAP_USER_MEMORY2`: `KVM_SET_USER_MEMORY_REGION2` exists.
    pub user_memory2: bool,
    /// `KVM_CAP_GUEST_MEMFD`: `KVM_CREATE_GUEST_MEMFD` exists.
    pub guest_memfd: bool,
    /// `KVM_CAP_GUEST_MEMFD_FLAGS` (244): supported `GUEST_MEMFD_FLAG_*` bits.
    pub guest_memfd_flags: u64,
    /// `KVM_CAP_MEMORY_ATTRIBUTES`: supported `KVM_MEMORY_ATTRIBUTE_*` bits.
    pub memory_attributes: u64,
    /// `KVM_CAP_VM_TYPES`: bitmap of supported VM types (x86).
    pub vm_types: u64,
    /// `KVM_CAP_EXIT_HYPERCALL`: hypercalls that can be forwarded to user space (x86).
    pub exit_hypercall: u64,
    /// `KVM_CAP_READONLY_MEM`.
    pub readonly_mem: bool,
    /// `KVM_CAP_MAX_VCPUS`.
    pub max_vcpus: u32,
    /// `KVM_CAP_NR_MEMSLOTS`.
    pub nr_memslots: u32,
    /// Guest-physical address bits the host can back (x86: CPUID 0x8000_0008 EAX\[7:0\] from
    /// `KVM_GET_SUPPORTED_CPUID`; arm64: `KVM_CAP_ARM_VM_IPA_SIZE`).
    pub phys_bits: u8,
    /// x86: CPUID 0x8000_0001 EDX\[26\] (1 GiB pages).
    pub pdpe1gb: bool,
    /// x86: CPUID 1 ECX\[30\] (`RDRAND`).
    pub rdrand: bool,
    /// x86: whether the guest can execute `VMCALL`/`VMMCALL`. False under `kvm_pvm`
    /// (Pagetable-based Virtual Machine, detected by `/sys/module/kvm_pvm`): its instruction
    /// emulator re-emulates the hypercall instruction forever and the vCPU never returns.
    pub hypercall_insn: bool,
    /// x86: the KVM implementation is `kvm_pvm` (software virtualization without VMX/SVM).
    pub pvm: bool,
}

impl HostCaps {
    /// Reads the system-wide capabilities from the `/dev/kvm` fd.
    pub fn read(kvm: &Kvm) -> Self {
        let raw = |cap: u32| kvm.check_extension_raw(std::os::raw::c_ulong::from(cap));
        let mut caps = HostCaps {
            api_version: kvm.get_api_version(),
            user_memory2: raw(KVM_CAP_USER_MEMORY2) > 0,
            guest_memfd: raw(KVM_CAP_GUEST_MEMFD) > 0,
            guest_memfd_flags: nonneg(raw(KVM_CAP_GUEST_MEMFD_FLAGS)),
            memory_attributes: nonneg(raw(KVM_CAP_MEMORY_ATTRIBUTES)),
            vm_types: nonneg(raw(KVM_CAP_VM_TYPES)),
            exit_hypercall: if cfg!(target_arch = "x86_64") {
                nonneg(raw(KVM_CAP_EXIT_HYPERCALL))
            } else {
                0
            },
            readonly_mem: raw(KVM_CAP_READONLY_MEM) > 0,
            max_vcpus: u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
            nr_memslots: u32::try_from(raw(KVM_CAP_NR_MEMSLOTS)).unwrap_or(0),
            phys_bits: 0,
            pdpe1gb: false,
            rdrand: false,
            hypercall_insn: false,
            pvm: false,
        };
        crate::arch::probe_host(kvm, &mut caps);
        caps
    }

    /// Refines the VM-dependent answers with `KVM_CHECK_EXTENSION` on a VM fd (the VM type
    /// decides guest_memfd flags and memory attributes).
    pub fn refine_for_vm(&mut self, vm: &VmFd) {
        let raw = |cap: u32| vm.check_extension_raw(std::os::raw::c_ulong::from(cap));
        self.guest_memfd = raw(KVM_CAP_GUEST_MEMFD) > 0;
        self.guest_memfd_flags = nonneg(raw(KVM_CAP_GUEST_MEMFD_FLAGS));
        self.memory_attributes = nonneg(raw(KVM_CAP_MEMORY_ATTRIBUTES));
        self.user_memory2 = raw(KVM_CAP_USER_MEMORY2) > 0;
    }

    /// Whether shared regions are backed by an mmappable guest_memfd
    /// (`GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED`).
    pub fn gmem_shared(&self) -> bool {
        let want = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
        self.user_memory2 && self.guest_memfd && self.guest_memfd_flags & want == want
    }

    /// Whether private regions can be backed (`KVM_MEMORY_ATTRIBUTE_PRIVATE` + guest_memfd).
    pub fn private_memory(&self) -> bool {
        self.user_memory2
            && self.guest_memfd
            && self.memory_attributes & u64::from(KVM_MEMORY_ATTRIBUTE_PRIVATE) != 0
    }

    /// Why private memory is unavailable (names the missing capability).
    pub fn private_memory_missing(&self) -> String {
        let mut missing = Vec::new();
        if !self.user_memory2 {
            missing.push("KVM_CAP_USER_MEMORY2".to_string());
        }
        if !self.guest_memfd {
            missing.push("KVM_CAP_GUEST_MEMFD".to_string());
        }
        if self.memory_attributes & u64::from(KVM_MEMORY_ATTRIBUTE_PRIVATE) == 0 {
            missing.push(format!(
                "KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE (the kernel reports {:#x}, bit 3 clear)",
                self.memory_attributes
            ));
        }
        format!("this KVM lacks {}", missing.join(", "))
    }

    /// Whether `KVM_HC_MAP_GPA_RANGE` can be forwarded (`KVM_CAP_EXIT_HYPERCALL` bit 12).
    pub fn map_gpa_range_exit(&self) -> bool {
        self.hypercall_insn && self.exit_hypercall & (1 << KVM_HC_MAP_GPA_RANGE) != 0
    }

    /// Every probed capability, present or not, with its value.
    pub fn capabilities(&self) -> Vec<Capability> {
        let private = u64::from(KVM_MEMORY_ATTRIBUTE_PRIVATE);
        let mut caps = vec![
            cap(
                "KVM_GET_API_VERSION",
                self.api_version == 12,
                self.api_version.to_string(),
            ),
            cap(
                "KVM_CAP_USER_MEMORY2",
                self.user_memory2,
                bool_detail(self.user_memory2),
            ),
            cap(
                "KVM_CAP_GUEST_MEMFD",
                self.guest_memfd,
                bool_detail(self.guest_memfd),
            ),
            cap(
                "KVM_CAP_GUEST_MEMFD_FLAGS",
                self.guest_memfd_flags != 0,
                format!("{:#x}", self.guest_memfd_flags),
            ),
            cap(
                "KVM_CAP_GUEST_MEMFD_FLAGS.MMAP",
                self.guest_memfd_flags & GUEST_MEMFD_FLAG_MMAP != 0,
                "bit 0".into(),
            ),
            cap(
                "KVM_CAP_GUEST_MEMFD_FLAGS.INIT_SHARED",
                self.guest_memfd_flags & GUEST_MEMFD_FLAG_INIT_SHARED != 0,
                "bit 1".into(),
            ),
            cap(
                "KVM_CAP_MEMORY_ATTRIBUTES",
                self.memory_attributes != 0,
                format!("{:#x}", self.memory_attributes),
            ),
            cap(
                "KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE",
                self.memory_attributes & private != 0,
                format!("bit 3 ({private:#x})"),
            ),
            cap(
                "KVM_CAP_VM_TYPES",
                self.vm_types != 0,
                format!("{:#x}", self.vm_types),
            ),
            cap(
                "KVM_CAP_EXIT_HYPERCALL",
                self.exit_hypercall != 0,
                format!("{:#x}", self.exit_hypercall),
            ),
            cap(
                "KVM_CAP_EXIT_HYPERCALL.MAP_GPA_RANGE",
                self.map_gpa_range_exit(),
                format!("bit {KVM_HC_MAP_GPA_RANGE}"),
            ),
            cap(
                "KVM_CAP_READONLY_MEM",
                self.readonly_mem,
                bool_detail(self.readonly_mem),
            ),
            cap(
                "KVM_CAP_MAX_VCPUS",
                self.max_vcpus > 0,
                self.max_vcpus.to_string(),
            ),
            cap(
                "KVM_CAP_NR_MEMSLOTS",
                self.nr_memslots > 0,
                self.nr_memslots.to_string(),
            ),
            cap(
                "guest_physical_address_bits",
                self.phys_bits > 0,
                self.phys_bits.to_string(),
            ),
        ];
        if cfg!(target_arch = "x86_64") {
            caps.push(cap("CPUID.pdpe1gb", self.pdpe1gb, "1 GiB pages".into()));
            caps.push(cap("CPUID.rdrand", self.rdrand, "RDRAND".into()));
            caps.push(cap(
                "x86.hypercall_instruction",
                self.hypercall_insn,
                if self.pvm {
                    "kvm_pvm: VMCALL/VMMCALL are re-emulated forever; refused (FIX_HYPERCALL_INSN \
                     quirk disabled, so a stray one is #UD)"
                        .into()
                } else {
                    "VMCALL/VMMCALL reach KVM".into()
                },
            ));
            caps.push(cap(
                "x86.cpuid_interception",
                !self.pvm,
                if self.pvm {
                    "kvm_pvm: the guest executes CPUID natively, so CPUID feature registers \
                     cannot be enforced and none are offered"
                        .into()
                } else {
                    "KVM_SET_CPUID2 decides what the guest's CPUID reports".into()
                },
            ));
            caps.push(cap(
                "kvm_pvm",
                self.pvm,
                "Pagetable-based Virtual Machine (software KVM without VMX/SVM)".into(),
            ));
        }
        caps
    }

    /// Guest feature names this backend exposes.
    pub fn features(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.gmem_shared() {
            f.push("guest_memfd_shared".to_string());
        }
        if self.readonly_mem {
            f.push("readonly_memory".to_string());
        }
        if cfg!(target_arch = "x86_64") {
            f.push("long_mode".to_string());
            if self.pdpe1gb {
                f.push("pdpe1gb".to_string());
            }
            if self.rdrand {
                f.push("rdrand".to_string());
            }
        }
        f
    }

    /// The [`BackendInfo`] for an available KVM.
    pub fn info(&self) -> BackendInfo {
        BackendInfo {
            name: NAME.into(),
            arch: Arch::host(),
            confidentiality: Confidentiality::None,
            implementation: Implementation::Kvm,
            available: true,
            unavailable_reason: None,
            private_memory: self.private_memory(),
            conversions: self.private_memory(),
            measurement: vec![HashAlgorithm::Sha256],
            max_vcpus: self.max_vcpus,
            addr_bits: crate::arch::default_addr_bits(self),
            features: self.features(),
            capabilities: self.capabilities(),
        }
    }
}

/// The info of a host where KVM cannot be used.
pub fn unavailable(reason: String) -> BackendInfo {
    BackendInfo {
        name: NAME.into(),
        arch: Arch::host(),
        confidentiality: Confidentiality::None,
        implementation: Implementation::Kvm,
        available: false,
        unavailable_reason: Some(format!("unavailable: {reason}")),
        private_memory: false,
        conversions: false,
        measurement: vec![HashAlgorithm::Sha256],
        max_vcpus: 0,
        addr_bits: 0,
        features: Vec::new(),
        capabilities: vec![cap("/dev/kvm", false, reason)],
    }
}

fn nonneg(v: i32) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn bool_detail(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

fn cap(name: &str, present: bool, detail: String) -> Capability {
    Capability {
        name: name.into(),
        present,
        detail,
    }
}
