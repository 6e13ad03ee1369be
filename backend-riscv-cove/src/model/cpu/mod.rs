//! RV64 guest CPU interpreter for the in-process TSM model.
//!
//! One hart of a TVM running with V=1 (VS-mode, or VU-mode after the guest's own SRET),
//! implementing RV64I, M, C, Zicsr, Zifencei and the supervisor instructions a VS-mode guest
//! uses (SRET, WFI, SFENCE.VMA). Memory is reached through a [`Bus`] that the TSM model
//! implements over the TVM's G-stage; `vsatp` is Bare only, so guest virtual = guest
//! physical addresses.
//!
//! Every exception the guest raises leaves the interpreter as an [`Exit::Trap`] carrying what
//! hardware would report to HS-mode (`scause`, `stval`, `htval`, `htinst`, `sepc`); the TSM
//! decides what to do (handle it, or deliver it into the guest with
//! [`Rv64Cpu::inject_exception`]). Nothing a guest does can panic the host, and the
//! interpreter allocates nothing per instruction.

mod compressed;
pub mod csr;
mod decode;
mod exec;
pub mod trap;

#[cfg(test)]
mod tests;

pub use decode::{decode_csr, decode_htinst, decode_mmio, CsrAccess, CsrOp, CsrSrc, MmioAccess};

use trap::Cur;

/// What the CPU sees of memory: the TSM model implements it over the TVM's G-stage
/// (regions + pages).
pub trait Bus {
    /// Reads `size` (1, 2, 4 or 8) bytes little-endian at guest physical `addr` (naturally
    /// aligned). Bits above `size` bytes in the result are ignored.
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault>;
    /// Writes the low `size` (1, 2, 4 or 8) bytes of `value` little-endian at `addr`
    /// (naturally aligned).
    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault>;
    /// Fetches the 16-bit instruction parcel at `addr` (2-byte aligned; C extension).
    fn fetch(&mut self, addr: u64) -> Result<u16, BusFault>;
}

/// Why a [`Bus`] access failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFault {
    /// No G-stage mapping (or insufficient permission): guest-page fault (scause 20/21/23).
    GuestPageFault,
    /// The address is not backed by anything: access fault (scause 1/5/7).
    AccessFault,
}

/// A trap taken to HS-mode (the TSM), with exactly what the hardware would report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trap {
    /// Exception code: 2 illegal instruction, 3 breakpoint, 4/6 load/store misaligned,
    /// 1/5/7 access faults, 8 ecall from VU, 10 ecall from VS, 20/21/23 instruction/load/
    /// store guest-page fault, 22 virtual instruction (see [`trap`] for the constants).
    pub scause: u64,
    /// Faulting guest virtual address (== GPA: no guest paging) for address exceptions
    /// (after pointer masking), the instruction bits for illegal/virtual instruction, the
    /// EBREAK's address for breakpoints, 0 for ECALL.
    pub stval: u64,
    /// Guest physical address >> 2 for guest-page faults, else 0.
    pub htval: u64,
    /// Transformed instruction for load/store guest-page faults (Privileged spec,
    /// "Transformed instruction or pseudoinstruction for mtinst or htinst"): rs1 and the
    /// offset zeroed, bit 1 = 1 for a 32-bit instruction, bit 1 = 0 when the trapping
    /// instruction was compressed (the transformed 32-bit equivalent). 0 otherwise.
    pub htinst: u64,
    /// `sepc`: the address of the trapping instruction.
    pub pc: u64,
    /// The raw instruction (16-bit ones zero-extended); 0 for instruction-fetch faults.
    pub insn: u32,
    /// 2 or 4; 0 for instruction-fetch faults (no instruction was fetched).
    pub insn_len: u8,
}

/// Why [`Rv64Cpu::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest trapped to HS-mode; the CPU state is at the trapping instruction.
    Trap(Trap),
    /// The instruction budget ran out.
    Budget,
}

/// The guest's current nominal privilege (V=1 always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// VS-mode.
    Supervisor,
    /// VU-mode.
    User,
}

/// One RV64 hart running in VS/VU-mode.
#[derive(Debug, Clone)]
pub struct Rv64Cpu {
    x: [u64; 32],
    pc: u64,
    mode: Mode,
    sstatus: u64,
    sie: u64,
    stvec: u64,
    scounteren: u64,
    senvcfg: u64,
    sscratch: u64,
    sepc: u64,
    scause: u64,
    stval: u64,
    sip: u64,
    cycle: u64,
    time: u64,
    instret: u64,
    retired: u64,
    pmlen: u8,
}

impl Default for Rv64Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Rv64Cpu {
    /// A hart in VS-mode (V=1, S privilege) with every register and CSR 0.
    pub fn new() -> Self {
        Self {
            x: [0; 32],
            pc: 0,
            mode: Mode::Supervisor,
            sstatus: 0,
            sie: 0,
            stvec: 0,
            scounteren: 0,
            senvcfg: 0,
            sscratch: 0,
            sepc: 0,
            scause: 0,
            stval: 0,
            sip: 0,
            cycle: 0,
            time: 0,
            instret: 0,
            retired: 0,
            pmlen: 0,
        }
    }

    /// Integer register `n` (x0 reads 0; `n` >= 32 reads 0).
    pub fn x(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Sets integer register `n`; writes to x0 (and `n` >= 32) are ignored.
    pub fn set_x(&mut self, n: u8, v: u64) {
        if n != 0 {
            if let Some(r) = self.x.get_mut(usize::from(n)) {
                *r = v;
            }
        }
    }

    /// The program counter (address of the next instruction).
    pub fn pc(&self) -> u64 {
        self.pc
    }

    /// Sets the program counter; bit 0 is cleared (IALIGN = 16 with the C extension).
    pub fn set_pc(&mut self, pc: u64) {
        self.pc = pc & !1;
    }

    /// The guest's current privilege (VS or VU).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets the guest's privilege (e.g. to start a vCPU in VU-mode for tests).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Reads a CSR by its guest-visible (S-level) number: sstatus 0x100, sie 0x104,
    /// stvec 0x105, scounteren 0x106, senvcfg 0x10A, sscratch 0x140, sepc 0x141,
    /// scause 0x142, stval 0x143, sip 0x144, satp 0x180, cycle/time/instret 0xC00..=0xC02.
    /// `None` for anything else (including seed 0x015, which the CPU never answers).
    pub fn csr(&self, csr: u16) -> Option<u64> {
        self.csr_value(csr)
    }

    /// Host-side write of a CSR (same numbering as [`Rv64Cpu::csr`]) with the CSR's WARL
    /// rules; the host may also set `sip` STIP/SEIP and the counters. Returns false for
    /// unknown CSRs and for `satp` values other than 0 (Bare).
    pub fn set_csr(&mut self, csr: u16, v: u64) -> bool {
        self.csr_store(csr, v, false)
    }

    /// Pointer-masking length for VS-mode data accesses (`henvcfg.PMM`, set by the TSM when
    /// the guest asks through SBI FWFT): 0 (off), 7 or 16. Other values are a WARL-illegal
    /// write and leave the setting unchanged.
    pub fn set_pmlen(&mut self, pmlen: u8) {
        if matches!(pmlen, 0 | 7 | 16) {
            self.pmlen = pmlen;
        }
    }

    /// The VS-mode pointer-masking length (0, 7 or 16).
    pub fn pmlen(&self) -> u8 {
        self.pmlen
    }

    /// Instructions retired since creation (trapping instructions do not retire).
    pub fn instructions_retired(&self) -> u64 {
        self.retired
    }

    /// Applies pointer masking to an explicit data address (Pointer Masking Extensions,
    /// "The Ignore Transformation" and "Smnpm"/"Ssnpm"). VS-mode uses `henvcfg.PMM`
    /// ([`Rv64Cpu::set_pmlen`]), VU-mode the guest's `senvcfg.PMM`. Since `vsatp` is Bare the
    /// addresses are guest-physical, for which the spec's transformation *zero-extends*
    /// ("When applied to a physical address, including guest-physical addresses ... the
    /// ignore transformation replaces the upper PMLEN bits with 0"; Smnpm note: "in VS/VU
    /// mode with vsatp.MODE = Bare, physical address pointer masking (zero extension)
    /// applies"). It does not apply while `sstatus.MXR` = 1, nor to instruction fetches.
    pub(crate) fn mask_data_address(&self, addr: u64) -> u64 {
        if self.sstatus & csr::SSTATUS_MXR != 0 {
            return addr;
        }
        let pmlen = match self.mode {
            Mode::Supervisor => u32::from(self.pmlen),
            Mode::User => match (self.senvcfg >> 32) & 3 {
                2 => 7,
                3 => 16,
                _ => 0,
            },
        };
        if pmlen == 0 {
            addr
        } else {
            addr & (u64::MAX >> pmlen)
        }
    }

    /// Fetches the instruction at `pc`: (raw bits, length).
    fn fetch<B: Bus>(&mut self, bus: &mut B, pc: u64) -> Result<(u32, u8), Trap> {
        let fault = |addr: u64, f: BusFault| {
            let (scause, htval) = match f {
                BusFault::GuestPageFault => (trap::CAUSE_FETCH_GUEST_PAGE_FAULT, addr >> 2),
                BusFault::AccessFault => (trap::CAUSE_FETCH_ACCESS, 0),
            };
            // Privileged spec ("Supervisor Trap Value (stval) Register"): for a fetch fault
            // on a variable-length instruction stval holds the address of the faulting
            // portion while sepc points at the instruction.
            Trap {
                scause,
                stval: addr,
                htval,
                htinst: 0,
                pc,
                insn: 0,
                insn_len: 0,
            }
        };
        let lo = bus.fetch(pc).map_err(|f| fault(pc, f))?;
        if lo & 3 != 3 {
            return Ok((u32::from(lo), 2));
        }
        let hi_addr = pc.wrapping_add(2);
        let hi = bus.fetch(hi_addr).map_err(|f| fault(hi_addr, f))?;
        Ok((u32::from(lo) | (u32::from(hi) << 16), 4))
    }

    /// Executes one instruction. `None` when it retired, `Some(Exit::Trap)` when it trapped
    /// (the pc then still points at it). Never returns `Exit::Budget`.
    pub fn step<B: Bus>(&mut self, bus: &mut B) -> Option<Exit> {
        match self.step_inner(bus) {
            Ok(()) => {
                self.retired = self.retired.wrapping_add(1);
                self.instret = self.instret.wrapping_add(1);
                self.cycle = self.cycle.wrapping_add(1);
                self.time = self.time.wrapping_add(1);
                None
            }
            Err(t) => Some(Exit::Trap(t)),
        }
    }

    fn step_inner<B: Bus>(&mut self, bus: &mut B) -> Result<(), Trap> {
        let pc = self.pc;
        let (raw, len) = self.fetch(bus, pc)?;
        let insn32 = if len == 2 {
            compressed::expand(raw as u16)
        } else {
            Some(raw)
        };
        let cur = Cur {
            pc,
            raw,
            insn: insn32.unwrap_or(0),
            len,
        };
        match insn32.and_then(decode::decode32) {
            Some(decoded) => self.execute(bus, &cur, decoded),
            None => Err(cur.illegal()),
        }
    }

    /// Runs until the guest traps or `budget` instructions have retired.
    pub fn run<B: Bus>(&mut self, bus: &mut B, budget: u64) -> Exit {
        for _ in 0..budget {
            if let Some(exit) = self.step(bus) {
                return exit;
            }
        }
        Exit::Budget
    }

    /// Common trap entry into the guest's own S-level handler (Privileged spec,
    /// "Supervisor Status (sstatus) Register": SPP, SPIE, SIE on trap entry).
    fn enter_guest_trap(&mut self, scause: u64, stval: u64, target: u64) {
        self.sepc = self.pc & !1;
        self.scause = scause;
        self.stval = stval;
        let mut s = self.sstatus & !(csr::SSTATUS_SPP | csr::SSTATUS_SPIE | csr::SSTATUS_SIE);
        if self.sstatus & csr::SSTATUS_SIE != 0 {
            s |= csr::SSTATUS_SPIE;
        }
        if self.mode == Mode::Supervisor {
            s |= csr::SSTATUS_SPP;
        }
        self.sstatus = s;
        self.mode = Mode::Supervisor;
        self.pc = target & !1;
    }

    /// Deliver an exception into the guest (what the TSM does to inject e.g. illegal
    /// instruction): sepc = pc, scause = cause, stval = tval, sstatus.SPP/SPIE/SIE updated,
    /// pc = stvec BASE (exceptions always use direct mode).
    pub fn inject_exception(&mut self, cause: u64, tval: u64) {
        self.enter_guest_trap(cause & !trap::CAUSE_INTERRUPT, tval, self.stvec & !3);
    }

    /// Deliver a supervisor interrupt into the guest if it is enabled: `cause` is the
    /// interrupt code with or without bit 63 (9 external, 5 timer, 1 software). Taken when
    /// `sie` has the code's bit set and the guest has interrupts globally enabled
    /// (`sstatus.SIE` in VS-mode; always in VU-mode). Then sepc = pc, scause = code | 1<<63,
    /// stval = 0, SPP/SPIE/SIE updated, pc = stvec BASE (+ 4 × code in vectored mode).
    /// Returns whether it was taken.
    pub fn inject_interrupt(&mut self, cause: u64) -> bool {
        let code = cause & !trap::CAUSE_INTERRUPT;
        if !matches!(code, 1 | 5 | 9) || (self.sie >> code) & 1 == 0 {
            return false;
        }
        if self.mode == Mode::Supervisor && self.sstatus & csr::SSTATUS_SIE == 0 {
            return false;
        }
        let base = self.stvec & !3;
        let target = if self.stvec & 3 == 1 {
            base.wrapping_add(4 * code)
        } else {
            base
        };
        self.enter_guest_trap(code | trap::CAUSE_INTERRUPT, 0, target);
        true
    }

    /// SRET from VS-mode (Privileged spec "Trap-Return Instructions"): privilege = SPP,
    /// SIE = SPIE, SPIE = 1, SPP = U. The caller sets pc = sepc.
    fn sret(&mut self) {
        let s = self.sstatus;
        self.mode = if s & csr::SSTATUS_SPP != 0 {
            Mode::Supervisor
        } else {
            Mode::User
        };
        let mut n = s & !(csr::SSTATUS_SIE | csr::SSTATUS_SPP);
        if s & csr::SSTATUS_SPIE != 0 {
            n |= csr::SSTATUS_SIE;
        }
        n |= csr::SSTATUS_SPIE;
        self.sstatus = n;
    }
}
