//! CPU time as the benchmarks read it from `/proc`: a process's own (user +
//! system, its ended threads included), its children's by name, and the
//! whole machine's busy time.
//!
//! CPU seconds per unit of work are less at the mercy of a noisy machine
//! than rates, and on a 2-core VM where the job, the agent, the host and
//! the reader share the cores, they say where the cores go.

use anyhow::Context;

/// Clock ticks per second of `/proc`'s times: `USER_HZ`, 100 on Linux
/// whatever the kernel's own tick rate (a fixed part of its ABI).
const USER_HZ: f64 = 100.0;

/// CPU seconds `pid` has used so far, user and system.
pub(super) fn process_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is the first, utime the 12th, stime the 13th.
    let after = stat.rsplit_once(") ").context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / USER_HZ)
}

/// The live children of `pid` whose command name is `comm` (e.g. the
/// local `hodei-agent`s a host started).
pub(super) fn children_named(pid: u32, comm: &str) -> anyhow::Result<Vec<u32>> {
    let mut found = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing /proc/{pid}/task"))?;
    for task in tasks {
        let children = std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            let name = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if name.trim_end() == comm {
                found.push(child);
            }
        }
    }
    Ok(found)
}

/// Busy CPU seconds of the whole machine so far, all cores (`/proc/stat`:
/// user, nice, system, irq and softirq; idle and iowait left out).
pub(super) fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("malformed /proc/stat")?;
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal ...
    Ok((field(0) + field(1) + field(2) + field(5) + field(6)) as f64 / USER_HZ)
}

/// How many cores the machine has (what its busy time is out of).
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spinning_process_is_charged_and_found_by_name() {
        let me = std::process::id();
        let before = process_seconds(me).unwrap();
        let busy_before = machine_busy_seconds().unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut spins = 0_u64;
        while std::time::Instant::now() < until {
            spins = std::hint::black_box(spins + 1);
        }
        // 300 ms spun; ticks are 10 ms, so at least 0.2 s shows.
        assert!(process_seconds(me).unwrap() - before >= 0.2);
        assert!(machine_busy_seconds().unwrap() - busy_before >= 0.2);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = children_named(me, "sleep").unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&child.id()), "{found:?}");
        assert!(children_named(me, "no-such-name").unwrap().is_empty());
        assert!(process_seconds(u32::MAX).is_err());
    }
}
