//! `hodei bench policies`: what a scheduling decision costs with the
//! native built-in policy and with the in-tree Wasm policies, over clusters
//! of 10 to 10,000 synthetic workers, and how long a swap takes to become
//! effective.
//!
//! A decision is what the scheduler does per job: one ranking (verdicts
//! and scores) over every candidate, then the pick. The Wasm
//! policies run exactly as in the host (same registry, instance pool,
//! deadline and memory cap).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::{Resources, WorkerId, WorkerMetrics};
use crate::plugins::{Limits, PluginEngine, PolicyRegistry, Source, in_tree};
use crate::scheduler::policy::{
    BuiltinPolicy, Candidate, Decision, Demand, PlacementPolicy, PolicySource, WorkerLabels, decide,
};

/// Arguments of `hodei bench policies`.
#[derive(Debug, clap::Args)]
pub struct PolicyBenchArgs {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1_000, 10_000])]
    workers: Vec<usize>,
    /// Measuring time per (policy, size), in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    millis: u64,
    /// Swaps to time.
    #[arg(long, default_value_t = 100)]
    swaps: usize,
}

fn cluster(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let used = u32::try_from(i % 4).unwrap_or(0);
            let mut labels = BTreeMap::new();
            labels.insert("zone".to_owned(), format!("z{}", i % 3));
            if i % 2 == 0 {
                labels.insert("gpu".to_owned(), "true".to_owned());
            }
            Candidate {
                worker: WorkerId(format!("worker-{i:05}")),
                labels: Arc::new(WorkerLabels::new(labels)),
                capacity: Resources {
                    cpu_millis: 8000,
                    memory_mb: 16384,
                },
                free: Resources {
                    cpu_millis: 8000 - u64::from(used) * 1000,
                    memory_mb: 16384 - u64::from(used) * 2048,
                },
                slots: 4,
                free_slots: 4 - used,
                metrics: WorkerMetrics {
                    cpu_percent: (i % 100) as f32,
                    memory_used_bytes: (i as u64 % 16) << 30,
                    memory_total_bytes: 16 << 30,
                    draining: false,
                },
            }
        })
        .collect()
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    per_sec: f64,
}

fn measure(policy: &dyn PlacementPolicy, candidates: &[Candidate], budget: Duration) -> Figures {
    let labels: BTreeMap<String, String> = [("gpu".to_owned(), "true".to_owned())].into();
    let demand = Demand {
        labels: &labels,
        resources: Resources {
            cpu_millis: 500,
            memory_mb: 512,
        },
        priority: 0,
        queue: "default",
    };
    // Warm up: instances made, caches hot.
    for _ in 0..10 {
        let _ = decide(policy, &demand, candidates);
    }
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    let started = Instant::now();
    let mut decisions = 0u64;
    while started.elapsed() < budget {
        let t = Instant::now();
        let decision = decide(policy, &demand, candidates);
        let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let _ = histogram.record(nanos.max(1));
        debug_assert!(matches!(decision, Decision::Place(_)));
        decisions += 1;
    }
    Figures {
        p50_us: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        per_sec: decisions as f64 / started.elapsed().as_secs_f64(),
    }
}

/// Runs the benchmark and prints two tables.
pub async fn run(args: &PolicyBenchArgs) -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let engine = PluginEngine::new(Limits::default(), Some(cache.path()))?;
    let registry = Arc::new(PolicyRegistry::new(engine));
    for (name, bytes) in in_tree::POLICIES {
        registry.load(name, bytes, Source::InTree)?;
    }
    let budget = Duration::from_millis(args.millis);
    println!("| workers | policy | p50 µs | p99 µs | decisions/s | Wasm/native (p50) |");
    println!("|---:|---|---:|---:|---:|---:|");
    for &n in &args.workers {
        let candidates = cluster(n);
        let native = measure(&BuiltinPolicy, &candidates, budget);
        println!(
            "| {n} | builtin (native) | {:.1} | {:.1} | {:.0} | 1.0 |",
            native.p50_us, native.p99_us, native.per_sec
        );
        for (name, _) in in_tree::POLICIES {
            registry.activate(name, "")?;
            let policy = registry.current();
            let wasm = measure(policy.as_ref(), &candidates, budget);
            println!(
                "| {n} | {name} (Wasm) | {:.1} | {:.1} | {:.0} | {:.1} |",
                wasm.p50_us,
                wasm.p99_us,
                wasm.per_sec,
                wasm.p50_us / native.p50_us.max(0.001)
            );
        }
    }

    // Swap: activate (instantiate + configure + pointer swap) until the next
    // decision sees the new policy.
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
    let names = ["binpack", "least-loaded"];
    for i in 0..args.swaps {
        let name = names[i % 2];
        let t = Instant::now();
        registry.activate(name, "")?;
        let seen = registry.current();
        anyhow::ensure!(seen.name() == name, "swap not visible to the next decision");
        let _ = histogram.record(
            u64::try_from(t.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        );
    }
    println!();
    println!("| swap (activate → next decision uses it) | p50 µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|");
    println!(
        "| {} swaps between binpack and least-loaded | {} | {} | {} |",
        args.swaps,
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    );
    Ok(())
}
