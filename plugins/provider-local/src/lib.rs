//! `provider-local`: one `hodei-agent` process per worker, on the host's own
//! machine, through the host's `process` capability (world
//! `hodei:provider/local-provider`).
//!
//! The agent gets the worker id as its name, the spec's labels and slots as
//! flags, the registration token in its environment (`HODEI_TOKEN`, never
//! on the command line, where `ps` would show it), and the install, pool
//! and worker id as process labels, which is how `list`, `status` and
//! `destroy` find it again, also after this component was re-instantiated.
//!
//! Configuration (whitespace-separated words, all optional): what each
//! worker offers, for `info` — `cpu-millis=<n>` (default 1000),
//! `memory-mb=<n>` (default 1024), `slots=<n>` (default 1),
//! `label=<key>=<value>` (repeatable).

use hodei_plugin_sdk::provider::{
    self, CapabilityError, ImportedProcess, LABEL_WORKER, OwnedWorker, PoolIdentity, Process,
    ProcessInfo, ProcessState, Provider, ProviderError, SpawnRequest, WorkerOffer, WorkerSpec,
    WorkerStatus,
};

/// Name used in messages.
const NAME: &str = "provider-local";
/// Typical time from spawn to the agent dialling in, measured on a debug
/// build on a 2-core machine (~100 ms).
const STARTUP_ESTIMATE_MS: u32 = 150;

/// Local agent processes for one pool.
#[derive(Debug)]
pub struct Local<P> {
    process: P,
    identity: PoolIdentity,
    offer: WorkerOffer,
}

impl<P: Process + 'static> Provider for Local<P> {
    type Capability = P;

    fn configure(process: P, identity: &PoolIdentity, config: &str) -> Result<Self, ProviderError> {
        let mut offer = WorkerOffer {
            labels: Vec::new(),
            cpu_millis: 1000,
            memory_mb: 1024,
            slots: 1,
            gpus: 0,
            startup_estimate_ms: STARTUP_ESTIMATE_MS,
        };
        let known = ["cpu-millis", "memory-mb", "slots", "label"];
        for (key, value) in provider::settings(NAME, config, &known)? {
            match key {
                "cpu-millis" => offer.cpu_millis = number(key, value)?,
                "memory-mb" => offer.memory_mb = number(key, value)?,
                "slots" => offer.slots = number(key, value)?,
                _ => offer.labels.push(provider::parse_label(value)?),
            }
        }
        Ok(Self {
            process,
            identity: identity.clone(),
            offer,
        })
    }

    fn info(&self) -> WorkerOffer {
        self.offer.clone()
    }

    fn create(&self, worker_id: &str, spec: &WorkerSpec) -> Result<String, ProviderError> {
        provider::check_worker_id(worker_id)?;
        if let Some(running) = self
            .processes(worker_id)
            .into_iter()
            .find(|p| p.state == ProcessState::Running)
        {
            return Ok(running.pid.to_string());
        }
        let request = spawn_request(&self.identity, worker_id, spec)?;
        let pid = self
            .process
            .spawn(&request)
            .map_err(|e| e.into_provider_error("spawn hodei-agent"))?;
        Ok(pid.to_string())
    }

    fn destroy(&self, worker_id: &str) -> Result<(), ProviderError> {
        for process in self.processes(worker_id) {
            match self.process.stop(process.pid) {
                Ok(()) | Err(CapabilityError::NotFound(_)) => {}
                Err(e) => return Err(e.into_provider_error("stop hodei-agent")),
            }
        }
        Ok(())
    }

    fn status(&self, worker_id: &str) -> Result<WorkerStatus, ProviderError> {
        let processes = self.processes(worker_id);
        // A live process wins over an exited one of an earlier attempt.
        Ok(processes
            .iter()
            .map(|p| status_of(&p.state))
            .find(|s| *s == WorkerStatus::Running)
            .or_else(|| processes.first().map(|p| status_of(&p.state)))
            .unwrap_or(WorkerStatus::Unknown))
    }

    fn list(&self) -> Result<Vec<OwnedWorker>, ProviderError> {
        Ok(self
            .process
            .list(&provider::pool_labels(&self.identity))
            .into_iter()
            .filter_map(|p| {
                let worker_id = provider::labels_of(&p.labels)
                    .get(LABEL_WORKER)?
                    .to_string();
                Some(OwnedWorker {
                    worker_id,
                    handle: p.pid.to_string(),
                    status: status_of(&p.state),
                })
            })
            .collect())
    }
}

impl<P: Process> Local<P> {
    /// The processes of `worker_id` in this pool.
    fn processes(&self, worker_id: &str) -> Vec<ProcessInfo> {
        self.process
            .list(&provider::worker_labels(&self.identity, worker_id))
    }
}

/// The `hodei-agent` process for `worker_id`, labelled for `list`.
fn spawn_request(
    identity: &PoolIdentity,
    worker_id: &str,
    spec: &WorkerSpec,
) -> Result<SpawnRequest, ProviderError> {
    let (args, env) = provider::agent_command(worker_id, spec)?;
    Ok(SpawnRequest {
        args,
        env,
        labels: provider::worker_labels(identity, worker_id),
    })
}

fn status_of(state: &ProcessState) -> WorkerStatus {
    match state {
        // Still alive while it stops: the host must not count it gone.
        ProcessState::Running | ProcessState::Stopping => WorkerStatus::Running,
        ProcessState::Exited(code) => WorkerStatus::Exited(*code),
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ProviderError> {
    value.parse().map_err(|_| {
        ProviderError::Terminal(format!("{NAME}: {key}={value:?} is not a valid number"))
    })
}

hodei_plugin_sdk::export_provider!(Local<ImportedProcess>);

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_plugin_sdk::provider::testing::FakeProcess;

    fn identity(pool: &str) -> PoolIdentity {
        PoolIdentity {
            install: "install-1".into(),
            pool: pool.into(),
        }
    }

    fn spec() -> WorkerSpec {
        WorkerSpec {
            server_url: "http://127.0.0.1:50051".into(),
            token: "one-time-token".into(),
            labels: vec![("zone".into(), "a".into()), ("gpu".into(), "false".into())],
            slots: 2,
            ephemeral: false,
            env: vec![("RUST_LOG".into(), "debug".into())],
        }
    }

    fn local(fake: &FakeProcess, pool: &str) -> Local<FakeProcess> {
        Local::configure(fake.clone(), &identity(pool), "").unwrap()
    }

    #[test]
    fn create_spawns_the_agent_with_its_flags_token_in_env_and_labels() {
        let fake = FakeProcess::default();
        let handle = local(&fake, "p").create("w-1", &spec()).unwrap();
        assert_eq!(handle, "1000");
        let spawned = fake.running();
        assert_eq!(spawned.len(), 1);
        let request = &spawned[0];
        assert_eq!(
            request.args,
            [
                "--server-url",
                "http://127.0.0.1:50051",
                "--name",
                "w-1",
                "--slots",
                "2",
                "--labels",
                "zone=a,gpu=false"
            ]
        );
        assert!(!request.args.iter().any(|a| a.contains("one-time-token")));
        assert_eq!(
            request.env,
            [
                ("HODEI_TOKEN".to_owned(), "one-time-token".to_owned()),
                ("RUST_LOG".to_owned(), "debug".to_owned())
            ]
        );
        let labels = provider::labels_of(&request.labels);
        assert_eq!(labels.get("hodei.install"), Some(&"install-1"));
        assert_eq!(labels.get("hodei.pool"), Some(&"p"));
        assert_eq!(labels.get("hodei.worker"), Some(&"w-1"));
    }

    #[test]
    fn create_is_idempotent_per_worker_id() {
        let fake = FakeProcess::default();
        let local = local(&fake, "p");
        let first = local.create("w-1", &spec()).unwrap();
        assert_eq!(local.create("w-1", &spec()).unwrap(), first);
        assert_eq!(fake.running().len(), 1);
        // Once it exited, creating it again starts a new process.
        fake.exit(1000, 1);
        assert_eq!(local.create("w-1", &spec()).unwrap(), "1001");
    }

    #[test]
    fn status_list_and_destroy_follow_the_processes() {
        let fake = FakeProcess::default();
        let other_pool = local(&fake, "q");
        let local = local(&fake, "p");
        local.create("w-1", &spec()).unwrap();
        local.create("w-2", &spec()).unwrap();
        other_pool.create("w-9", &spec()).unwrap();
        assert_eq!(local.status("w-1").unwrap(), WorkerStatus::Running);
        assert_eq!(local.status("w-3").unwrap(), WorkerStatus::Unknown);
        fake.exit(1001, 7);
        assert_eq!(local.status("w-2").unwrap(), WorkerStatus::Exited(7));
        let mut owned = local.list().unwrap();
        owned.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        assert_eq!(
            owned,
            [
                OwnedWorker {
                    worker_id: "w-1".into(),
                    handle: "1000".into(),
                    status: WorkerStatus::Running
                },
                OwnedWorker {
                    worker_id: "w-2".into(),
                    handle: "1001".into(),
                    status: WorkerStatus::Exited(7)
                },
            ]
        );
        local.destroy("w-1").unwrap();
        local.destroy("w-2").unwrap();
        // Stopping still counts as alive until it exits.
        assert_eq!(local.status("w-1").unwrap(), WorkerStatus::Running);
        fake.settle();
        assert_eq!(local.status("w-1").unwrap(), WorkerStatus::Unknown);
        assert!(local.list().unwrap().is_empty());
        // Destroying a gone worker is fine; the other pool is untouched.
        local.destroy("w-1").unwrap();
        assert_eq!(other_pool.list().unwrap().len(), 1);
    }

    #[test]
    fn bad_requests_are_terminal_and_spawn_errors_keep_their_kind() {
        let fake = FakeProcess::default();
        let local = local(&fake, "p");
        let terminal =
            |r: Result<String, ProviderError>| matches!(r, Err(ProviderError::Terminal(_)));
        assert!(terminal(local.create("W_1", &spec())));
        let mut no_token = spec();
        no_token.token.clear();
        assert!(terminal(local.create("w-1", &no_token)));
        let mut bad_label = spec();
        bad_label.labels.push(("a,b".into(), "c".into()));
        assert!(terminal(local.create("w-1", &bad_label)));
        fake.fail_next_spawn(CapabilityError::Unavailable("fork: EAGAIN".into()));
        assert!(matches!(
            local.create("w-1", &spec()),
            Err(ProviderError::Transient(m)) if m.contains("EAGAIN")
        ));
        assert!(fake.running().is_empty());
    }

    #[test]
    fn configuration_sets_the_offer() {
        let fake = FakeProcess::default();
        let local = Local::configure(
            fake.clone(),
            &identity("p"),
            "slots=4 cpu-millis=2000 memory-mb=4096 label=zone=a",
        )
        .unwrap();
        let offer = local.info();
        assert_eq!(
            (offer.slots, offer.cpu_millis, offer.memory_mb),
            (4, 2000, 4096)
        );
        assert_eq!(offer.labels, [("zone".to_owned(), "a".to_owned())]);
        assert!(Local::configure(fake.clone(), &identity("p"), "slots=many").is_err());
        let err = Local::configure(fake, &identity("p"), "image=x").unwrap_err();
        assert!(provider::message(&err).contains("\"image=x\""), "{err:?}");
    }
}
