//! Portable-program conventions ([`GuestPlatform`]) of plain KVM, one per guest ISA.
//!
//! These are pure data (no KVM), so every architecture's conventions can be inspected on any
//! host; a VM returns the one of the architecture it runs ([`host`]).
//!
//! | op | x86-64 ([`X86Platform`]) | aarch64 ([`Aarch64Platform`]) | riscv64 ([`Riscv64Platform`]) |
//! |---|---|---|---|
//! | device address | identity | identity | identity |
//! | share / unshare | (not offered where `VMCALL` cannot run, e.g. `kvm_pvm`) `VMCALL` rax = 12 (`KVM_HC_MAP_GPA_RANGE`), rbx = gpa, rcx = 4 KiB pages, rdx = 0 (shared) / bit 4 `KVM_MAP_GPA_RANGE_ENCRYPTED` (private), page-size bits 0 (4 KiB); expect rax == 0 | not supported | not supported |
//! | read measurement | not supported: plain KVM has no guest-visible measurement; the `LAUNCH` digest is host-side software, not hardware-rooted | same | same |
//! | entropy | `RDRAND` (not supported when the guest CPUID lacks it) | `RNDR` | `seed` CSR |
//! | host call | signed `HLT`: rbx = [`HOST_CALL_SIGNATURE`], rax = nr, rdi, rsi, rdx, rcx = args 1–4, args 5–6 stored at [`X86_HOST_CALL_BLOCK`] `+0`/`+8`; result rax | `HVC #0`, x0 = [`AARCH64_HOST_CALL_BASE`] + nr (SMCCC OEM range, forwarded by the VM's `KVM_ARM_VM_SMCCC_FILTER`), x1..x6 = args; result x0 | `ECALL`, a7 = nr >> 32 (an SBI experimental/vendor extension KVM forwards), a6 = nr & 0xffff_ffff, a0..a5 = args; result a0 |
//! | stop this vCPU | `HLT` with rbx = 0 (→ `Halt`) | PSCI `CPU_OFF` via `HVC #0` | SBI HSM `HART_STOP` |
//! | start vCPU n | nothing: the host creates it runnable | PSCI `CPU_ON` via `HVC #0` | SBI HSM `HART_START` |
//! | system off | signed `HLT`: rbx = [`SYSTEM_OFF_SIGNATURE`] | PSCI `SYSTEM_OFF` (0x8400_0008) via `HVC #0` | SBI SRST `system_reset(SHUTDOWN, NO_REASON)` |
//!
//! Why x86 host calls are not `VMCALL`: KVM completes every hypercall number it does not know
//! inside the kernel with `-KVM_ENOSYS` (only `KVM_HC_MAP_GPA_RANGE` can be forwarded, via
//! `KVM_CAP_EXIT_HYPERCALL`), so the VMM would never see them. A `HLT` always reaches user space
//! when there is no in-kernel irqchip (this backend creates none), costs one exit like an MMIO
//! access, and the 64-bit signature in rbx tells it apart from an idle `HLT`.

use cvm_core::guest::{
    x86_reg, Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep,
};
use cvm_core::{Arch, PAGE_SIZE};

use crate::probe::{KVM_HC_MAP_GPA_RANGE, KVM_MAP_GPA_RANGE_ENCRYPTED};

/// x86: rbx value that turns a `HLT` into a host call (ASCII "cvmHCALL", little-endian).
pub const HOST_CALL_SIGNATURE: u64 = u64::from_le_bytes(*b"cvmHCALL");
/// x86: rbx value that turns a `HLT` into system off (ASCII "cvmPWOFF", little-endian).
pub const SYSTEM_OFF_SIGNATURE: u64 = u64::from_le_bytes(*b"cvmPWOFF");
/// x86: the host-call argument block (first page of the backend's hidden window): host-call
/// arguments 5 and 6 are stored at `+0` and `+8` before the signed `HLT`, because the portable
/// lowering owns r8–r15 and platform steps may only use rax, rbx, rcx, rdx, rsi, rdi. One block
/// per VM: host calls with more than four arguments from several vCPUs at once would race.
pub const X86_HOST_CALL_BLOCK: u64 = 0xFFC0_0000;
/// aarch64: first SMCCC function id of the host-call range (SMC64/HVC64 fast call, owner 3 =
/// OEM service), forwarded to user space by `KVM_ARM_VM_SMCCC_FILTER` (`FWD_TO_USER`).
pub const AARCH64_HOST_CALL_BASE: u32 = 0xC300_0000;
/// aarch64: number of function ids in the host-call range.
pub const AARCH64_HOST_CALL_COUNT: u32 = 0x1_0000;
/// PSCI 0.2 `SYSTEM_OFF` function id.
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI `CPU_OFF` (PSCI 0.2+, SMC32 function id; DEN0022).
pub const PSCI_CPU_OFF: u64 = 0x8400_0002;
/// PSCI `CPU_ON` (SMC64 function id; DEN0022).
pub const PSCI_CPU_ON: u64 = 0xC400_0003;
/// SBI Hart State Management extension id ("HSM").
pub const SBI_EXT_HSM: u64 = 0x48_534D;
/// SBI System Reset extension id ("SRST").
pub const SBI_EXT_SRST: u64 = 0x5352_5354;

const NO_MEASUREMENT: &str = "plain KVM has no guest-visible launch measurement (the LAUNCH \
                              digest is computed by the host in software and is not \
                              hardware-rooted)";

/// The platform of the architecture this crate was built for, for a VM whose KVM offers
/// `caps`.
pub fn host(caps: &crate::HostCaps) -> Box<dyn GuestPlatform + Send + Sync> {
    match Arch::host() {
        Arch::X86_64 => Box::new(X86Platform {
            rdrand: caps.rdrand,
            hypercalls: caps.hypercall_insn,
        }),
        Arch::Aarch64 => Box::new(Aarch64Platform),
        Arch::Riscv64 => Box::new(Riscv64Platform),
    }
}

/// Plain KVM on x86-64 (see the module table).
#[derive(Debug, Clone, Copy)]
pub struct X86Platform {
    /// Whether the guest's CPUID advertises `RDRAND` (from `KVM_GET_SUPPORTED_CPUID`). Without
    /// it entropy is not offered: on Intel KVM then makes `RDRAND` fault with #UD.
    pub rdrand: bool,
    /// Whether `VMCALL` works on this KVM (false under `kvm_pvm`); without it share/unshare are
    /// not offered.
    pub hypercalls: bool,
}

const X86: &str = "kvm-x86_64";

fn map_gpa_range(
    hypercalls: bool,
    gpa: u64,
    len: u64,
    attrs: u64,
    op: &'static str,
) -> Result<Vec<PlatformStep>, NotSupported> {
    if !hypercalls {
        return Err(NotSupported {
            op,
            platform: X86,
            reason: "this KVM (kvm_pvm) cannot execute VMCALL: KVM_HC_MAP_GPA_RANGE is unreachable",
        });
    }
    if gpa % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 || len == 0 {
        return Err(NotSupported {
            op,
            platform: X86,
            reason: "KVM_HC_MAP_GPA_RANGE takes whole, aligned 4 KiB pages",
        });
    }
    Ok(vec![
        PlatformStep::Call {
            conduit: Conduit::Vmcall,
            args: vec![
                (x86_reg::RAX, KVM_HC_MAP_GPA_RANGE),
                (x86_reg::RBX, gpa),
                (x86_reg::RCX, len / PAGE_SIZE),
                (x86_reg::RDX, attrs),
            ],
        },
        PlatformStep::Expect {
            reg: x86_reg::RAX,
            value: 0,
        },
    ])
}

impl GuestPlatform for X86Platform {
    fn name(&self) -> &'static str {
        X86
    }

    fn arch(&self) -> Arch {
        Arch::X86_64
    }

    fn share(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        map_gpa_range(self.hypercalls, gpa, len, 0, "share")
    }

    fn unshare(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        map_gpa_range(
            self.hypercalls,
            gpa,
            len,
            KVM_MAP_GPA_RANGE_ENCRYPTED,
            "unshare",
        )
    }

    fn read_measurement(
        &self,
        _index: u8,
        _layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        Err(NotSupported {
            op: "read_measurement",
            platform: X86,
            reason: NO_MEASUREMENT,
        })
    }

    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        if !self.rdrand {
            return Err(NotSupported {
                op: "read_entropy",
                platform: X86,
                reason: "KVM_GET_SUPPORTED_CPUID does not offer RDRAND to guests on this host",
            });
        }
        Ok(vec![PlatformStep::Entropy(EntropySource::Rdrand)])
    }

    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        if args.len() > 6 {
            return Err(NotSupported {
                op: "host_call",
                platform: X86,
                reason: "at most 6 arguments",
            });
        }
        // Arguments 1-4 in rdi, rsi, rdx, rcx; 5-6 in the host-call block. All six are always
        // written (zero when absent), so the VMM never sees a stale register or block value.
        const ARG_REGS: [u8; 4] = [x86_reg::RDI, x86_reg::RSI, x86_reg::RDX, x86_reg::RCX];
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        let mut regs = vec![(x86_reg::RAX, nr), (x86_reg::RBX, HOST_CALL_SIGNATURE)];
        regs.extend(ARG_REGS.iter().enumerate().map(|(i, r)| (*r, arg(i))));
        Ok(vec![
            PlatformStep::Store {
                gpa: X86_HOST_CALL_BLOCK,
                size: 8,
                value: arg(4),
            },
            PlatformStep::Store {
                gpa: X86_HOST_CALL_BLOCK + 8,
                size: 8,
                value: arg(5),
            },
            PlatformStep::Call {
                conduit: Conduit::Hlt,
                args: regs,
            },
            PlatformStep::Save {
                reg: x86_reg::RAX,
                result: 0,
            },
        ])
    }

    /// A plain `HLT` with rbx cleared (so no signature from an earlier call is read as a
    /// host call): KVM reports `Halt`, and the guest stays halted.
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Call {
            conduit: Conduit::Hlt,
            args: vec![(x86_reg::RBX, 0)],
        }])
    }

    /// Secondaries are started by the host on x86 KVM (created runnable at their entry).
    fn start_vcpu(&self, _: u32, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(Vec::new())
    }

    fn system_off(&self) -> Vec<PlatformStep> {
        vec![PlatformStep::Call {
            conduit: Conduit::Hlt,
            args: vec![(x86_reg::RBX, SYSTEM_OFF_SIGNATURE)],
        }]
    }
}

/// Plain KVM on aarch64 (see the module table).
#[derive(Debug, Clone, Copy, Default)]
pub struct Aarch64Platform;

const A64: &str = "kvm-aarch64";

impl GuestPlatform for Aarch64Platform {
    fn name(&self) -> &'static str {
        A64
    }

    fn arch(&self) -> Arch {
        Arch::Aarch64
    }

    fn share(&self, _gpa: u64, _len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "share",
            platform: A64,
            reason: "plain KVM on arm64 has no memory-sharing hypercall (all memory is shared)",
        })
    }

    fn unshare(&self, _gpa: u64, _len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "unshare",
            platform: A64,
            reason: "plain KVM on arm64 has no private memory",
        })
    }

    fn read_measurement(
        &self,
        _index: u8,
        _layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        Err(NotSupported {
            op: "read_measurement",
            platform: A64,
            reason: NO_MEASUREMENT,
        })
    }

    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Entropy(EntropySource::Rndr)])
    }

    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        if args.len() > 6 {
            return Err(NotSupported {
                op: "host_call",
                platform: A64,
                reason: "at most 6 arguments",
            });
        }
        if nr >= u64::from(AARCH64_HOST_CALL_COUNT) {
            return Err(NotSupported {
                op: "host_call",
                platform: A64,
                reason: "host-call numbers are below 0x10000 (one SMCCC OEM function id each)",
            });
        }
        let mut regs = vec![(0u8, u64::from(AARCH64_HOST_CALL_BASE) + nr)];
        regs.extend((1u8..=6).zip(args.iter().copied()));
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Hvc(0),
                args: regs,
            },
            PlatformStep::Save { reg: 0, result: 0 },
        ])
    }

    /// PSCI `CPU_OFF` via `HVC #0` (KVM's in-kernel PSCI powers the vCPU off).
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Call {
            conduit: Conduit::Hvc(0),
            args: vec![(0, PSCI_CPU_OFF)],
        }])
    }

    /// PSCI `CPU_ON(target MPIDR = vcpu, entry, context)` via `HVC #0`.
    fn start_vcpu(
        &self,
        vcpu: u32,
        entry: u64,
        arg: u64,
    ) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Hvc(0),
                args: vec![(0, PSCI_CPU_ON), (1, u64::from(vcpu)), (2, entry), (3, arg)],
            },
            PlatformStep::Expect { reg: 0, value: 0 },
        ])
    }

    fn system_off(&self) -> Vec<PlatformStep> {
        vec![PlatformStep::Call {
            conduit: Conduit::Hvc(0),
            args: vec![(0, PSCI_SYSTEM_OFF)],
        }]
    }
}

/// Plain KVM on riscv64 (see the module table).
#[derive(Debug, Clone, Copy, Default)]
pub struct Riscv64Platform;

const RV: &str = "kvm-riscv64";

impl GuestPlatform for Riscv64Platform {
    fn name(&self) -> &'static str {
        RV
    }

    fn arch(&self) -> Arch {
        Arch::Riscv64
    }

    fn share(&self, _gpa: u64, _len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "share",
            platform: RV,
            reason: "plain KVM on riscv64 has no memory-sharing call (all memory is shared)",
        })
    }

    fn unshare(&self, _gpa: u64, _len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "unshare",
            platform: RV,
            reason: "plain KVM on riscv64 has no private memory",
        })
    }

    fn read_measurement(
        &self,
        _index: u8,
        _layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        Err(NotSupported {
            op: "read_measurement",
            platform: RV,
            reason: NO_MEASUREMENT,
        })
    }

    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Entropy(EntropySource::Seed)])
    }

    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        if args.len() > 6 {
            return Err(NotSupported {
                op: "host_call",
                platform: RV,
                reason: "at most 6 arguments",
            });
        }
        // a7 = extension id, a6 = function id, a0..a5 = arguments (x17, x16, x10..x15).
        let mut regs = vec![(17u8, nr >> 32), (16u8, nr & 0xffff_ffff)];
        regs.extend((10u8..=15).zip(args.iter().copied()));
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Ecall,
                args: regs,
            },
            PlatformStep::Save { reg: 10, result: 0 },
        ])
    }

    /// SBI HSM `HART_STOP` (KVM's in-kernel SBI stops the vCPU).
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Call {
            conduit: Conduit::Ecall,
            args: vec![(17, SBI_EXT_HSM), (16, 1)],
        }])
    }

    /// SBI HSM `HART_START(hartid = vcpu, start_addr = entry, opaque = arg)`.
    fn start_vcpu(
        &self,
        vcpu: u32,
        entry: u64,
        arg: u64,
    ) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Ecall,
                args: vec![
                    (17, SBI_EXT_HSM),
                    (16, 0),
                    (10, u64::from(vcpu)),
                    (11, entry),
                    (12, arg),
                ],
            },
            PlatformStep::Expect { reg: 10, value: 0 },
        ])
    }

    fn system_off(&self) -> Vec<PlatformStep> {
        // sbi_system_reset(type = SHUTDOWN (0), reason = NO_REASON (0)).
        vec![PlatformStep::Call {
            conduit: Conduit::Ecall,
            args: vec![(17, SBI_EXT_SRST), (16, 0), (10, 0), (11, 0)],
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86P: X86Platform = X86Platform {
        rdrand: true,
        hypercalls: true,
    };

    #[test]
    fn x86_share_is_map_gpa_range() {
        let steps = X86P.share(0x20_0000, 0x2000).unwrap();
        assert_eq!(
            steps[0],
            PlatformStep::Call {
                conduit: Conduit::Vmcall,
                args: vec![(0, 12), (3, 0x20_0000), (1, 2), (2, 0)],
            }
        );
        let steps = X86P.unshare(0x20_0000, 0x1000).unwrap();
        assert!(matches!(&steps[0], PlatformStep::Call { args, .. } if args[3] == (2, 16)));
        assert!(X86P.share(0x20_0001, 0x1000).is_err());
    }

    #[test]
    fn measurement_not_supported_anywhere() {
        let layout = Layout {
            code: 0,
            data: 0x1000,
            doorbell: 0x2000,
            devices: vec![],
        };
        assert!(X86P.read_measurement(0, &layout).is_err());
        assert!(Aarch64Platform.read_measurement(0, &layout).is_err());
        assert!(Riscv64Platform.read_measurement(0, &layout).is_err());
    }

    fn args_regs_ok(steps: &[PlatformStep]) -> bool {
        steps.iter().all(|st| match st {
            PlatformStep::Call { args, .. } => {
                args.iter().all(|(r, _)| [0, 1, 2, 3, 6, 7].contains(r))
            }
            _ => true,
        })
    }

    #[test]
    fn host_call_shapes() {
        let s = X86P.host_call(7, &[1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(
            s[1],
            PlatformStep::Store {
                gpa: X86_HOST_CALL_BLOCK + 8,
                size: 8,
                value: 6
            }
        );
        assert!(
            matches!(&s[2], PlatformStep::Call { conduit: Conduit::Hlt, args }
            if args.len() == 6 && args[1] == (3, HOST_CALL_SIGNATURE) && args[5] == (1, 4))
        );
        assert!(
            args_regs_ok(&s),
            "platform steps may only use rax, rbx, rcx, rdx, rsi, rdi"
        );
        assert!(args_regs_ok(&X86P.system_off()));
        assert!(X86P.host_call(7, &[0; 7]).is_err());
        let s = Riscv64Platform
            .host_call((0x0800_0000 << 32) | 3, &[9])
            .unwrap();
        assert!(matches!(&s[0], PlatformStep::Call { args, .. }
            if args[0] == (17, 0x0800_0000) && args[1] == (16, 3) && args[2] == (10, 9)));
        assert!(Aarch64Platform.host_call(0x1_0000, &[]).is_err());
    }
}
