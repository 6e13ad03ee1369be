//! Benchmark: the cost of one MMIO-write exit through raw kvm-ioctls and through cvm.
//!
//! `cargo run --release -p backend-kvm-plain --example exit_roundtrip`
//!
//! Both paths run the same x86-64 long-mode guest (`loop: mov [rdi], eax; jmp loop`) in one
//! process; rounds alternate between them (21 rounds × 5 000 exits each); `raw_us`/`cvm_us` are
//! the medians and `ratio` is the median of the per-round (paired) ratios, which cancels slow
//! drifts in background load. The last line is one JSON object: `{"raw_us", "cvm_us", "ratio", "create_ms"}`,
//! where `create_ms` is the median, over 5 VMs, of the cvm path's VM + vCPU creation (memory,
//! load and finalize included) to the first exit.

#[cfg(target_arch = "x86_64")]
mod bench {
    use std::time::Instant;

    use backend_kvm_plain::KvmBackend;
    use cvm_core::{Backend, Measure, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig, VmExit};
    use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

    const ROUNDS: usize = 21;
    const EXITS: usize = 5_000;
    const CODE: u64 = 0x10_0000;
    const MMIO: u64 = 0x3000_0000;

    type Res<T> = Result<T, Box<dyn std::error::Error>>;

    /// `mov rdi, MMIO; mov eax, 1; loop: mov [rdi], eax; jmp loop`
    fn guest() -> Vec<u8> {
        let mut c = vec![0x48, 0xbf];
        c.extend_from_slice(&MMIO.to_le_bytes());
        c.extend_from_slice(&[0xb8, 1, 0, 0, 0]);
        c.extend_from_slice(&[0x89, 0x07, 0xeb, 0xfc]);
        c
    }

    /// The raw path: a hand-made long-mode VM on kvm-ioctls (2 MiB of anonymous memory at 0:
    /// PML4 at 0x1000, PDPT 0x2000, PD 0x3000 mapping 1 GiB with 2 MiB pages, GDT 0x4000).
    struct Raw {
        vcpu: VcpuFd,
        _vm: VmFd,
        mem: *mut u8,
        size: usize,
    }

    impl Drop for Raw {
        fn drop(&mut self) {
            // SAFETY: `mem` is the `size`-byte mapping made in `Raw::new`; nothing else uses it.
            unsafe { libc::munmap(self.mem.cast(), self.size) };
        }
    }

    impl Raw {
        fn new(kvm: &Kvm) -> Res<Self> {
            let vm = kvm.create_vm()?;
            let size = 0x20_0000usize;
            // SAFETY: a fresh anonymous mapping; the result is checked.
            let mem = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_ANONYMOUS | libc::MAP_SHARED | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if mem == libc::MAP_FAILED {
                return Err("mmap failed".into());
            }
            let mem = mem.cast::<u8>();
            let put = |off: usize, bytes: &[u8]| {
                assert!(off + bytes.len() <= size);
                // SAFETY: in bounds of the mapping (asserted).
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.add(off), bytes.len()) };
            };
            put(0x1000, &(0x2000u64 | 3).to_le_bytes());
            put(0x2000, &(0x3000u64 | 3).to_le_bytes());
            for i in 0..512u64 {
                put(0x3000 + i as usize * 8, &((i << 21) | 0x83).to_le_bytes());
            }
            put(0x4008, &0x00af_9b00_0000_ffffu64.to_le_bytes());
            put(0x4010, &0x00cf_9300_0000_ffffu64.to_le_bytes());
            put(CODE as usize, &guest());
            let region = kvm_userspace_memory_region {
                slot: 0,
                flags: 0,
                guest_phys_addr: 0,
                memory_size: size as u64,
                userspace_addr: mem as u64,
            };
            // SAFETY: the mapping outlives the VM (dropped after `_vm` in `Drop`).
            unsafe { vm.set_user_memory_region(region)? };
            let vcpu = vm.create_vcpu(0)?;
            vcpu.set_cpuid2(&kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)?)?;
            let mut s = vcpu.get_sregs()?;
            let code = kvm_segment {
                base: 0,
                limit: 0xffff_ffff,
                selector: 8,
                type_: 0xb,
                present: 1,
                s: 1,
                l: 1,
                g: 1,
                ..Default::default()
            };
            let data = kvm_segment {
                selector: 0x10,
                type_: 3,
                l: 0,
                db: 1,
                ..code
            };
            s.cs = code;
            s.ds = data;
            s.es = data;
            s.fs = data;
            s.gs = data;
            s.ss = data;
            s.gdt.base = 0x4000;
            s.gdt.limit = 23;
            s.cr0 = 0x8005_0033;
            s.cr3 = 0x1000;
            s.cr4 = 0x620;
            s.efer = 0x500;
            vcpu.set_sregs(&s)?;
            let mut r = vcpu.get_regs()?;
            r.rip = CODE;
            r.rflags = 2;
            vcpu.set_regs(&r)?;
            Ok(Raw {
                vcpu,
                _vm: vm,
                mem,
                size,
            })
        }

        /// µs per exit over `n` MMIO exits.
        fn round(&mut self, n: usize) -> Res<f64> {
            let t = Instant::now();
            for _ in 0..n {
                match self.vcpu.run()? {
                    VcpuExit::MmioWrite(..) => {}
                    other => return Err(format!("raw: unexpected {other:?}").into()),
                }
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
        }
    }

    /// The cvm path: the same guest through `Backend` → `Vm` → `Vcpu`.
    /// A cvm VM, its vCPU and the first exit.
    type CvmVm = (Box<dyn Vm>, Box<dyn Vcpu>, VmExit);

    fn cvm_vm(b: &KvmBackend) -> Res<CvmVm> {
        let vm = b.create_vm(&VmConfig::default())?;
        vm.add_memory(MemoryRegion::shared(CODE, 0x1000))?;
        vm.load(CODE, &guest(), Measure::Yes)?;
        let mut vcpu = vm.create_vcpu(VcpuInit::boot(CODE, &[]))?;
        vm.finalize()?;
        let first = vcpu.run(Resume::Done)?;
        Ok((vm, vcpu, first))
    }

    fn cvm_round(vcpu: &mut Box<dyn Vcpu>, n: usize) -> Res<f64> {
        let t = Instant::now();
        for _ in 0..n {
            match vcpu.run(Resume::Done)? {
                VmExit::Mmio { write: Some(_), .. } => {}
                other => return Err(format!("cvm: unexpected {other:?}").into()),
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn run() -> Res<()> {
        let kvm = Kvm::new()?;
        let backend = KvmBackend::open()?;

        let mut create = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let (vm, vcpu, first) = cvm_vm(&backend)?;
            create.push(t.elapsed().as_secs_f64() * 1e3);
            if !matches!(first, VmExit::Mmio { .. }) {
                return Err(format!("cvm: first exit {first:?}").into());
            }
            drop(vcpu);
            drop(vm);
        }

        let mut raw = Raw::new(&kvm)?;
        let (_vm, mut vcpu, _) = cvm_vm(&backend)?;
        // Warm up both.
        raw.round(2_000)?;
        cvm_round(&mut vcpu, 2_000)?;
        let (mut raw_us, mut cvm_us) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternate which path goes first.
            if round % 2 == 0 {
                raw_us.push(raw.round(EXITS)?);
                cvm_us.push(cvm_round(&mut vcpu, EXITS)?);
            } else {
                cvm_us.push(cvm_round(&mut vcpu, EXITS)?);
                raw_us.push(raw.round(EXITS)?);
            }
            println!(
                "round {round}: raw {:.3} µs/exit, cvm {:.3} µs/exit",
                raw_us[round], cvm_us[round]
            );
        }
        let paired: Vec<f64> = cvm_us.iter().zip(&raw_us).map(|(c, r)| c / r).collect();
        let (r, c) = (median(raw_us), median(cvm_us));
        println!(
            "{{\"raw_us\": {r:.3}, \"cvm_us\": {c:.3}, \"ratio\": {:.3}, \"create_ms\": {:.3}}}",
            median(paired),
            median(create)
        );
        Ok(())
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if let Err(e) = bench::run() {
        eprintln!("exit_roundtrip: {e}");
        std::process::exit(1);
    }
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("exit_roundtrip: the benchmark guest is x86-64 only");
}
