//! In-memory ports for tests.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bitsgw_wire::PacketBuf;

use crate::{fill, LinkType, Port, PortError, RxPort, TxPort, RECV_TIMEOUT};

#[derive(Debug, Default)]
struct State {
    inbox: VecDeque<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
}

impl Shared {
    /// The state, also after a thread panicked while holding the lock (the
    /// state is a plain queue: it stays consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The test's side of an in-memory port: frames injected here are received
/// by the port, frames the port sends are collected here.
#[derive(Debug, Clone)]
pub struct MemoryHandle {
    shared: Arc<Shared>,
}

impl MemoryHandle {
    /// Queues a frame for the port to receive.
    pub fn inject(&self, frame: impl Into<Vec<u8>>) {
        self.shared.lock().inbox.push_back(frame.into());
        self.shared.arrived.notify_all();
    }

    /// Every frame the port has sent so far, oldest first.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        self.shared.lock().sent.clone()
    }

    /// Every frame the port has sent since the last call, oldest first;
    /// they are forgotten.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.shared.lock().sent)
    }

    /// Frames injected and not received yet.
    pub fn pending(&self) -> usize {
        self.shared.lock().inbox.len()
    }

    /// Closes the receiving side: once the injected frames are drained,
    /// `recv` returns [`PortError::Closed`]. Sending still works, so output
    /// still in flight is collected.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.arrived.notify_all();
    }
}

#[derive(Debug)]
struct MemoryRx {
    name: String,
    link: LinkType,
    shared: Arc<Shared>,
}

#[derive(Debug, Clone)]
struct MemoryTx {
    name: String,
    link: LinkType,
    shared: Arc<Shared>,
}

pub(crate) fn open(name: &str, link: LinkType) -> (Port, MemoryHandle) {
    let shared = Arc::new(Shared::default());
    let port = Port {
        rx: Box::new(MemoryRx {
            name: name.to_owned(),
            link,
            shared: shared.clone(),
        }),
        tx: Box::new(MemoryTx {
            name: name.to_owned(),
            link,
            shared: shared.clone(),
        }),
    };
    (port, MemoryHandle { shared })
}

impl RxPort for MemoryRx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        self.link
    }

    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, RECV_TIMEOUT)
    }

    fn recv_within(
        &mut self,
        buf: &mut PacketBuf,
        wait: std::time::Duration,
    ) -> Result<bool, PortError> {
        buf.reset();
        let mut state = self.shared.lock();
        if state.inbox.is_empty() && !state.closed {
            state = match self.shared.arrived.wait_timeout(state, wait) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        match state.inbox.pop_front() {
            Some(frame) => {
                drop(state);
                fill(buf, &self.name, &frame)?;
                Ok(true)
            }
            None if state.closed => Err(PortError::Closed {
                port: self.name.clone(),
            }),
            None => Ok(false),
        }
    }

    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let frame = self.shared.lock().inbox.pop_front();
        match frame {
            Some(frame) => {
                buf.reset();
                fill(buf, &self.name, &frame)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl TxPort for MemoryTx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        self.link
    }

    /// Every handle records into the same list of sent frames.
    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        Some(Box::new(self.clone()))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        self.shared.lock().sent.push(frame.to_vec());
        Ok(())
    }
}
