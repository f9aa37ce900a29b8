//! An in-process network: delivers each message, encoded to XML and decoded again, to the
//! server it is addressed to, with faults to inject.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::engine::DelegationServer;
use crate::host::{Transport, TransportError};
use crate::message::{Message, MessageKind};

/// What to do to a message in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    /// The send fails; the message is lost.
    Fail,
    /// The message is delivered twice.
    Duplicate,
    /// The message is lost, but the sender is told it was delivered.
    Drop,
}

/// Routes messages between servers in one process. Holds its servers until
/// [`InProcessNetwork::clear`] (servers hold the network too).
#[derive(Default)]
pub struct InProcessNetwork {
    servers: Mutex<HashMap<String, DelegationServer>>,
    faults: Mutex<Vec<(MessageKind, LinkFault)>>,
    trace: Mutex<VecDeque<String>>,
    sent: AtomicU64,
}

impl std::fmt::Debug for InProcessNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessNetwork").finish_non_exhaustive()
    }
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches a server under its ServerID.
    pub fn attach(&self, server: &DelegationServer) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(server.server_id().to_string(), server.clone());
    }

    /// Detaches every server (breaks the server ⇄ network cycle).
    pub fn clear(&self) {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Applies `fault` to the next message of `kind`.
    pub fn inject(&self, kind: MessageKind, fault: LinkFault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((kind, fault));
    }

    /// The messages sent, oldest first, as `sender -> recipient: KIND #seq`: the last
    /// [`super::SIM_LOG_CAPACITY`] of them.
    pub fn trace(&self) -> Vec<String> {
        let trace = self.trace.lock().unwrap_or_else(|p| p.into_inner());
        trace.iter().cloned().collect()
    }

    /// How many messages were sent in all (what [`InProcessNetwork::trace`] would hold
    /// if it were not bounded).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Transport for InProcessNetwork {
    async fn send(&self, message: &Message) -> Result<(), TransportError> {
        let h = &message.header;
        let line = format!(
            "{} -> {}: {} #{}",
            h.sender,
            h.recipient,
            message.body.kind(),
            h.seq
        );
        super::push_bounded(
            &mut self.trace.lock().unwrap_or_else(|p| p.into_inner()),
            line,
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
        let fault = {
            let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            faults
                .iter()
                .position(|(k, _)| *k == message.body.kind())
                .map(|i| faults.remove(i).1)
        };
        let target = self
            .servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&h.recipient)
            .cloned()
            .ok_or_else(|| TransportError {
                message: format!("no server `{}` on the network", h.recipient),
            })?;
        let xml = message.to_xml();
        let times = match fault {
            Some(LinkFault::Fail) => {
                return Err(TransportError {
                    message: "injected link failure".into(),
                })
            }
            Some(LinkFault::Drop) => 0,
            Some(LinkFault::Duplicate) => 2,
            None => 1,
        };
        for _ in 0..times {
            // The receiver answers protocol errors with its own FAILURE; a delivery error is
            // not the sender's transport failure.
            if let Err(e) = target.receive_xml(xml.as_bytes(), Some(&h.sender)).await {
                tracing::debug!(error = %e, "receiver refused a message");
            }
        }
        Ok(())
    }
}
