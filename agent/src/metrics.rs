//! What the agent tells the host about its machine: CPU count and memory at
//! registration, load in every heartbeat.
//!
//! CPU use is a difference between two readings of the kernel's counters,
//! so one [`MachineSampler`] lives for the whole process and each heartbeat
//! reports the use since the previous one.

use std::num::NonZeroUsize;

use sysinfo::System;

/// One reading of the machine's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineLoad {
    /// Whole-machine CPU use in percent of all cores together (0..100).
    pub cpu_percent: f32,
    /// Memory in use, in bytes.
    pub memory_used_bytes: u64,
    /// Physical memory, in bytes.
    pub memory_total_bytes: u64,
}

/// Keeps the previous CPU reading between heartbeats.
#[derive(Debug)]
pub struct MachineSampler {
    system: System,
}

impl MachineSampler {
    /// Takes a first reading so that the first sample has a baseline.
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Self { system }
    }

    /// Physical memory, in bytes.
    pub fn memory_total_bytes(&self) -> u64 {
        self.system.total_memory()
    }

    /// The load since the previous call.
    pub fn sample(&mut self) -> MachineLoad {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        MachineLoad {
            cpu_percent: self.system.global_cpu_usage().clamp(0.0, 100.0),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
        }
    }
}

impl Default for MachineSampler {
    fn default() -> Self {
        Self::new()
    }
}

/// CPUs this process may use (honours affinity and cgroup quotas, which is
/// what a container's agent should report).
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .try_into()
        .unwrap_or(u32::MAX)
}

/// The machine's host name, if the OS tells it.
pub fn hostname() -> Option<String> {
    System::host_name().filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_plausible() {
        let mut sampler = MachineSampler::new();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let load = sampler.sample();
        assert!((0.0..=100.0).contains(&load.cpu_percent), "{load:?}");
        assert!(load.memory_total_bytes > 0);
        assert_eq!(load.memory_total_bytes, sampler.memory_total_bytes());
        assert!(load.memory_used_bytes <= load.memory_total_bytes);
        assert!(cpu_count() >= 1);
    }
}
