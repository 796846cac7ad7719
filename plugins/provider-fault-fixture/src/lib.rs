//! `provider-fault-fixture`: a worker provider that misbehaves on request,
//! for the host's tests only. It imports no capability (its type names the
//! imported `process` handle but never calls it, so the component does not
//! import it). Never deploy it.
//!
//! The fault is chosen by `configure`'s config:
//!
//! | config         | behaviour                                       |
//! |----------------|-------------------------------------------------|
//! | `""`           | every lifecycle call answers a transient error  |
//! | `loop:create`  | `create` spins forever                          |
//! | `trap:list`    | `list` executes `unreachable`                   |
//! | `terminal`     | `configure` refuses with a terminal error       |
//! | `terminal:create` | `create` answers a terminal error (quota)    |

use hodei_plugin_sdk::provider::{
    ImportedProcess, OwnedWorker, PoolIdentity, Provider, ProviderError, WorkerOffer, WorkerSpec,
    WorkerStatus,
};

/// Which fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer transient errors.
    Transient,
    /// Spin forever in `create`.
    LoopCreate,
    /// Trap in `list`.
    TrapList,
    /// Refuse `create` for good.
    TerminalCreate,
}

/// The misbehaving provider.
#[derive(Debug)]
pub struct FaultFixture<P> {
    fault: Fault,
    _capability: P,
}

impl<P: 'static> Provider for FaultFixture<P> {
    type Capability = P;

    fn configure(
        capability: P,
        _identity: &PoolIdentity,
        config: &str,
    ) -> Result<Self, ProviderError> {
        let fault = match config {
            "" => Fault::Transient,
            "loop:create" => Fault::LoopCreate,
            "trap:list" => Fault::TrapList,
            "terminal:create" => Fault::TerminalCreate,
            "terminal" => {
                return Err(ProviderError::Terminal(
                    "fault-fixture refuses this pool".into(),
                ));
            }
            other => {
                return Err(ProviderError::Terminal(format!(
                    "fault-fixture: unknown configuration {other:?}"
                )));
            }
        };
        Ok(Self {
            fault,
            _capability: capability,
        })
    }

    fn info(&self) -> WorkerOffer {
        WorkerOffer {
            labels: Vec::new(),
            cpu_millis: 0,
            memory_mb: 0,
            slots: 1,
            gpus: 0,
            startup_estimate_ms: 0,
        }
    }

    fn create(&self, _worker_id: &str, _spec: &WorkerSpec) -> Result<String, ProviderError> {
        match self.fault {
            Fault::LoopCreate => loop {
                std::hint::spin_loop();
            },
            Fault::TerminalCreate => Err(ProviderError::Terminal(
                "fault-fixture: quota exceeded".into(),
            )),
            _ => Err(unavailable()),
        }
    }

    fn destroy(&self, _worker_id: &str) -> Result<(), ProviderError> {
        Err(unavailable())
    }

    fn status(&self, _worker_id: &str) -> Result<WorkerStatus, ProviderError> {
        Err(unavailable())
    }

    fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError> {
        if self.fault == Fault::TrapList {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_arch = "wasm32"))]
            std::process::abort();
        }
        Err(unavailable())
    }
}

fn unavailable() -> ProviderError {
    ProviderError::Transient("fault-fixture: engine unreachable".into())
}

hodei_plugin_sdk::export_provider!(FaultFixture<ImportedProcess>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_picks_the_fault() {
        let identity = PoolIdentity {
            install: "i".into(),
            pool: "p".into(),
        };
        let configure = |c: &str| FaultFixture::configure((), &identity, c).map(|f| f.fault);
        assert_eq!(configure(""), Ok(Fault::Transient));
        assert_eq!(configure("loop:create"), Ok(Fault::LoopCreate));
        assert_eq!(configure("terminal:create"), Ok(Fault::TerminalCreate));
        assert!(matches!(
            configure("terminal"),
            Err(ProviderError::Terminal(_))
        ));
        assert!(configure("explode").is_err());
        let fixture = FaultFixture::configure((), &identity, "").unwrap();
        assert!(matches!(fixture.list(), Err(ProviderError::Transient(_))));
        let quota = FaultFixture::configure((), &identity, "terminal:create").unwrap();
        let spec = WorkerSpec {
            server_url: String::new(),
            token: String::new(),
            labels: Vec::new(),
            slots: 1,
            ephemeral: false,
            env: Vec::new(),
        };
        assert!(matches!(
            quota.create("w-1", &spec),
            Err(ProviderError::Terminal(_))
        ));
    }
}
