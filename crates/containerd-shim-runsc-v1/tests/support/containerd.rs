//! A mock containerd: its events service (`containerd.services.events.ttrpc.v1.Events`, the
//! one a shim publishes to over `TTRPC_ADDRESS`), recording every forwarded envelope.
//!
//! It can go away and come back on the same socket (containerd restarting) and can hold
//! deliveries (a slow containerd) so that events stay queued in the shim.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Events, create_events};
use tokio::sync::watch;
use ttrpc::r#async::{Server, TtrpcContext};

use super::DEADLINE;

/// One forwarded envelope.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/tasks/create`, ...
    pub topic: String,
    /// The containerd namespace the shim serves.
    pub namespace: String,
    /// When the shim says the event happened.
    pub at: SystemTime,
    event: Any,
}

/// A task event, decoded by its type URL.
#[derive(Debug)]
pub enum TaskEvent {
    /// `containerd.events.TaskCreate`.
    Create(TaskCreate),
    /// `containerd.events.TaskStart`.
    Start(TaskStart),
    /// `containerd.events.TaskExit`.
    Exit(TaskExit),
    /// `containerd.events.TaskDelete`.
    Delete(TaskDelete),
}

impl Received {
    /// The event, decoded; panics on a type URL that does not match the topic.
    pub fn decode(&self) -> TaskEvent {
        let (url, value) = (self.event.type_url.as_str(), self.event.value.as_slice());
        let event = match (self.topic.as_str(), url) {
            ("/tasks/create", "containerd.events.TaskCreate") => {
                TaskCreate::parse_from_bytes(value).map(TaskEvent::Create)
            }
            ("/tasks/start", "containerd.events.TaskStart") => {
                TaskStart::parse_from_bytes(value).map(TaskEvent::Start)
            }
            ("/tasks/exit", "containerd.events.TaskExit") => {
                TaskExit::parse_from_bytes(value).map(TaskEvent::Exit)
            }
            ("/tasks/delete", "containerd.events.TaskDelete") => {
                TaskDelete::parse_from_bytes(value).map(TaskEvent::Delete)
            }
            (topic, url) => panic!("topic {topic} carries an event of type {url:?}"),
        };
        event.unwrap()
    }

    /// The task the event is about.
    pub fn container_id(&self) -> String {
        match self.decode() {
            TaskEvent::Create(e) => e.container_id,
            TaskEvent::Start(e) => e.container_id,
            TaskEvent::Exit(e) => e.container_id,
            TaskEvent::Delete(e) => e.container_id,
        }
    }
}

/// What the events service shares with the test.
#[derive(Debug)]
struct Recorder {
    received: watch::Sender<Vec<Received>>,
    /// Deliveries are answered only while open.
    open: watch::Sender<bool>,
}

#[async_trait::async_trait]
impl Events for Recorder {
    async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let _ = self.open.subscribe().wait_for(|open| *open).await;
        let env = req.envelope.unwrap_or_default();
        let at = env.timestamp.as_ref().map_or(SystemTime::UNIX_EPOCH, |t| {
            SystemTime::UNIX_EPOCH
                + std::time::Duration::new(t.seconds.unsigned_abs(), t.nanos.unsigned_abs())
        });
        let got = Received {
            topic: env.topic,
            namespace: env.namespace,
            at,
            event: env.event.unwrap_or_default(),
        };
        self.received.send_modify(|r| r.push(got));
        Ok(Empty::new())
    }
}

/// The mock containerd's events endpoint.
pub struct MockContainerd {
    path: PathBuf,
    server: Option<Server>,
    recorder: Arc<Recorder>,
}

impl MockContainerd {
    /// Serves at `path` (a unix socket).
    pub async fn start(path: &Path) -> MockContainerd {
        let recorder = Arc::new(Recorder {
            received: watch::channel(Vec::new()).0,
            open: watch::channel(true).0,
        });
        let mut mock = MockContainerd {
            path: path.to_owned(),
            server: None,
            recorder,
        };
        mock.restart().await;
        mock
    }

    /// The ttrpc address to give the shim.
    pub fn address(&self) -> String {
        self.path.display().to_string()
    }

    /// containerd goes away: connections close and the socket is gone.
    pub async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.shutdown().await.unwrap();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// containerd is back, on the same socket.
    pub async fn restart(&mut self) {
        assert!(self.server.is_none(), "already serving");
        let _ = std::fs::remove_file(&self.path);
        let mut server = Server::new()
            .bind(&format!("unix://{}", self.path.display()))
            .unwrap()
            .register_service(create_events(self.recorder.clone()));
        server.start().await.unwrap();
        self.server = Some(server);
    }

    /// Deliveries wait (unanswered) until [`MockContainerd::release`].
    pub fn hold(&self) {
        self.recorder.open.send_replace(false);
    }

    /// Held deliveries complete.
    pub fn release(&self) {
        self.recorder.open.send_replace(true);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.recorder.received.borrow().clone()
    }

    /// The topics received so far.
    pub fn topics(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.topic).collect()
    }

    /// Waits until `n` events have been received, and returns them all.
    pub async fn wait_for_events(&self, n: usize) -> Vec<Received> {
        let mut rx = self.recorder.received.subscribe();
        let waited = tokio::time::timeout(DEADLINE, rx.wait_for(|r| r.len() >= n)).await;
        assert!(
            waited.is_ok(),
            "containerd received {:?}, expected {n} events",
            self.topics()
        );
        self.received()
    }
}
