//! Publishes task events to containerd (`Events.Forward` over ttrpc at `TTRPC_ADDRESS`).
//!
//! One queue, one sender, strictly in order: an event that cannot be delivered (containerd
//! restarting) is retried before anything after it is sent, so containerd never sees a
//! TaskExit before its TaskStart, and an exit that happened while containerd was down is
//! delivered once it is back. (containerd-shim's `RemotePublisher` requeues failed events
//! behind newer ones, which breaks that order.)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use runsc_shim::events::{Event, EventSink};
use tokio::sync::{mpsc, watch};

use crate::convert;

/// Per-attempt deadline (containerd's own publisher uses 5 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// An undeliverable event is given up after this long.
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);

struct Item {
    topic: &'static str,
    event: Any,
    at: SystemTime,
}

/// The event sink handed to the core.
#[derive(Debug, Clone)]
pub(crate) struct Publisher {
    tx: Option<mpsc::UnboundedSender<Item>>,
    /// Number of events not yet delivered (or given up).
    pending: Arc<watch::Sender<usize>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.topic)
    }
}

impl Publisher {
    /// Starts the sender task. Without an address (CRI-O sets none) events are dropped.
    pub(crate) fn start(ttrpc_address: Option<String>, namespace: String) -> Publisher {
        Self::with_give_up(ttrpc_address, namespace, GIVE_UP_AFTER)
    }

    /// [`Publisher::start`] with another give-up budget (the tests cannot wait 5 minutes).
    fn with_give_up(
        ttrpc_address: Option<String>,
        namespace: String,
        give_up_after: Duration,
    ) -> Publisher {
        let pending = Arc::new(watch::channel(0usize).0);
        let Some(address) = ttrpc_address.filter(|a| !a.is_empty()) else {
            tracing::warn!("TTRPC_ADDRESS is not set: task events are not published");
            return Publisher { tx: None, pending };
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(address, namespace, rx, pending.clone(), give_up_after));
        Publisher {
            tx: Some(tx),
            pending,
        }
    }

    /// Waits (at most `limit`) until every queued event is delivered.
    pub(crate) async fn flush(&self, limit: Duration) {
        let mut rx = self.pending.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|n| *n == 0)).await;
    }
}

impl EventSink for Publisher {
    fn publish(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let item = Item {
            topic: event.topic(),
            event: convert::event(&event),
            at: SystemTime::now(),
        };
        self.pending.send_modify(|n| *n += 1);
        if tx.send(item).is_err() {
            self.pending.send_modify(|n| *n -= 1);
        }
    }
}

async fn connect(address: &str) -> Option<EventsClient> {
    let addr = if address.contains("://") {
        address.to_owned()
    } else {
        format!("unix://{address}")
    };
    match Client::connect(&addr).await {
        Ok(c) => Some(EventsClient::new(c)),
        Err(e) => {
            tracing::debug!(address = %addr, error = %e, "cannot connect to containerd");
            None
        }
    }
}

async fn run(
    address: String,
    namespace: String,
    mut rx: mpsc::UnboundedReceiver<Item>,
    pending: Arc<watch::Sender<usize>>,
    give_up_after: Duration,
) {
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        let req = ForwardRequest {
            envelope: Some(Envelope {
                timestamp: Some(convert::timestamp(item.at)).into(),
                namespace: namespace.clone(),
                topic: item.topic.to_owned(),
                event: Some(item.event).into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let mut backoff = Duration::from_millis(50);
        let started = tokio::time::Instant::now();
        loop {
            if client.is_none() {
                client = connect(&address).await;
            }
            if let Some(c) = &client {
                let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
                match c.forward(ctx, &req).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(topic = item.topic, error = %e, "publishing event failed; retrying");
                        client = None;
                    }
                }
            }
            if started.elapsed() > give_up_after {
                tracing::error!(topic = item.topic, "containerd unreachable; event dropped");
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    use containerd_shim_protos::shim_async::{Events, create_events};
    use ttrpc::r#async::{Server, TtrpcContext};

    use super::*;

    /// containerd's Events service, recording the topics forwarded to it.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Events for Recorder {
        async fn forward(&self, _: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
            self.0.lock().unwrap().push(req.envelope.topic.clone());
            Ok(Empty::new())
        }
    }

    /// The give-up budget drops an event containerd never takes, and only that one: the
    /// sender goes on with the next event, which is delivered once containerd listens.
    #[tokio::test]
    async fn an_undeliverable_event_is_given_up_and_the_next_one_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("containerd.sock.ttrpc");
        let address = path.display().to_string();
        let publisher = Publisher::with_give_up(
            Some(address.clone()),
            "ns".into(),
            Duration::from_millis(300),
        );
        publisher.publish(Event::Start {
            container_id: "c1".into(),
            pid: 42,
        });
        // Nobody listens: only the give-up ends the wait (well before the flush limit).
        publisher.flush(Duration::from_secs(60)).await;
        assert_eq!(*publisher.pending.borrow(), 0, "the event was given up");

        let recorder = Arc::new(Recorder::default());
        let mut server = Server::new()
            .bind(&format!("unix://{address}"))
            .unwrap()
            .register_service(create_events(recorder.clone()));
        server.start().await.unwrap();
        publisher.publish(Event::Exit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 137,
            exited_at: SystemTime::now(),
        });
        publisher.flush(Duration::from_secs(60)).await;
        assert_eq!(
            *publisher.pending.borrow(),
            0,
            "the next event was delivered"
        );
        assert_eq!(*recorder.0.lock().unwrap(), ["/tasks/exit"]);
        server.shutdown().await.unwrap();
    }
}
