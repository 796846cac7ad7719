//! The wasmtime engine every plugin runs on, and the per-call sandbox.
//!
//! - Compiled code is cached on disk by wasmtime's own cache, keyed by the
//!   module bytes, the wasmtime version and the engine configuration, so a
//!   restart or a second host compiles nothing it has seen.
//! - Every call runs under an epoch deadline: a thread ticks the engine's
//!   epoch every millisecond and each call gets a budget of ticks, after
//!   which wasmtime traps it ("interrupt"). A plugin that loops forever
//!   costs the scheduler one deadline, not a thread.
//! - Each store has a memory cap (`StoreLimits`): a plugin that allocates
//!   without bound traps when its linear memory would pass the cap.
//! - Plugins get WASI p2 only because Rust's std imports it: no preopened
//!   directories, no environment, no network, no inherited stdio. What they
//!   print on stdout/stderr (a panic message, say) goes to the host's log
//!   with the plugin's name.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::PluginError;

/// How often the epoch advances; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Limits every call runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock budget of one call.
    pub deadline: Duration,
    /// Largest linear memory a plugin may have, in bytes.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(10),
            memory_bytes: 32 << 20,
        }
    }
}

/// Lines of stderr remembered per store, to explain the next trap.
const RECENT_STDERR_LINES: usize = 8;

/// What a plugin's store holds: its WASI context (empty), its limits, and
/// the last lines it wrote to stderr.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    recent_stderr: Arc<Mutex<VecDeque<String>>>,
}

impl PluginState {
    /// Takes what the plugin wrote to stderr since the last take (a panic
    /// message, typically), oldest first.
    pub fn take_stderr(&self) -> Vec<String> {
        let mut recent = self
            .recent_stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.drain(..).collect()
    }
}

impl std::fmt::Debug for PluginState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginState")
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The shared engine (cheap to clone).
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    limits: Limits,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// An engine caching compiled code under `cache_dir` (none: no cache).
    pub fn new(limits: Limits, cache_dir: Option<&Path>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
        // For whoever profiles a plugin: `HODEI_PLUGIN_PERFMAP=1` writes
        // /tmp/perf-PID.map, so `perf report` names the functions of
        // compiled plugins instead of `[JIT]` addresses.
        if std::env::var_os("HODEI_PLUGIN_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = cache_dir {
            // wasmtime wants an absolute path; the default (under the data
            // dir) is relative to where `hodei serve` was started.
            let dir = std::path::absolute(dir).map_err(PluginError::engine)?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(PluginError::engine)?;
            config.cache(Some(cache));
        }
        let engine = Engine::new(&config).map_err(PluginError::engine)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(PluginError::engine)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("hodei-wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(PluginError::engine)?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            limits,
        })
    }

    /// The same engine (compiled code, linker, epoch) whose calls get
    /// `deadline` instead: maskers, whose work grows with the batch, get a
    /// budget of their own.
    #[must_use]
    pub fn with_deadline(&self, deadline: Duration) -> Self {
        let mut engine = self.clone();
        engine.limits.deadline = deadline;
        engine
    }

    /// The call limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The wasmtime engine itself (to read a component's types).
    pub fn wasmtime(&self) -> &Engine {
        &self.engine
    }

    /// The linker with the host's imports (WASI p2, sandboxed).
    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
    }

    /// Compiles (or fetches from the cache) a component. Core modules and
    /// garbage are refused with a reason a person can act on.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        match bytes.get(..8) {
            None => return Err(PluginError::Invalid("empty or truncated file".into())),
            Some(header) if &header[..4] != b"\0asm" => {
                return Err(PluginError::Invalid(
                    "not WebAssembly (no `\\0asm` header)".into(),
                ));
            }
            Some(header) if header[4..8] == [1, 0, 0, 0] => {
                return Err(PluginError::Invalid(
                    "a core WebAssembly module, not a component: build the plugin for \
                     wasm32-wasip2 (`cargo build --target wasm32-wasip2`)"
                        .into(),
                ));
            }
            Some(_) => {}
        }
        Component::new(&self.engine, bytes).map_err(|e| PluginError::Invalid(format!("{e:#}")))
    }

    /// A fresh store for one plugin instance, with its limits and its
    /// output routed to the log under `plugin`.
    pub fn store(&self, plugin: &str) -> Store<PluginState> {
        self.store_with(self.sandbox(plugin), |state| state)
    }

    /// The sandbox of one plugin instance: empty WASI with its output
    /// routed to the log under `plugin`, and the memory cap. Worlds whose
    /// store holds more than this (a provider's granted capabilities) keep
    /// it inside their own state; see [`PluginEngine::store_with`].
    pub fn sandbox(&self, plugin: &str) -> PluginState {
        let name: Arc<str> = Arc::from(plugin);
        let recent_stderr = Arc::new(Mutex::new(VecDeque::new()));
        let wasi = WasiCtxBuilder::new()
            .stdout(LogOutput {
                plugin: Arc::clone(&name),
                stream: "stdout",
                pending: Vec::new(),
                recent: None,
            })
            .stderr(LogOutput {
                plugin: name,
                stream: "stderr",
                pending: Vec::new(),
                recent: Some(Arc::clone(&recent_stderr)),
            })
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(16)
            .tables(64)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        PluginState {
            wasi,
            table: ResourceTable::new(),
            limits,
            recent_stderr,
        }
    }

    /// A store for `data`, whose sandbox (from [`PluginEngine::sandbox`])
    /// `sandbox` reaches: its memory cap applies, and calls trap at the
    /// deadline set by [`PluginEngine::arm`].
    pub fn store_with<T: 'static>(
        &self,
        data: T,
        sandbox: fn(&mut T) -> &mut PluginState,
    ) -> Store<T> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(move |state| &mut sandbox(state).limits);
        store.epoch_deadline_trap();
        store
    }

    /// A linker with WASI p2 (sandboxed by each store's context) and
    /// nothing else, for a world whose imports differ per instance.
    pub fn wasi_linker<T: WasiView + 'static>(&self) -> Result<Linker<T>, PluginError> {
        let mut linker = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(PluginError::engine)?;
        Ok(linker)
    }

    /// The deadline, in epoch ticks.
    pub fn deadline_ticks(&self) -> u64 {
        ticks(self.limits.deadline)
    }

    /// Arms the deadline for the next call on `store`.
    pub fn arm<T>(&self, store: &mut Store<T>) {
        store.set_epoch_deadline(self.deadline_ticks());
    }
}

/// `duration` in epoch ticks, at least one.
pub fn ticks(duration: Duration) -> u64 {
    let ticks = (duration.as_micros() / EPOCH_TICK.as_micros()).max(1);
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// A plugin's stdout or stderr: every line goes to the log, tagged. Output
/// arrives in pieces (a panic message is several writes), so it is cut into
/// whole lines first.
#[derive(Clone)]
struct LogOutput {
    plugin: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
    recent: Option<Arc<Mutex<VecDeque<String>>>>,
}

impl LogOutput {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        tracing::warn!(plugin = %self.plugin, stream = self.stream, "plugin output: {line}");
        if let Some(recent) = &self.recent {
            let mut recent = recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if recent.len() == RECENT_STDERR_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_owned());
        }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        let mut fresh = self.clone();
        fresh.pending.clear();
        Box::new(fresh)
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl OutputStream for LogOutput {
    fn write(&mut self, buf: Bytes) -> Result<(), StreamError> {
        self.pending.extend_from_slice(&buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        // A plugin printing without newlines must not grow this forever.
        if self.pending.len() > 4096 {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        let line = std::mem::take(&mut self.pending);
        self.emit(&line);
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LogOutput {
    async fn ready(&mut self) {}
}
