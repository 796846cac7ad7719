//! Native stand-ins for the host capabilities, for unit tests of provider
//! logic without Wasm.
//!
//! Each fake answers the way the host's implementation does (same error
//! kinds for the same situations, same label matching), records what it was
//! asked, and lets a test change the world underneath (a process exits, the
//! engine goes away). Clones share state, so a test keeps one handle and
//! gives the provider another.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::{
    CapabilityError, Container, ContainerSpec, ContainerState, Docker, Kubernetes, Label, Pod,
    PodPhase, PodSpec, Process, ProcessInfo, ProcessState, SpawnRequest,
};

/// Whether `labels` carries every label of `selector`.
fn matches(labels: &[Label], selector: &[Label]) -> bool {
    selector.iter().all(|s| labels.contains(s))
}

/// A fake `process` capability. Pids start at 1000.
#[derive(Debug, Clone, Default)]
pub struct FakeProcess(Rc<RefCell<Processes>>);

#[derive(Debug, Default)]
struct Processes {
    next_pid: u32,
    table: BTreeMap<u32, (SpawnRequest, ProcessState)>,
    fail_spawn: Option<CapabilityError>,
}

impl FakeProcess {
    /// The processes not stopped yet, in spawn order.
    pub fn running(&self) -> Vec<SpawnRequest> {
        self.0
            .borrow()
            .table
            .values()
            .filter(|(_, state)| *state == ProcessState::Running)
            .map(|(request, _)| request.clone())
            .collect()
    }

    /// The pid of every process in the table, stopping or exited included.
    pub fn pids(&self) -> Vec<u32> {
        self.0.borrow().table.keys().copied().collect()
    }

    /// Process `pid` exits by itself with `code` (it stays in the table,
    /// as on the host, until stopped).
    pub fn exit(&self, pid: u32, code: i32) {
        if let Some((_, state)) = self.0.borrow_mut().table.get_mut(&pid) {
            *state = ProcessState::Exited(code);
        }
    }

    /// Stopping processes finish exiting; the host forgets them.
    pub fn settle(&self) {
        self.0
            .borrow_mut()
            .table
            .retain(|_, (_, state)| *state != ProcessState::Stopping);
    }

    /// The next spawn fails with `error`.
    pub fn fail_next_spawn(&self, error: CapabilityError) {
        self.0.borrow_mut().fail_spawn = Some(error);
    }
}

impl Process for FakeProcess {
    fn spawn(&self, request: &SpawnRequest) -> Result<u32, CapabilityError> {
        let mut p = self.0.borrow_mut();
        if let Some(error) = p.fail_spawn.take() {
            return Err(error);
        }
        let pid = 1000 + p.next_pid;
        p.next_pid += 1;
        p.table
            .insert(pid, (request.clone(), ProcessState::Running));
        Ok(pid)
    }

    fn stop(&self, pid: u32) -> Result<(), CapabilityError> {
        let mut p = self.0.borrow_mut();
        match p.table.get(&pid).map(|(_, state)| *state) {
            None => Err(CapabilityError::NotFound(format!("no process {pid}"))),
            // An exited process is reaped at once.
            Some(ProcessState::Exited(_)) => {
                p.table.remove(&pid);
                Ok(())
            }
            Some(_) => {
                if let Some((_, state)) = p.table.get_mut(&pid) {
                    *state = ProcessState::Stopping;
                }
                Ok(())
            }
        }
    }

    fn state(&self, pid: u32) -> Result<ProcessState, CapabilityError> {
        self.0
            .borrow()
            .table
            .get(&pid)
            .map(|(_, state)| *state)
            .ok_or_else(|| CapabilityError::NotFound(format!("no process {pid}")))
    }

    fn list(&self, selector: &[Label]) -> Vec<ProcessInfo> {
        self.0
            .borrow()
            .table
            .iter()
            .filter(|(_, (request, _))| matches(&request.labels, selector))
            .map(|(&pid, (request, state))| ProcessInfo {
                pid,
                labels: request.labels.clone(),
                state: *state,
            })
            .collect()
    }
}

/// A fake `docker` capability: an engine with the images given to
/// [`FakeDocker::with_image`]; ids are `c1`, `c2`, ...
#[derive(Debug, Clone, Default)]
pub struct FakeDocker(Rc<RefCell<Engine>>);

#[derive(Debug, Default)]
struct Engine {
    images: Vec<String>,
    next_id: u32,
    containers: Vec<(ContainerSpec, Container)>,
    down: bool,
}

impl FakeDocker {
    /// An engine that has `image` locally.
    pub fn with_image(self, image: &str) -> Self {
        self.0.borrow_mut().images.push(image.to_owned());
        self
    }

    /// The engine stops (or starts again) answering: every call fails with
    /// `unavailable`, as when the socket is gone.
    pub fn set_down(&self, down: bool) {
        self.0.borrow_mut().down = down;
    }

    /// Specs of the containers that exist, in creation order.
    pub fn containers(&self) -> Vec<ContainerSpec> {
        self.0
            .borrow()
            .containers
            .iter()
            .map(|(spec, _)| spec.clone())
            .collect()
    }

    /// Container `name` exits by itself with `code`.
    pub fn exit(&self, name: &str, code: i32) {
        let mut engine = self.0.borrow_mut();
        if let Some((_, c)) = engine.containers.iter_mut().find(|(_, c)| c.name == name) {
            c.state = ContainerState::Exited(code);
        }
    }

    fn up(&self) -> Result<std::cell::RefMut<'_, Engine>, CapabilityError> {
        let engine = self.0.borrow_mut();
        if engine.down {
            Err(CapabilityError::Unavailable(
                "cannot connect to the Docker daemon".into(),
            ))
        } else {
            Ok(engine)
        }
    }
}

impl Engine {
    fn find(&mut self, id: &str) -> Result<&mut Container, CapabilityError> {
        self.containers
            .iter_mut()
            .map(|(_, c)| c)
            .find(|c| c.id == id || c.name == id)
            .ok_or_else(|| CapabilityError::NotFound(format!("No such container: {id}")))
    }
}

impl Docker for FakeDocker {
    fn create_and_start(&self, spec: &ContainerSpec) -> Result<String, CapabilityError> {
        let mut engine = self.up()?;
        if engine.containers.iter().any(|(_, c)| c.name == spec.name) {
            return Err(CapabilityError::Conflict(format!(
                "the container name {:?} is already in use",
                spec.name
            )));
        }
        if !engine.images.contains(&spec.image) {
            return Err(CapabilityError::Invalid(format!(
                "No such image: {}",
                spec.image
            )));
        }
        engine.next_id += 1;
        let id = format!("c{}", engine.next_id);
        let container = Container {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Running,
        };
        engine.containers.push((spec.clone(), container));
        Ok(id)
    }

    fn stop(&self, id: &str, _timeout_secs: u32) -> Result<(), CapabilityError> {
        let mut engine = self.up()?;
        let container = engine.find(id)?;
        if container.state == ContainerState::Running {
            container.state = ContainerState::Exited(137);
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), CapabilityError> {
        let mut engine = self.up()?;
        let id = engine.find(id)?.id.clone();
        engine.containers.retain(|(_, c)| c.id != id);
        Ok(())
    }

    fn inspect(&self, id: &str) -> Result<Container, CapabilityError> {
        let mut engine = self.up()?;
        engine.find(id).map(|c| c.clone())
    }

    fn list(&self, selector: &[Label]) -> Result<Vec<Container>, CapabilityError> {
        let engine = self.up()?;
        Ok(engine
            .containers
            .iter()
            .filter(|(_, c)| matches(&c.labels, selector))
            .map(|(_, c)| c.clone())
            .collect())
    }
}

/// A fake `kubernetes` capability: an API server with no scheduler and
/// no kubelet. A created pod is `pending` until [`FakeKubernetes::set_phase`]
/// moves it; a delete removes it at once (a real one terminates first).
#[derive(Debug, Clone, Default)]
pub struct FakeKubernetes(Rc<RefCell<Cluster>>);

#[derive(Debug, Default)]
struct Cluster {
    pods: Vec<(PodSpec, PodPhase)>,
    deny: Option<String>,
    down: bool,
}

impl FakeKubernetes {
    /// Specs of the pods that exist, in creation order.
    pub fn pods(&self) -> Vec<PodSpec> {
        self.0
            .borrow()
            .pods
            .iter()
            .map(|(spec, _)| spec.clone())
            .collect()
    }

    /// Pod `name` (any namespace) moves to `phase`.
    pub fn set_phase(&self, name: &str, phase: PodPhase) {
        for (spec, current) in &mut self.0.borrow_mut().pods {
            if spec.name == name {
                *current = phase;
            }
        }
    }

    /// Creates are refused with `denied` (a quota), or allowed again.
    pub fn deny_creates(&self, reason: Option<&str>) {
        self.0.borrow_mut().deny = reason.map(str::to_owned);
    }

    /// The API server stops (or starts again) answering.
    pub fn set_down(&self, down: bool) {
        self.0.borrow_mut().down = down;
    }

    fn up(&self) -> Result<std::cell::RefMut<'_, Cluster>, CapabilityError> {
        let cluster = self.0.borrow_mut();
        if cluster.down {
            Err(CapabilityError::Unavailable("connection refused".into()))
        } else {
            Ok(cluster)
        }
    }
}

fn pod_of(spec: &PodSpec, phase: PodPhase) -> Pod {
    Pod {
        name: spec.name.clone(),
        labels: spec.labels.clone(),
        phase,
    }
}

impl Kubernetes for FakeKubernetes {
    fn create_pod(&self, spec: &PodSpec) -> Result<(), CapabilityError> {
        let mut cluster = self.up()?;
        if let Some(reason) = &cluster.deny {
            return Err(CapabilityError::Denied(reason.clone()));
        }
        if cluster
            .pods
            .iter()
            .any(|(p, _)| p.namespace == spec.namespace && p.name == spec.name)
        {
            return Err(CapabilityError::Conflict(format!(
                "pods {:?} already exists",
                spec.name
            )));
        }
        cluster.pods.push((spec.clone(), PodPhase::Pending));
        Ok(())
    }

    fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), CapabilityError> {
        let mut cluster = self.up()?;
        let before = cluster.pods.len();
        cluster
            .pods
            .retain(|(p, _)| !(p.namespace == namespace && p.name == name));
        if cluster.pods.len() == before {
            return Err(CapabilityError::NotFound(format!(
                "pods {name:?} not found"
            )));
        }
        Ok(())
    }

    fn get_pod(&self, namespace: &str, name: &str) -> Result<Pod, CapabilityError> {
        let cluster = self.up()?;
        cluster
            .pods
            .iter()
            .find(|(p, _)| p.namespace == namespace && p.name == name)
            .map(|(p, phase)| pod_of(p, *phase))
            .ok_or_else(|| CapabilityError::NotFound(format!("pods {name:?} not found")))
    }

    fn list_pods(&self, namespace: &str, selector: &[Label]) -> Result<Vec<Pod>, CapabilityError> {
        let cluster = self.up()?;
        Ok(cluster
            .pods
            .iter()
            .filter(|(p, _)| p.namespace == namespace && matches(&p.labels, selector))
            .map(|(p, phase)| pod_of(p, *phase))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(worker: &str) -> SpawnRequest {
        SpawnRequest {
            args: vec![],
            env: vec![],
            labels: vec![("hodei.worker".into(), worker.into())],
        }
    }

    #[test]
    fn processes_live_stop_and_settle_like_the_host() {
        let fake = FakeProcess::default();
        let a = fake.spawn(&request("a")).unwrap();
        let b = fake.spawn(&request("b")).unwrap();
        assert_eq!((a, b), (1000, 1001));
        let only_a = [("hodei.worker".to_owned(), "a".to_owned())];
        assert_eq!(fake.list(&only_a).len(), 1);
        assert_eq!(fake.list(&[]).len(), 2);
        fake.stop(a).unwrap();
        assert_eq!(fake.state(a).unwrap(), ProcessState::Stopping);
        fake.settle();
        assert!(matches!(fake.state(a), Err(CapabilityError::NotFound(_))));
        fake.exit(b, 3);
        assert_eq!(fake.state(b).unwrap(), ProcessState::Exited(3));
        fake.stop(b).unwrap();
        assert!(fake.pids().is_empty());
        fake.fail_next_spawn(CapabilityError::Denied("no".into()));
        assert!(fake.spawn(&request("c")).is_err());
        assert!(fake.spawn(&request("c")).is_ok());
    }

    #[test]
    fn docker_engine_answers_like_the_real_one() {
        let docker = FakeDocker::default().with_image("img");
        let spec = ContainerSpec {
            name: "n".into(),
            image: "img".into(),
            cmd: vec![],
            env: vec![],
            labels: vec![("k".into(), "v".into())],
            host_network: true,
        };
        let id = docker.create_and_start(&spec).unwrap();
        assert!(matches!(
            docker.create_and_start(&spec),
            Err(CapabilityError::Conflict(_))
        ));
        let missing = ContainerSpec {
            name: "m".into(),
            image: "nope".into(),
            ..spec.clone()
        };
        assert!(matches!(
            docker.create_and_start(&missing),
            Err(CapabilityError::Invalid(_))
        ));
        assert_eq!(docker.inspect("n").unwrap().id, id);
        docker.stop(&id, 1).unwrap();
        assert_eq!(
            docker.inspect(&id).unwrap().state,
            ContainerState::Exited(137)
        );
        docker.set_down(true);
        assert!(matches!(
            docker.list(&[]),
            Err(CapabilityError::Unavailable(_))
        ));
        docker.set_down(false);
        docker.remove(&id).unwrap();
        assert!(docker.list(&[]).unwrap().is_empty());
    }
}
