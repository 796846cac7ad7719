//! What the agent tells the host about its machine and its jobs: CPU count
//! and memory at registration, machine load and each running job's CPU and
//! memory in every heartbeat.
//!
//! CPU use is a difference between two readings of the kernel's counters,
//! so one [`MachineSampler`] lives for the whole process and each heartbeat
//! reports the use since the previous one.
//!
//! A job's use is the sum over its process tree: the job's process and
//! every process descending from it, found through parent links, which
//! covers its process group and children that left the group but not the
//! session tree. A process that was reparented to init (double fork) is not
//! counted: it is no longer anyone's descendant. Threads are not counted
//! twice (tasks are skipped; a process's figures include its threads).

use std::collections::HashMap;
use std::num::NonZeroUsize;

use hodei_proto::v1::JobUsage;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::jobs::JobRoot;

/// Most parent links followed from one process towards a job's root.
const MAX_DEPTH: usize = 64;

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

    /// Each job's CPU (percent of one core, since the previous call) and
    /// resident memory, summed over its process tree. A process seen for
    /// the first time counts no CPU yet.
    pub fn job_usage(&mut self, roots: &[JobRoot]) -> Vec<JobUsage> {
        if roots.is_empty() {
            return Vec::new();
        }
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .without_tasks(),
        );
        let index: HashMap<Pid, usize> = roots
            .iter()
            .enumerate()
            .map(|(i, root)| (Pid::from_u32(root.pid), i))
            .collect();
        let mut usage: Vec<JobUsage> = roots
            .iter()
            .map(|root| JobUsage {
                job_id: root.job_id.clone(),
                attempt: root.attempt,
                ..JobUsage::default()
            })
            .collect();
        let processes = self.system.processes();
        for (pid, process) in processes {
            if process.thread_kind().is_some() {
                continue;
            }
            let mut at = Some(*pid);
            for _ in 0..MAX_DEPTH {
                let Some(current) = at else { break };
                if let Some(job) = index.get(&current).and_then(|&i| usage.get_mut(i)) {
                    job.cpu_percent += process.cpu_usage();
                    job.memory_bytes += process.memory();
                    job.processes += 1;
                    break;
                }
                at = processes.get(&current).and_then(sysinfo::Process::parent);
            }
        }
        usage
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

    #[test]
    fn a_job_counts_its_whole_tree() {
        // A shell whose child burns CPU and whose grandchild holds memory.
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                r#"(while :; do :; done) & bash -c 'x=$(head -c 40000000 /dev/zero | tr "\000" a); sleep 30; : "${#x}"' & wait"#,
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        let root = JobRoot {
            job_id: "j".into(),
            attempt: 3,
            pid: child.id(),
        };
        let mut sampler = MachineSampler::new();
        sampler.job_usage(std::slice::from_ref(&root));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let usage = loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let usage = sampler.job_usage(std::slice::from_ref(&root)).remove(0);
            // The grandchild holds 40 MB in a shell variable.
            if (usage.cpu_percent > 20.0 && usage.memory_bytes > 30_000_000)
                || std::time::Instant::now() > deadline
            {
                break usage;
            }
        };
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!((usage.job_id.as_str(), usage.attempt), ("j", 3));
        assert!(usage.processes >= 3, "{usage:?}");
        assert!(usage.cpu_percent > 20.0, "{usage:?}");
        assert!(usage.memory_bytes > 30_000_000, "{usage:?}");
        assert!(sampler.job_usage(&[]).is_empty());
    }
}
