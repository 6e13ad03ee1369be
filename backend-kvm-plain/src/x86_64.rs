//! x86-64: long mode for portable programs, and the x86 side of exits.
//!
//! # The hidden window
//!
//! The backend owns the guest-physical window `[0xFFC0_0000, 0x1_0000_0000)` (the top 4 MiB
//! below 4 GiB, [`HIDDEN_BASE`] + [`HIDDEN_WINDOW`]). User regions overlapping it are refused
//! with [`RegionError::Overlap`](cvm_core::RegionError::Overlap) naming `0xFFC0_0000`. Inside:
//!
//! | GPA | content |
//! |---|---|
//! | `0xFFC0_0000` | hidden memslot: the host-call argument block ([`X86_HOST_CALL_BLOCK`]), then at `0xFFC0_1000` the PML4, PDPTs (and PDs in 2 MiB mode), the GDT and one 4 KiB stack per vCPU |
//! | `0xFFFB_C000` | KVM's default EPT identity-map page (Intel without unrestricted guest) |
//! | `0xFFFF_D000` | the 3-page TSS area given to `KVM_SET_TSS_ADDR` |
//!
//! The page tables identity-map the VM's whole guest-physical space (`addr_bits`) with 1 GiB
//! pages when `KVM_GET_SUPPORTED_CPUID` reports `pdpe1gb` (up to 48 bits), else 2 MiB pages
//! (up to 39 bits). Every vCPU starts in 64-bit mode: CS = 0x08 (64-bit code), DS/ES/FS/GS/SS =
//! 0x10, CR0 = PE|MP|ET|NE|WP|PG, CR4 = PAE|OSFXSR|OSXMMEXCPT, EFER = LME|LMA, CR3 = the PML4,
//! RFLAGS = 0x2 (interrupts off; there is no in-kernel irqchip), RIP = entry, arguments in
//! rdi, rsi, rdx, rcx, r8, r9 and, System V style, arguments 7 and 8 at `[rsp + 8]` and
//! `[rsp + 16]` (`[rsp]` is a zero return address). RSP points into the vCPU's own 4 KiB stack
//! page in the hidden slot.
//!
//! # Host calls and power-off through HLT
//!
//! KVM answers every `VMCALL` itself except `KVM_HC_MAP_GPA_RANGE` (with
//! `KVM_CAP_EXIT_HYPERCALL`): an unknown hypercall number returns `-KVM_ENOSYS` (-1000) in rax
//! without leaving the kernel. So a portable host call cannot be a `VMCALL` on x86 KVM. It is a
//! signed `HLT` instead (one exit, ~ the cost of an MMIO exit): the guest stores arguments 5
//! and 6 in the host-call block, loads rbx = [`HOST_CALL_SIGNATURE`], rax = call number, rdi,
//! rsi, rdx, rcx = arguments 1–4, and executes `HLT`. On `KVM_EXIT_HLT` the backend reads the
//! registers (`KVM_GET_REGS`); rbx equal to the signature makes the exit [`VmExit::HostCall`]
//! (arguments 5–6 read from the block), and the resume writes rax = ret\[0\],
//! rdx = ret\[1\] and clears rbx. rbx = [`SYSTEM_OFF_SIGNATURE`] makes the exit
//! [`VmExit::SystemOff`]. Any other `HLT` is [`VmExit::Halt`].

use cvm_core::{Error, FeatureDef, FeatureRegisters, Result, VcpuInit, VmExit, PAGE_SIZE};
use kvm_bindings::{kvm_segment, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::exit::{ArchExit, HaltMeaning};
use crate::memory::Memory;
use crate::probe::HostCaps;

pub use crate::platform::{HOST_CALL_SIGNATURE, SYSTEM_OFF_SIGNATURE, X86_HOST_CALL_BLOCK};
use crate::vm::VmCore;

/// Start of the backend-owned guest-physical window.
pub const HIDDEN_BASE: u64 = 0xFFC0_0000;
/// Size of the backend-owned window (it ends at 4 GiB).
pub const HIDDEN_WINDOW: u64 = 0x40_0000;
/// Where `KVM_SET_TSS_ADDR` puts KVM's three TSS pages (inside the window).
pub const TSS_ADDR: u64 = 0xFFFF_D000;
/// Where the page tables start (after the host-call block page).
const TABLES: u64 = HIDDEN_BASE + PAGE_SIZE;
/// Upper end of the hidden memslot (KVM's EPT identity-map page follows at 0xFFFB_C000).
const HIDDEN_SLOT_LIMIT: u64 = 0xFFFB_C000;
/// The default guest-physical address width (capped by the host).
pub const DEFAULT_ADDR_BITS: u8 = 40;

const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;
const SEL_CODE: u16 = 0x08;
const SEL_DATA: u16 = 0x10;
const PTE_P_RW: u64 = 0x3;
const PTE_PS: u64 = 0x80;
const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Reads CPUID-derived host facts (`KVM_GET_SUPPORTED_CPUID`).
pub(crate) fn probe_host(kvm: &Kvm, caps: &mut HostCaps) {
    if let Ok(cpuid) = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) {
        for e in cpuid.as_slice() {
            match e.function {
                1 => caps.rdrand = e.ecx & (1 << 30) != 0,
                0x8000_0001 => caps.pdpe1gb = e.edx & (1 << 26) != 0,
                0x8000_0008 => caps.phys_bits = (e.eax & 0xff) as u8,
                _ => {}
            }
        }
    }
    if caps.phys_bits == 0 {
        caps.phys_bits = 36;
    }
    caps.pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
    caps.hypercall_insn = !caps.pvm;
}

/// `KVM_CAP_DISABLE_QUIRKS2` (include/uapi/linux/kvm.h).
const KVM_CAP_DISABLE_QUIRKS2: u32 = 213;
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN` (arch/x86/include/uapi/asm/kvm.h).
const KVM_X86_QUIRK_FIX_HYPERCALL_INSN: u64 = 1 << 5;

/// The widest guest-physical space the identity map can cover here.
pub(crate) fn max_addr_bits(caps: &HostCaps) -> u8 {
    let paging = if caps.pdpe1gb { 48 } else { 39 };
    caps.phys_bits.min(paging)
}

/// The default width: [`DEFAULT_ADDR_BITS`], capped by the host.
pub(crate) fn default_addr_bits(caps: &HostCaps) -> u8 {
    DEFAULT_ADDR_BITS.min(max_addr_bits(caps))
}

/// Checks a requested width: at least 32 (the hidden window sits below 4 GiB), at most
/// [`max_addr_bits`].
pub(crate) fn check_addr_bits(caps: &HostCaps, bits: u8) -> Result<()> {
    let max = max_addr_bits(caps);
    if bits < 32 || bits > max {
        return Err(Error::Unsupported(format!(
            "{bits}-bit guest-physical space: KVM on x86 here supports 32..={max} bits \
             (MAXPHYADDR {}, {} pages)",
            caps.phys_bits,
            if caps.pdpe1gb { "1 GiB" } else { "2 MiB" }
        )));
    }
    Ok(())
}

/// The ioctls `setup_vcpu` issues, for the VM's call counters.
pub(crate) const VCPU_SETUP_IOCTLS: &[&str] = &["KVM_SET_CPUID2", "KVM_SET_SREGS", "KVM_SET_REGS"];

/// `KVM_CREATE_VM` with the default VM type.
pub(crate) fn create_vm_fd(kvm: &Kvm, _addr_bits: u8) -> Result<VmFd> {
    kvm.create_vm().map_err(|e| Error::os("KVM_CREATE_VM", e))
}

/// The guest-physical window the backend owns.
pub(crate) fn reserved_window() -> Option<(u64, u64)> {
    Some((HIDDEN_BASE, HIDDEN_WINDOW))
}

/// Where things live in the hidden slot.
#[derive(Debug, Clone, Copy)]
struct HiddenLayout {
    pml4: u64,
    gdt: u64,
    stacks: u64,
}

/// CPUID feature words offered as VM-wide feature registers: (name, leaf, subleaf, register:
/// 0 = eax, 1 = ebx, 2 = ecx, 3 = edx). Their defaults are what `KVM_GET_SUPPORTED_CPUID`
/// reports; user space may clear bits (hide features) but not set bits KVM cannot back.
const CPUID_FEATURES: [(&str, u32, u32, usize); 6] = [
    ("CPUID.01H:ECX", 1, 0, 2),
    ("CPUID.01H:EDX", 1, 0, 3),
    ("CPUID.07H.0:EBX", 7, 0, 1),
    ("CPUID.07H.0:ECX", 7, 0, 2),
    ("CPUID.80000001H:ECX", 0x8000_0001, 0, 2),
    ("CPUID.80000001H:EDX", 0x8000_0001, 0, 3),
];

fn cpuid_word(e: &kvm_bindings::kvm_cpuid_entry2, reg: usize) -> u32 {
    [e.eax, e.ebx, e.ecx, e.edx][reg & 3]
}

/// The VM-wide feature registers: the CPUID feature words of [`CPUID_FEATURES`] that KVM
/// reports, each backed by `KVM_GET_SUPPORTED_CPUID`. None where they cannot be enforced:
/// under `kvm_pvm` the guest executes CPUID natively, whatever `KVM_SET_CPUID2` says (seen on
/// the build host: the guest read the host's leaf 1 with bits KVM had not offered).
pub(crate) fn feature_defs(kvm: &Kvm, caps: &HostCaps) -> Vec<FeatureDef> {
    if caps.pvm {
        return Vec::new();
    }
    let Ok(cpuid) = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) else {
        return Vec::new();
    };
    CPUID_FEATURES
        .iter()
        .filter_map(|&(name, leaf, sub, reg)| {
            let e = cpuid
                .as_slice()
                .iter()
                .find(|e| e.function == leaf && (leaf != 7 || e.index == sub))?;
            Some(FeatureDef {
                name: name.into(),
                default: u64::from(cpuid_word(e, reg)),
                backed_by: Some("KVM_GET_SUPPORTED_CPUID".into()),
                can_disable: true,
                can_enable: false,
            })
        })
        .collect()
}

/// Per-VM x86 state: the supported CPUID and the hidden slot's layout.
pub(crate) struct VmArch {
    cpuid: CpuId,
    layout: HiddenLayout,
}

/// Builds the identity page tables for `addr_bits` at `0xFFC0_1000`: PML4 first, then PDPTs
/// (and PDs in 2 MiB mode). Returns the image (a whole number of pages).
pub(crate) fn page_tables(addr_bits: u8, gib_pages: bool) -> Vec<u8> {
    let bits = u32::from(addr_bits);
    let page = PAGE_SIZE as usize;
    let mut words: Vec<u64>;
    if gib_pages {
        // One PDPT per 512 GiB; each PDPT entry maps 1 GiB.
        let gib = 1u64 << bits.saturating_sub(30);
        let n_pdpt = gib.div_ceil(512) as usize;
        words = vec![0; (1 + n_pdpt) * 512];
        for (k, w) in words.iter_mut().take(n_pdpt).enumerate() {
            *w = (TABLES + (1 + k as u64) * PAGE_SIZE) | PTE_P_RW;
        }
        for g in 0..gib as usize {
            words[512 + g] = ((g as u64) << 30) | PTE_P_RW | PTE_PS;
        }
    } else {
        // One PDPT; one PD per GiB; each PD entry maps 2 MiB (addr_bits <= 39).
        let gib = 1u64 << bits.saturating_sub(30);
        let n_pd = gib as usize;
        words = vec![0; (2 + n_pd) * 512];
        words[0] = (TABLES + PAGE_SIZE) | PTE_P_RW;
        for j in 0..n_pd {
            words[512 + j] = (TABLES + (2 + j as u64) * PAGE_SIZE) | PTE_P_RW;
        }
        let two_mib = 1u64 << bits.saturating_sub(21);
        for m in 0..two_mib as usize {
            words[1024 + m] = ((m as u64) << 21) | PTE_P_RW | PTE_PS;
        }
    }
    let mut out = Vec::with_capacity(words.len() * 8);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    debug_assert_eq!(out.len() % page, 0);
    out
}

impl VmArch {
    /// `KVM_SET_CPUID2`: the supported CPUID with the initial APIC id = `id` and each feature
    /// word of [`CPUID_FEATURES`] replaced by the VM's feature register. Called at vCPU
    /// creation and again at its first run, when the registers are frozen (KVM accepts
    /// `KVM_SET_CPUID2` until the first `KVM_RUN`).
    pub(crate) fn apply_features(
        &self,
        vcpu: &VcpuFd,
        id: u32,
        features: &FeatureRegisters,
    ) -> Result<()> {
        let mut cpuid = self.cpuid.clone();
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                // Initial APIC id = vCPU id.
                e.ebx = (e.ebx & 0x00ff_ffff) | ((id & 0xff) << 24);
            }
            for &(name, leaf, sub, reg) in &CPUID_FEATURES {
                if e.function != leaf || (leaf == 7 && e.index != sub) {
                    continue;
                }
                if let Some(v) = features.read(name) {
                    let v = v as u32;
                    match reg {
                        0 => e.eax = v,
                        1 => e.ebx = v,
                        2 => e.ecx = v,
                        _ => e.edx = v,
                    }
                }
            }
        }
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| Error::os("KVM_SET_CPUID2", e))
    }

    /// Sets up the VM side: `KVM_SET_TSS_ADDR`, `KVM_GET_SUPPORTED_CPUID`, and the hidden slot
    /// with page tables and GDT.
    pub(crate) fn new(
        kvm: &Kvm,
        vm: &VmFd,
        caps: &HostCaps,
        mem: &mut Memory,
        vcpus: u32,
        addr_bits: u8,
    ) -> Result<Self> {
        vm.set_tss_address(TSS_ADDR as usize)
            .map_err(|e| Error::os("KVM_SET_TSS_ADDR", e))?;
        if !caps.hypercall_insn {
            // Make a stray VMCALL/VMMCALL a #UD (a Fault exit) instead of a vCPU that never
            // returns from KVM_RUN.
            let cap = kvm_bindings::kvm_enable_cap {
                cap: KVM_CAP_DISABLE_QUIRKS2,
                args: [KVM_X86_QUIRK_FIX_HYPERCALL_INSN, 0, 0, 0],
                ..Default::default()
            };
            vm.enable_cap(&cap)
                .map_err(|e| Error::os("KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)", e))?;
        }
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::os("KVM_GET_SUPPORTED_CPUID", e))?;
        let mut image = vec![0u8; PAGE_SIZE as usize]; // the host-call block
        image.extend_from_slice(&page_tables(addr_bits, caps.pdpe1gb));
        let gdt = HIDDEN_BASE + image.len() as u64;
        let mut gdt_page = vec![0u8; PAGE_SIZE as usize];
        gdt_page[8..16].copy_from_slice(&GDT_CODE64.to_le_bytes());
        gdt_page[16..24].copy_from_slice(&GDT_DATA.to_le_bytes());
        image.extend_from_slice(&gdt_page);
        let stacks = HIDDEN_BASE + image.len() as u64;
        let size = image.len() as u64 + u64::from(vcpus) * PAGE_SIZE;
        if HIDDEN_BASE + size > HIDDEN_SLOT_LIMIT {
            return Err(Error::InvalidArgument(format!(
                "{vcpus} vCPUs with a {addr_bits}-bit address space do not fit the hidden window"
            )));
        }
        mem.add_hidden(vm, caps, HIDDEN_BASE, size)?;
        let hidden = mem
            .hidden()
            .ok_or_else(|| Error::InvalidArgument("hidden slot missing".into()))?;
        hidden.write(HIDDEN_BASE, &image)?;
        Ok(Self {
            cpuid,
            layout: HiddenLayout {
                pml4: TABLES,
                gdt,
                stacks,
            },
        })
    }

    /// Puts vCPU `id` into 64-bit mode at `init.entry`: `KVM_SET_CPUID2`, `KVM_SET_SREGS`,
    /// `KVM_SET_REGS` (and the stack arguments through the hidden mapping).
    pub(crate) fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        id: u32,
        init: &VcpuInit,
        mem: &Memory,
        features: &FeatureRegisters,
    ) -> Result<()> {
        self.apply_features(vcpu, id, features)?;

        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| Error::os("KVM_GET_SREGS", e))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: SEL_CODE,
            type_: 0xb,
            present: 1,
            dpl: 0,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment {
            selector: SEL_DATA,
            type_: 0x3,
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.gdt.base = self.layout.gdt;
        sregs.gdt.limit = 3 * 8 - 1;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr3 = self.layout.pml4;
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        sregs.efer = EFER_LME | EFER_LMA;
        vcpu.set_sregs(&sregs)
            .map_err(|e| Error::os("KVM_SET_SREGS", e))?;

        let top = self.layout.stacks + (u64::from(id) + 1) * PAGE_SIZE;
        let rsp = top - 24;
        let arg = |i: usize| init.args.get(i).copied().unwrap_or(0);
        let mut frame = [0u8; 24];
        frame[8..16].copy_from_slice(&arg(6).to_le_bytes());
        frame[16..24].copy_from_slice(&arg(7).to_le_bytes());
        let hidden = mem
            .hidden()
            .ok_or_else(|| Error::InvalidArgument("hidden slot missing".into()))?;
        hidden.write(rsp, &frame)?;

        let mut regs = vcpu.get_regs().map_err(|e| Error::os("KVM_GET_REGS", e))?;
        regs.rip = init.entry;
        regs.rflags = 0x2;
        regs.rsp = rsp;
        regs.rbp = 0;
        regs.rdi = arg(0);
        regs.rsi = arg(1);
        regs.rdx = arg(2);
        regs.rcx = arg(3);
        regs.r8 = arg(4);
        regs.r9 = arg(5);
        vcpu.set_regs(&regs)
            .map_err(|e| Error::os("KVM_SET_REGS", e))
    }
}

/// Classifies a `KVM_EXIT_HLT` by rbx (`KVM_GET_REGS`); a host call's arguments 5–6 come from
/// the host-call block.
pub(crate) fn classify_halt(vcpu: &VcpuFd, core: &VmCore) -> Result<HaltMeaning> {
    let r = vcpu.get_regs().map_err(|e| Error::os("KVM_GET_REGS", e))?;
    Ok(match r.rbx {
        HOST_CALL_SIGNATURE => {
            let mut block = [0u8; 16];
            core.read_hidden(X86_HOST_CALL_BLOCK, &mut block)?;
            let word = |i: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&block[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            };
            HaltMeaning::HostCall {
                nr: r.rax,
                args: [r.rdi, r.rsi, r.rdx, r.rcx, word(0), word(1)],
            }
        }
        SYSTEM_OFF_SIGNATURE => HaltMeaning::SystemOff,
        _ => HaltMeaning::Halt,
    })
}

/// Answers a signed-`HLT` host call: rax = ret\[0\], rdx = ret\[1\], rbx = 0
/// (`KVM_GET_REGS` + `KVM_SET_REGS`).
pub(crate) fn answer_halt_host_call(vcpu: &VcpuFd, ret: [u64; 2]) -> Result<()> {
    let mut r = vcpu.get_regs().map_err(|e| Error::os("KVM_GET_REGS", e))?;
    r.rax = ret[0];
    r.rdx = ret[1];
    r.rbx = 0;
    vcpu.set_regs(&r).map_err(|e| Error::os("KVM_SET_REGS", e))
}

/// The guest PC for fault reports (`KVM_GET_REGS`); 0 if it cannot be read.
pub(crate) fn guest_pc(vcpu: &VcpuFd) -> u64 {
    vcpu.get_regs().map(|r| r.rip).unwrap_or(0)
}

/// `Resume::InjectAbort` on x86: refused. KVM has no "fail this emulated MMIO access"
/// completion for x86; injecting #GP/#PF would need the instruction emulator's state. The
/// guest is not entered and the exit stays pending.
pub(crate) fn inject_abort(_vcpu: &VcpuFd) -> Result<()> {
    Err(Error::Unsupported(
        "Resume::InjectAbort: x86 KVM cannot fail an emulated MMIO access; answer the exit \
         with a value instead"
            .into(),
    ))
}

/// Maps an exit kvm-ioctls does not decode: none are expected on x86.
pub(crate) fn arch_exit(_vcpu: &mut VcpuFd, _reason: u32) -> Option<ArchExit> {
    None
}

/// A forwarded `KVM_EXIT_HYPERCALL` (other than `KVM_HC_MAP_GPA_RANGE`): number and
/// arguments as KVM reports them.
pub(crate) fn hypercall_exit(_vcpu: &VcpuFd, nr: u64, args: [u64; 6]) -> Result<VmExit> {
    Ok(VmExit::HostCall { nr, args })
}

/// Answers a `KVM_EXIT_HYPERCALL`: ret\[0\] → `kvm_run.hypercall.ret` (KVM puts it in rax).
pub(crate) fn answer_hypercall(vcpu: &mut VcpuFd, ret: [u64; 2]) -> Result<()> {
    // The pending exit is KVM_EXIT_HYPERCALL (the caller checked its record). Writing a union
    // field is safe; KVM reads `hypercall.ret` on the next KVM_RUN.
    vcpu.get_kvm_run().__bindgen_anon_1.hypercall.ret = ret[0];
    Ok(())
}

/// SBI exits do not exist on x86.
pub(crate) fn answer_sbi(_vcpu: &mut VcpuFd, _ret: [u64; 2]) -> Result<()> {
    Err(Error::InvalidArgument(
        "no SBI call is pending on x86".into(),
    ))
}

/// CSR exits do not exist on x86.
pub(crate) fn answer_csr(_vcpu: &mut VcpuFd, _value: u64) -> Result<()> {
    Err(Error::InvalidArgument(
        "no CSR access is pending on x86".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(img: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(img[i * 8..i * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn gib_tables_cover_the_space() {
        let img = page_tables(40, true);
        // PML4 + 2 PDPTs.
        assert_eq!(img.len(), 3 * 4096);
        assert_eq!(word(&img, 0), (TABLES + 0x1000) | 3);
        assert_eq!(word(&img, 1), (TABLES + 0x2000) | 3);
        assert_eq!(word(&img, 2), 0);
        assert_eq!(word(&img, 512), 0x83);
        assert_eq!(word(&img, 512 + 3), (3 << 30) | 0x83);
        assert_eq!(word(&img, 512 + 1023), (1023 << 30) | 0x83);
    }

    #[test]
    fn two_mib_tables_cover_the_space() {
        let img = page_tables(32, false);
        // PML4 + PDPT + 4 PDs.
        assert_eq!(img.len(), 6 * 4096);
        assert_eq!(word(&img, 512 + 3), (TABLES + 5 * 0x1000) | 3);
        assert_eq!(word(&img, 512 + 4), 0);
        assert_eq!(word(&img, 1024 + 2047), (2047 << 21) | 0x83);
    }

    #[test]
    fn signatures_differ() {
        assert_ne!(HOST_CALL_SIGNATURE, SYSTEM_OFF_SIGNATURE);
    }
}
