//! Counters of exits by kind and firmware calls by name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::exit::ExitKind;

/// A snapshot of a VM's or vCPU's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Exits by kind name (`mmio_read`, …); kinds never seen are absent.
    pub exits: BTreeMap<String, u64>,
    /// Firmware calls (RMI_*, COVH_*, ioctls) by name.
    pub firmware_calls: BTreeMap<String, u64>,
    /// Other named counters (pages delegated, fences, …).
    pub counters: BTreeMap<String, u64>,
}

impl Stats {
    /// Exits of `kind`.
    pub fn exits_of(&self, kind: ExitKind) -> u64 {
        self.exits.get(kind.name()).copied().unwrap_or(0)
    }

    /// Calls named `name`.
    pub fn calls_of(&self, name: &str) -> u64 {
        self.firmware_calls.get(name).copied().unwrap_or(0)
    }

    /// Counter `name`.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Live counters. Exit counting is a relaxed atomic add (it sits on the run path); named
/// counters take a mutex (firmware models, not the KVM hot path).
#[derive(Debug, Default)]
pub struct StatsRecorder {
    exits: [AtomicU64; ExitKind::ALL.len()],
    calls: Mutex<BTreeMap<&'static str, u64>>,
    hot_calls: Mutex<Vec<(&'static str, Arc<AtomicU64>)>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
}

impl StatsRecorder {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one exit.
    pub fn exit(&self, kind: ExitKind) {
        self.exits[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one firmware call (or ioctl) named `name`.
    pub fn call(&self, name: &'static str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
    }

    /// A lock-free counter for a call made on a hot path (e.g. `KVM_RUN`): the caller adds to
    /// it with a relaxed atomic add, and snapshots report it under `firmware_calls[name]`.
    pub fn call_counter(&self, name: &'static str) -> Arc<AtomicU64> {
        let mut hot = self.hot_calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = hot.iter().find(|(n, _)| *n == name) {
            return Arc::clone(c);
        }
        let c = Arc::new(AtomicU64::new(0));
        hot.push((name, Arc::clone(&c)));
        c
    }

    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &'static str, n: u64) {
        *self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += n;
    }

    /// A snapshot.
    pub fn snapshot(&self) -> Stats {
        let exits = ExitKind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.exits[k.index()].load(Ordering::Relaxed);
                (n > 0).then(|| (k.name().to_owned(), n))
            })
            .collect();
        let to_owned = |m: &Mutex<BTreeMap<&'static str, u64>>| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect()
        };
        let mut firmware_calls: BTreeMap<String, u64> = to_owned(&self.calls);
        for (name, c) in self
            .hot_calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                *firmware_calls.entry((*name).to_owned()).or_default() += n;
            }
        }
        Stats {
            exits,
            firmware_calls,
            counters: to_owned(&self.counters),
        }
    }
}
