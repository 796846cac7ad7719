//! How a provider starts `hodei-agent`: its flags and environment, named
//! once for every provider (agent/src/config.rs is the other side).

use super::{EnvVar, ProviderError, WorkerSpec};

/// Environment variable carrying the registration token. The token goes
/// in the environment, never in the arguments, where `ps` and `docker
/// inspect`'s command line would show it.
pub const TOKEN_ENV: &str = "HODEI_TOKEN";

/// The arguments and environment of the agent for `worker_id` under
/// `spec`: `--server-url`, `--name <worker-id>`, `--slots` (when not 0),
/// `--labels k=v,...` (when any), and `HODEI_TOKEN` plus the spec's extra
/// environment.
///
/// A spec without server url or token, or with a label the agent's
/// `k=v,k2=v2` syntax cannot carry, is a terminal error.
///
/// ```
/// use hodei_plugin_sdk::provider::{WorkerSpec, agent_command};
/// let spec = WorkerSpec {
///     server_url: "http://127.0.0.1:50051".into(), token: "t".into(),
///     labels: vec![("zone".into(), "a".into())], slots: 2, ephemeral: false, env: vec![],
/// };
/// let (args, env) = agent_command("w-1", &spec).unwrap();
/// assert_eq!(args, ["--server-url", "http://127.0.0.1:50051", "--name", "w-1", "--slots", "2", "--labels", "zone=a"]);
/// assert_eq!(env, [("HODEI_TOKEN".to_owned(), "t".to_owned())]);
/// ```
pub fn agent_command(
    worker_id: &str,
    spec: &WorkerSpec,
) -> Result<(Vec<String>, Vec<EnvVar>), ProviderError> {
    if spec.server_url.trim().is_empty() {
        return Err(ProviderError::Terminal("the spec has no server url".into()));
    }
    if spec.token.is_empty() {
        return Err(ProviderError::Terminal(
            "the spec has no registration token".into(),
        ));
    }
    let mut args = vec![
        "--server-url".to_owned(),
        spec.server_url.clone(),
        "--name".to_owned(),
        worker_id.to_owned(),
    ];
    if spec.slots > 0 {
        args.extend(["--slots".to_owned(), spec.slots.to_string()]);
    }
    if !spec.labels.is_empty() {
        let mut labels = Vec::with_capacity(spec.labels.len());
        for (key, value) in &spec.labels {
            if key.trim().is_empty() || key.contains([',', '=']) || value.contains(',') {
                return Err(ProviderError::Terminal(format!(
                    "label {key:?}={value:?} cannot be passed to hodei-agent"
                )));
            }
            labels.push(format!("{key}={value}"));
        }
        args.extend(["--labels".to_owned(), labels.join(",")]);
    }
    if let Some((name, _)) = spec.env.iter().find(|(name, _)| name == TOKEN_ENV) {
        return Err(ProviderError::Terminal(format!(
            "the spec's extra environment may not set {name}"
        )));
    }
    let mut env = vec![(TOKEN_ENV.to_owned(), spec.token.clone())];
    env.extend(spec.env.iter().cloned());
    Ok((args, env))
}
