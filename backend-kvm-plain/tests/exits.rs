//! Exits on real KVM, driven by hand-assembled x86-64 guests.
#![cfg(target_arch = "x86_64")]

mod common;

use backend_kvm_plain::platform::{HOST_CALL_SIGNATURE, SYSTEM_OFF_SIGNATURE, X86_HOST_CALL_BLOCK};
use common::{kvm, r, run, vm_with_code, Asm, MMIO, RAM};
use cvm_core::Backend;
use cvm_core::{Error, ExitKind, LaunchState, MemoryKind, RegionError, Resume, VmExit};

/// `mask` of the low `size` bytes.
fn mask(size: u8) -> u64 {
    if size == 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

#[test]
fn hlt_is_halt_and_continues() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.hlt()
        .mov_imm(r::RDI, MMIO)
        .mov_imm(r::RAX, 7)
        .store_rdi(1)
        .hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: MMIO,
            size: 1,
            write: Some(7)
        }
    );
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
}

#[test]
fn entry_arguments_land_in_sysv_registers() {
    let Some(b) = kvm() else { return };
    // Store rdi, rsi, rdx, rcx, r8, r9 to MMIO one after the other (mov [r10], reg).
    let mut a = Asm::new();
    a.mov_imm(10, MMIO);
    let mut code = a.bytes();
    // 49 89 3a: mov [r10], rdi ; 49 89 32: rsi ; 49 89 12: rdx ; 49 89 0a: rcx
    // 4d 89 02: mov [r10], r8 ; 4d 89 0a: mov [r10], r9 ; then the stack args:
    // 48 8b 44 24 08: mov rax, [rsp+8] ; 49 89 02: mov [r10], rax ; 48 8b 44 24 10 ; 49 89 02
    code.extend_from_slice(&[
        0x49, 0x89, 0x3a, 0x49, 0x89, 0x32, 0x49, 0x89, 0x12, 0x49, 0x89, 0x0a, 0x4d, 0x89, 0x02,
        0x4d, 0x89, 0x0a, 0x48, 0x8b, 0x44, 0x24, 0x08, 0x49, 0x89, 0x02, 0x48, 0x8b, 0x44, 0x24,
        0x10, 0x49, 0x89, 0x02, 0xf4,
    ]);
    let args = [11, 22, 33, 44, 55, 66, 77, 88];
    let (_vm, mut vcpu) = vm_with_code(&b, &code, &args);
    for want in args {
        assert_eq!(
            run(&mut vcpu, Resume::Done),
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(want)
            }
        );
    }
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
}

#[test]
fn mmio_writes_of_every_width() {
    let Some(b) = kvm() else { return };
    let value = 0x8877_6655_4433_2211u64;
    let mut a = Asm::new();
    a.mov_imm(r::RAX, value);
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        a.mov_imm(r::RDI, MMIO + 0x10 * i as u64).store_rdi(size);
    }
    a.hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    for (i, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        assert_eq!(
            run(&mut vcpu, Resume::Done),
            VmExit::Mmio {
                gpa: MMIO + 0x10 * i as u64,
                size,
                write: Some(value & mask(size)),
            }
        );
    }
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    let stats = vcpu.stats();
    assert_eq!(stats.exits_of(ExitKind::MmioWrite), 4);
}

#[test]
fn mmio_reads_of_every_width_zero_and_sign_extended() {
    let Some(b) = kvm() else { return };
    // For each width: rax = load [rdi] (zero-ext), store to [rsi]; rax = load [rdi] (sign-ext),
    // store to [rsi]. The VMM answers every load with 0xf0e0_d0c0_b0a0_9080.
    let answer = 0xf0e0_d0c0_b0a0_9080u64;
    let report = MMIO + 0x800;
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO).mov_imm(r::RSI, report);
    for size in [1u8, 2, 4, 8] {
        a.load_rdi(size).store_rax_rsi();
        a.load_rdi_signed(size).store_rax_rsi();
    }
    a.hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    let mut resume = Resume::Done;
    for size in [1u8, 2, 4, 8] {
        for signed in [false, true] {
            let exit = run(&mut vcpu, resume);
            assert_eq!(
                exit,
                VmExit::Mmio {
                    gpa: MMIO,
                    size,
                    write: None
                }
            );
            let got = run(&mut vcpu, Resume::MmioRead(answer));
            let low = answer & mask(size);
            let want = if signed {
                cvm_core::sign_extend(low, size)
            } else {
                low
            };
            assert_eq!(
                got,
                VmExit::Mmio {
                    gpa: report,
                    size: 8,
                    write: Some(want)
                },
                "size {size} signed {signed}"
            );
            resume = Resume::Done;
        }
    }
    assert_eq!(run(&mut vcpu, resume), VmExit::Halt);
}

#[test]
fn pio_out_and_in() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDX, 0x3f8).mov_imm(r::RAX, 0x1234_5678);
    for size in [1u8, 2, 4] {
        a.out(size);
    }
    a.mov_imm(r::RDI, MMIO);
    for size in [1u8, 2, 4] {
        a.inp(size).store_rdi(8);
    }
    a.hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    for (size, v) in [(1u8, 0x78u32), (2, 0x5678), (4, 0x1234_5678)] {
        assert_eq!(
            run(&mut vcpu, Resume::Done),
            VmExit::Pio {
                port: 0x3f8,
                size,
                write: Some(v)
            }
        );
    }
    let mut resume = Resume::Done;
    for size in [1u8, 2, 4] {
        assert_eq!(
            run(&mut vcpu, resume),
            VmExit::Pio {
                port: 0x3f8,
                size,
                write: None
            }
        );
        let want = 0xdead_beefu32 as u64 & mask(size);
        assert_eq!(
            run(&mut vcpu, Resume::PioRead(0xdead_beef)),
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(want)
            }
        );
        resume = Resume::Done;
    }
    assert_eq!(run(&mut vcpu, resume), VmExit::Halt);
}

#[test]
fn map_gpa_range_is_convert_memory_answered_in_rax() {
    let Some(b) = kvm() else { return };
    if !b.caps().map_gpa_range_exit() {
        println!(
            "skipped: KVM_HC_MAP_GPA_RANGE cannot reach user space here (VMCALL usable: {}, \
             KVM_CAP_EXIT_HYPERCALL = {:#x})",
            b.caps().hypercall_insn,
            b.caps().exit_hypercall
        );
        return;
    }
    let mut a = Asm::new();
    // share 2 pages at RAM + 0x8000, report rax; unshare 1 page, report rax.
    a.mov_imm(r::RDI, MMIO);
    a.mov_imm(r::RAX, 12)
        .mov_imm(r::RBX, RAM + 0x8000)
        .mov_imm(r::RCX, 2)
        .mov_imm(r::RDX, 0);
    a.vmcall().store_rdi(8);
    a.mov_imm(r::RAX, 12)
        .mov_imm(r::RBX, RAM + 0x8000)
        .mov_imm(r::RCX, 1)
        .mov_imm(r::RDX, 1 << 4);
    a.vmcall().store_rdi(8);
    a.mov_imm(r::RAX, 12)
        .mov_imm(r::RBX, RAM + 0x8000)
        .mov_imm(r::RCX, 1)
        .mov_imm(r::RDX, 1 << 4);
    a.vmcall().store_rdi(8).hlt();
    let (vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::ConvertMemory {
            gpa: RAM + 0x8000,
            size: 0x2000,
            to_private: false
        }
    );
    // To shared on a host without private memory: accepted as a no-op, rax = 0.
    assert_eq!(
        run(&mut vcpu, Resume::Conversion(true)),
        VmExit::Mmio {
            gpa: MMIO,
            size: 8,
            write: Some(0)
        }
    );
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::ConvertMemory {
            gpa: RAM + 0x8000,
            size: 0x1000,
            to_private: true
        }
    );
    if !vm.backend_private_memory() {
        // Accepting a conversion to private cannot be done here: a typed error naming the
        // capability, and the exit stays pending.
        match vcpu.run(Resume::Conversion(true)) {
            Err(Error::Region(RegionError::KindUnsupported {
                kind: MemoryKind::Private,
                reason,
            })) => {
                assert!(reason.contains("KVM_CAP_MEMORY_ATTRIBUTES"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            vcpu.pending().map(VmExit::kind),
            Some(ExitKind::ConvertMemory)
        );
        // Refusing answers -KVM_EPERM.
        assert_eq!(
            run(&mut vcpu, Resume::Conversion(false)),
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(1u64.wrapping_neg())
            }
        );
    } else {
        assert_eq!(
            run(&mut vcpu, Resume::Conversion(false)),
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(1u64.wrapping_neg())
            }
        );
    }
    assert!(matches!(
        run(&mut vcpu, Resume::Done),
        VmExit::ConvertMemory { .. }
    ));
    assert_eq!(
        run(&mut vcpu, Resume::Conversion(false)),
        VmExit::Mmio {
            gpa: MMIO,
            size: 8,
            write: Some(1u64.wrapping_neg())
        }
    );
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
}

/// Whether the backend offers private memory (from its info).
trait PrivateInfo {
    fn backend_private_memory(&self) -> bool;
}
impl PrivateInfo for Box<dyn cvm_core::Vm> {
    fn backend_private_memory(&self) -> bool {
        backend_kvm_plain::KvmBackend::probe().private_memory
    }
}

#[test]
fn unknown_vmcall_never_leaves_kvm() {
    // Documents why x86 host calls are signed HLTs: KVM answers unknown hypercalls itself
    // with -KVM_ENOSYS (-1000) and never exits to user space. Under kvm_pvm, where VMCALL
    // cannot run, the backend makes it a #UD, i.e. a Fault exit, never a hung vCPU.
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO)
        .mov_imm(r::RAX, 0x4242)
        .vmcall()
        .store_rdi(8)
        .hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    let exit = run(&mut vcpu, Resume::Done);
    if b.caps().hypercall_insn {
        assert_eq!(
            exit,
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(1000u64.wrapping_neg())
            }
        );
    } else {
        assert!(matches!(exit, VmExit::Fault { .. }), "{exit:?}");
    }
}

#[test]
fn signed_hlt_is_host_call_and_system_off() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDI, X86_HOST_CALL_BLOCK)
        .mov_imm(r::RAX, 5)
        .store_rdi(8);
    a.mov_imm(r::RDI, X86_HOST_CALL_BLOCK + 8)
        .mov_imm(r::RAX, 6)
        .store_rdi(8);
    a.mov_imm(r::RAX, 0x77)
        .mov_imm(r::RBX, HOST_CALL_SIGNATURE)
        .mov_imm(r::RDI, 1)
        .mov_imm(r::RSI, 2)
        .mov_imm(r::RDX, 3)
        .mov_imm(r::RCX, 4)
        .hlt();
    // Report rax, rdx and rbx (cleared by the backend) through MMIO.
    a.mov_imm(r::RDI, MMIO).store_rdi(8);
    a.b_mov_rdx_to_rax().store_rdi(8);
    a.b_mov_rbx_to_rax().store_rdi(8);
    a.mov_imm(r::RBX, SYSTEM_OFF_SIGNATURE).hlt();
    let (vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::HostCall {
            nr: 0x77,
            args: [1, 2, 3, 4, 5, 6]
        }
    );
    // A host call must be answered with HostCall.
    assert!(matches!(
        vcpu.run(Resume::Done),
        Err(Error::ResumeMismatch { .. })
    ));
    for want in [0xaaaa, 0xbbbb, 0] {
        let resume = if want == 0xaaaa {
            Resume::HostCall([0xaaaa, 0xbbbb])
        } else {
            Resume::Done
        };
        assert_eq!(
            run(&mut vcpu, resume),
            VmExit::Mmio {
                gpa: MMIO,
                size: 8,
                write: Some(want)
            }
        );
    }
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::SystemOff);
    assert_eq!(vm.state(), LaunchState::Off);
    assert!(matches!(
        vcpu.run(Resume::Done),
        Err(Error::InvalidState { .. })
    ));
}

#[test]
fn triple_fault_is_fault_with_reason() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.ud2(); // no IDT: #UD → #DF → triple fault
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    match run(&mut vcpu, Resume::Done) {
        VmExit::Fault { reason, .. } => assert!(reason.contains("triple fault"), "{reason}"),
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn inject_abort_is_refused_on_x86_and_nothing_is_entered() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO)
        .load_rdi(4)
        .mov_imm(r::RSI, MMIO + 8)
        .store_rax_rsi()
        .hlt();
    let (_vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: MMIO,
            size: 4,
            write: None
        }
    );
    assert!(matches!(
        vcpu.run(Resume::InjectAbort),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        vcpu.run(Resume::PioRead(1)),
        Err(Error::ResumeMismatch { .. })
    ));
    assert_eq!(vcpu.pending().map(VmExit::kind), Some(ExitKind::MmioRead));
    assert_eq!(
        run(&mut vcpu, Resume::MmioRead(5)),
        VmExit::Mmio {
            gpa: MMIO + 8,
            size: 8,
            write: Some(5)
        }
    );
}

#[test]
fn repeated_mmio_loop() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO).mov_imm(r::RCX, 1000);
    let top = a.here();
    a.b_mov_rcx_to_rax().store_rdi(4).loop_rcx(top).hlt();
    let (vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    for i in (1..=1000u64).rev() {
        assert_eq!(
            run(&mut vcpu, Resume::Done),
            VmExit::Mmio {
                gpa: MMIO,
                size: 4,
                write: Some(i)
            }
        );
    }
    assert_eq!(run(&mut vcpu, Resume::Done), VmExit::Halt);
    assert_eq!(vm.stats().exits_of(ExitKind::MmioWrite), 1000);
}

/// Register moves the common assembler lacks.
trait Moves {
    fn b_mov_rdx_to_rax(&mut self) -> &mut Self;
    fn b_mov_rbx_to_rax(&mut self) -> &mut Self;
    fn b_mov_rcx_to_rax(&mut self) -> &mut Self;
}
impl Moves for Asm {
    fn b_mov_rdx_to_rax(&mut self) -> &mut Self {
        self.code.extend_from_slice(&[0x48, 0x89, 0xd0]);
        self
    }
    fn b_mov_rbx_to_rax(&mut self) -> &mut Self {
        self.code.extend_from_slice(&[0x48, 0x89, 0xd8]);
        self
    }
    fn b_mov_rcx_to_rax(&mut self) -> &mut Self {
        self.code.extend_from_slice(&[0x48, 0x89, 0xc8]);
        self
    }
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

#[test]
fn a_signal_is_interrupted_not_a_guest_exit() {
    let Some(b) = kvm() else { return };
    // SAFETY: installs a handler that does nothing, without SA_RESTART, so KVM_RUN returns EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    // jmp $ : spins in the guest without exiting.
    let (_vm, mut vcpu) = vm_with_code(&b, &[0xeb, 0xfe], &[]);
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let first = vcpu.run(Resume::Done).unwrap();
        (first, vcpu)
    });
    let thread = rx.recv().unwrap();
    while !t.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(20));
        // SAFETY: the thread is alive (not finished) and has a handler for SIGUSR1.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
    }
    let (first, mut vcpu) = t.join().unwrap();
    assert_eq!(first, VmExit::Interrupted);
    assert_eq!(vcpu.stats().exits_of(ExitKind::Interrupted), 1);
    assert_eq!(vcpu.pending(), Some(&VmExit::Interrupted));
    // Interrupted is answered with Done.
    assert!(matches!(
        vcpu.run(Resume::MmioRead(0)),
        Err(Error::ResumeMismatch { .. })
    ));
}

#[test]
fn exit_detail_and_ioctl_counters_describe_what_kvm_did() {
    let Some(b) = kvm() else { return };
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO).load_rdi(4).hlt();
    let (vm, mut vcpu) = vm_with_code(&b, &a.bytes(), &[]);
    assert!(vcpu.exit_detail().is_none(), "no exit yet");
    assert_eq!(
        run(&mut vcpu, Resume::Done),
        VmExit::Mmio {
            gpa: MMIO,
            size: 4,
            write: None
        }
    );
    let d = vcpu.exit_detail().unwrap();
    assert_eq!(d.reason, "KVM_EXIT_MMIO (load)");
    assert!(d.registers.contains(&("mmio.phys_addr".to_string(), MMIO)));
    assert!(d.registers.contains(&("mmio.len".to_string(), 4)));
    assert_eq!(d.channel, "kvm_run.mmio.data");
    assert_eq!(run(&mut vcpu, Resume::MmioRead(5)), VmExit::Halt);
    let stats = vm.stats();
    assert_eq!(stats.calls_of("KVM_CREATE_VM"), 1);
    assert_eq!(stats.calls_of("KVM_CREATE_VCPU"), 1);
    assert_eq!(stats.calls_of("KVM_SET_SREGS"), 1);
    assert!(stats.calls_of("KVM_RUN") >= 2, "{stats:?}");
    assert!(stats.calls_of("KVM_CREATE_GUEST_MEMFD") + stats.calls_of("memfd_create") >= 1);
}

#[test]
fn cpuid_feature_registers_reach_the_guest_and_freeze() {
    let Some(b) = kvm() else { return };
    // mov rdi, MMIO ; mov eax, 1 ; xor ecx, ecx ; cpuid ; mov [rdi], ecx ; hlt
    let mut a = Asm::new();
    a.mov_imm(r::RDI, MMIO);
    let mut code = a.bytes();
    code.extend_from_slice(&[0xb8, 1, 0, 0, 0, 0x31, 0xc9, 0x0f, 0xa2, 0x89, 0x0f, 0xf4]);
    let (vm, mut vcpu) = vm_with_code(&b, &code, &[]);
    let name = "CPUID.01H:ECX";
    let intercepted = b
        .info()
        .capabilities
        .iter()
        .any(|c| c.name == "x86.cpuid_interception" && c.present);
    let Some(def) = vm.feature_defs().into_iter().find(|d| d.name == name) else {
        assert!(
            !intercepted,
            "CPUID is intercepted, so {name} must be offered"
        );
        println!("skipped: this KVM does not intercept CPUID (kvm_pvm), so no CPUID feature registers are offered");
        return;
    };
    assert!(def.can_disable && !def.can_enable);
    // A bit the host does not support cannot be set.
    let unsupported = (0..32).map(|b| 1u64 << b).find(|b| def.default & b == 0);
    if let Some(bit) = unsupported {
        assert!(matches!(
            vm.set_feature(name, def.default | bit),
            Err(Error::FeatureRejected { .. })
        ));
    }
    // Hide the lowest supported bit that is not the hypervisor bit (31).
    let hide = (0..31)
        .map(|b| 1u64 << b)
        .find(|b| def.default & b != 0)
        .expect("some CPUID.01H:ECX feature");
    let value = def.default & !hide;
    vm.set_feature(name, value).unwrap();
    match run(&mut vcpu, Resume::Done) {
        VmExit::Mmio {
            gpa: MMIO,
            size: 4,
            write: Some(ecx),
        } => {
            assert_eq!(
                ecx & hide,
                0,
                "the hidden bit must be clear in the guest's CPUID"
            );
            // Nothing beyond the register, except what KVM updates at run time (OSXSAVE
            // follows CR4, bit 31 marks a hypervisor).
            let runtime = (1u64 << 27) | (1u64 << 31);
            assert_eq!(
                ecx & !value & !runtime,
                0,
                "guest ecx {ecx:#x}, register {value:#x}"
            );
        }
        other => panic!("expected the CPUID result as an MMIO write, got {other:?}"),
    }
    // Frozen after the first run: the same value is fine, another is Busy.
    vm.set_feature(name, value).unwrap();
    assert!(matches!(
        vm.set_feature(name, def.default),
        Err(Error::Busy { .. })
    ));
}
