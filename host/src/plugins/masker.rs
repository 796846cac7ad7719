//! The `hodei:masker` world on the host side: compiling a masker component,
//! instantiating and configuring it, opening a session per job attempt and
//! masking batches of lines in it.
//!
//! Every call runs under the engine's deadline and memory cap, like a
//! policy's. Everything a masker returns is checked before the host uses
//! it: an answer with a different number of lines than it was given is an
//! error of the plugin, exactly like a trap.

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use super::PluginError;
use super::engine::{PluginEngine, PluginState};
use super::policy::{CallError, failure};
use crate::domain::LogStream;

/// Generated bindings stay private to this module.
mod bindings {
    wasmtime::component::bindgen!({
        world: "secret-masker",
        path: "../wit/masker.wit",
    });
}

use bindings::SecretMaskerPre;
use bindings::hodei::masker::types::{Lines, Stream};

/// Where a line comes from, as the masker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A stream of the job's output.
    Output(LogStream),
    /// Text the host keeps from a job that is not output (a reason, an
    /// agent's error string).
    System,
}

impl Origin {
    fn wit(self) -> Stream {
        match self {
            Self::Output(LogStream::Stdout) => Stream::Stdout,
            Self::Output(LogStream::Stderr) => Stream::Stderr,
            Self::System => Stream::System,
        }
    }
}

/// What a masker says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MaskerInfo {
    /// Its own name for itself.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it masks.
    pub description: String,
}

/// A validated, compiled masker component, ready to instantiate.
#[derive(Clone)]
pub struct CompiledMasker {
    name: String,
    pre: SecretMaskerPre<PluginState>,
}

impl std::fmt::Debug for CompiledMasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledMasker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A live, configured instance: its own store, holding the sessions opened
/// in it.
pub struct MaskerInstance {
    store: Store<PluginState>,
    bindings: bindings::SecretMasker,
}

impl std::fmt::Debug for MaskerInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskerInstance")
    }
}

/// A session inside one [`MaskerInstance`]: valid only in the instance
/// that opened it.
#[derive(Debug, Clone, Copy)]
pub struct SessionHandle(ResourceAny);

impl CompiledMasker {
    /// Compiles `bytes` and checks it is a `hodei:masker` component whose
    /// imports this host can satisfy.
    pub fn new(engine: &PluginEngine, name: &str, bytes: &[u8]) -> Result<Self, PluginError> {
        let component = engine.compile(bytes)?;
        let instance_pre = engine.linker().instantiate_pre(&component).map_err(|e| {
            PluginError::Invalid(format!("it needs imports this host does not offer: {e:#}"))
        })?;
        let pre = SecretMaskerPre::new(instance_pre).map_err(|e| {
            PluginError::Invalid(format!(
                "not a secret masker (world hodei:masker/secret-masker): {e:#}"
            ))
        })?;
        Ok(Self {
            name: name.to_owned(),
            pre,
        })
    }

    /// A new instance, configured with `config`.
    pub fn instantiate(
        &self,
        engine: &PluginEngine,
        config: &str,
    ) -> Result<MaskerInstance, CallError> {
        let mut store = engine.store(&self.name);
        engine.arm(&mut store);
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| failure(&store, "instantiate", &e))?;
        engine.arm(&mut store);
        match bindings
            .hodei_masker_masker()
            .call_configure(&mut store, config)
        {
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                return Err(CallError {
                    function: "configure",
                    message: format!("configuration refused: {refused}"),
                });
            }
            Err(e) => return Err(failure(&store, "configure", &e)),
        }
        Ok(MaskerInstance { store, bindings })
    }
}

impl MaskerInstance {
    /// The masker's name, version and description.
    pub fn info(&mut self, engine: &PluginEngine) -> Result<MaskerInfo, CallError> {
        engine.arm(&mut self.store);
        let info = self
            .bindings
            .hodei_masker_masker()
            .call_info(&mut self.store)
            .map_err(|e| failure(&self.store, "info", &e))?;
        Ok(MaskerInfo {
            name: info.name,
            version: info.version,
            description: info.description,
        })
    }

    /// Opens a session for one job attempt with its secret values.
    pub fn open(
        &mut self,
        engine: &PluginEngine,
        secrets: &[String],
    ) -> Result<SessionHandle, CallError> {
        engine.arm(&mut self.store);
        self.bindings
            .hodei_masker_masker()
            .session()
            .call_constructor(&mut self.store, secrets)
            .map(SessionHandle)
            .map_err(|e| failure(&self.store, "session", &e))
    }

    /// Masks `lines` (each with its origin) in `session`: one answer per
    /// line given, `None` for a line the masker left as it was (no copy),
    /// or an error.
    pub fn mask(
        &mut self,
        engine: &PluginEngine,
        session: SessionHandle,
        lines: &[(Origin, &[u8])],
    ) -> Result<Vec<Option<Vec<u8>>>, CallError> {
        // Columns: three block copies into the component, whatever the
        // number of lines.
        let mut batch = Lines {
            streams: Vec::with_capacity(lines.len()),
            ends: Vec::with_capacity(lines.len()),
            data: Vec::with_capacity(lines.iter().map(|(_, d)| d.len()).sum()),
        };
        for (origin, data) in lines {
            batch.streams.push(origin.wit());
            batch.data.extend_from_slice(data);
            batch
                .ends
                .push(u32::try_from(batch.data.len()).unwrap_or(u32::MAX));
        }
        engine.arm(&mut self.store);
        let masked = self
            .bindings
            .hodei_masker_masker()
            .session()
            .call_mask(&mut self.store, session.0, &batch)
            .map_err(|e| failure(&self.store, "mask", &e))?;
        let wrong = |message: String| CallError {
            function: "mask",
            message,
        };
        if masked.ends.len() != lines.len() {
            return Err(wrong(format!(
                "returned {} lines for {} (a masker answers one line per line)",
                masked.ends.len(),
                lines.len()
            )));
        }
        // Nearly every batch comes back as it went in: then no line is
        // copied out (two block compares instead of a copy per line).
        if masked.ends == batch.ends && masked.data == batch.data {
            return Ok(vec![None; lines.len()]);
        }
        let mut start = 0usize;
        let mut out = Vec::with_capacity(lines.len());
        for (end, (_, line)) in masked.ends.into_iter().zip(lines) {
            let end = end as usize;
            if end < start || end > masked.data.len() {
                return Err(wrong(format!(
                    "answered line ends that do not fit its {} bytes",
                    masked.data.len()
                )));
            }
            let answer = &masked.data[start..end];
            out.push((answer != *line).then(|| answer.to_vec()));
            start = end;
        }
        Ok(out)
    }

    /// Closes a session (its state is dropped inside the instance).
    pub fn close(&mut self, engine: &PluginEngine, session: SessionHandle) {
        engine.arm(&mut self.store);
        if let Err(e) = session.0.resource_drop(&mut self.store) {
            tracing::debug!(error = %e, "closing a masker session failed");
        }
    }
}
