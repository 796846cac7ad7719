//! Hodei Jobs host: accepts jobs over REST, keeps them durably, and runs
//! them on `hodei-agent` workers that dial in over gRPC.
//!
//! # Layout
//! - [`domain`]: Job, JobSpec, the JobState machine, workers. Pure.
//! - [`store`]: the `JobStore` port and its adapters (redb today).
//! - [`bus`]: broadcast of events; wakes people up, carries no data that
//!   must not be lost.
//! - [`scheduler`]: queue order, cluster state and atomic reservations,
//!   the placement policy (built-in default) and the decision round.
//! - [`plugins`]: WebAssembly plugins: the wasmtime engine and limits, the
//!   scheduling-policy world, the hot-swap registry, the worker-provider
//!   world.
//! - [`providers`]: the native capabilities provider plugins import
//!   (`process`, `docker`) and what a pool grants.
//! - [`masking`]: the masker chain every log batch and error string passes
//!   through before the host keeps it; failing closed to a native masker.
//! - [`jobs`]: the use cases; the one place jobs change state.
//! - [`pipelines`]: DAGs of jobs: the pipeline use cases and the engine
//!   that creates each step's job once its needs have ended.
//! - [`artifacts`]: a pipeline step's outputs on the host: received
//!   (size-limited, SHA-256 checked), kept as blobs of the store, read back
//!   for the steps that take them as inputs and for downloads.
//! - [`agents`]: the tonic gateway agents dial into: auth, sessions,
//!   reconciliation on reconnect, log ingest, results.
//! - [`logs`]: reading and following a job's log from the store.
//! - [`usage`]: per-job CPU and memory from the agents' heartbeats.
//! - [`api`]: axum REST + SSE; thin handlers, one JSON error shape.
//! - [`auth`]: API tokens with scopes and the one guard every route is
//!   declared through.
//! - [`sealing`]: job secrets sealed (AEAD) before they reach the store,
//!   opened only for the agent's assignment and the masker chain.
//! - [`tls`]: rustls for REST and the agent gateway, `hodei certs`.
//! - [`config`], [`serve`]: `hodei serve` and its settings.
//! - [`cli`]: the client commands (`run`, `jobs`, `logs`, `workers`).
//! - [`bench`]: `hodei bench`, the spine's figures against real processes.
//!
//! # The spine
//! `POST /api/v1/jobs` → validated `JobSpec` → `JobStore::insert` (group
//! commit; the 201 waits for durability) → queued → a scheduler round picks
//! a worker and reserves capacity → store `Pending → Scheduled` with a new
//! attempt (the fencing token) → `AssignJob` down the agent's stream →
//! `JobStarted`, `LogBatch`es (stored once per sequence, acknowledged),
//! `JobResult` → terminal state, capacity released → SSE `event: done`.

pub mod agents;
pub mod api;
pub mod artifacts;
pub mod auth;
pub mod bench;
pub mod bus;
pub mod cli;
pub mod config;
pub mod domain;
pub mod jobs;
pub mod logs;
pub mod masking;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod pipelines;
pub mod plugins;
pub mod providers;
pub mod scheduler;
pub mod sealing;
pub mod serve;
pub mod store;
pub mod tls;
pub mod usage;
