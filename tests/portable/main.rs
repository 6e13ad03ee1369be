//! The portable confidential-guest suite: every test body is written once and generated for
//! each backend (`<name>_kvm`, `<name>_arm_cca`, `<name>_riscv_cove`).
//!
//! * `kvm` runs on this host's `/dev/kvm` (x86-64 guests here). Without it the KVM tests print
//!   `skipped: <reason>` — or fail when `CVM_REQUIRE_KVM=1`.
//! * `arm-cca` and `riscv-cove` run on the in-process RMM / TSM models and are always available.
//!
//! A body that needs a capability a backend genuinely lacks (`BackendInfo`, or the platform's
//! `NotSupported` from `lower`/`launch`) prints `skipped: <backend>: <reason>` and returns; it
//! never weakens what it checks where the capability exists.
//!
//! | file | what |
//! |---|---|
//! | `basics.rs` | ucall smoke, MMIO of every width with sign extension, a device at the top of the address space, failing `expect`, `exit_detail` of MMIO exits |
//! | `memory.rs` | private memory stays private, share → unshare with the host seeing shared data, rejected conversions, a VMM shared region seen both ways |
//! | `selftests.rs` | mirrors of KVM's `private_mem_conversions_test`, `private_mem_kvm_exits_test`, `guest_memfd_test` (host-side region checks) |
//! | `measurement.rs` | guest-visible launch measurement = offline replay of the log |
//! | `lifecycle.rs` | lifecycle misuse, resume mismatch, feature registers freezing at the first run |
//! | `smp.rs` | two vCPUs, the second started through the platform (PSCI CPU_ON / SBI HSM / host) |
//! | `teardown.rs` | nothing left behind after destroy + drop (model counters, KVM fds) |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod harness;

mod basics;
mod lifecycle;
mod measurement;
mod memory;
mod selftests;
mod smp;
mod teardown;
