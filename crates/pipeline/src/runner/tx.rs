//! Sending: each thread's handles on the two ports.

use super::*;

/// A thread's way to send on one port: a handle of its own where the port
/// can give one ([`TxPort::try_clone`]), else the port's one handle,
/// shared behind a lock.
pub(super) enum TxHandle {
    Own(Box<dyn TxPort>),
    Shared(Arc<Mutex<Box<dyn TxPort>>>),
}

impl TxHandle {
    pub(super) fn for_thread(port: &Arc<Mutex<Box<dyn TxPort>>>) -> TxHandle {
        let own = port.lock().ok().and_then(|p| p.try_clone());
        match own {
            Some(own) => TxHandle::Own(own),
            None => TxHandle::Shared(Arc::clone(port)),
        }
    }

    pub(super) fn send(&mut self, frame: &[u8]) -> bool {
        match self {
            TxHandle::Own(port) => port.send(frame).is_ok(),
            TxHandle::Shared(port) => port
                .lock()
                .map(|mut p| p.send(frame).is_ok())
                .unwrap_or(false),
        }
    }

    /// Sends what the port staged; how many of those frames it refused.
    pub(super) fn flush(&mut self) -> u64 {
        match self {
            TxHandle::Own(port) => port.flush(),
            TxHandle::Shared(port) => port.lock().map(|mut p| p.flush()).unwrap_or(0),
        }
    }
}

/// The sending halves of both ports, as one thread sends on them.
pub(super) struct TxPorts {
    pub(super) host: TxHandle,
    pub(super) network: TxHandle,
}

impl TxPorts {
    /// Handles for one more thread on the ports `shared` holds.
    pub(super) fn for_thread(shared: &SharedTxPorts) -> TxPorts {
        TxPorts {
            host: TxHandle::for_thread(&shared.host),
            network: TxHandle::for_thread(&shared.network),
        }
    }

    /// Sends `frame` on `side`, or stages it for [`TxPorts::flush`]; false
    /// if the port refused it.
    pub(super) fn send(&mut self, side: Side, frame: &[u8]) -> bool {
        match side {
            Side::Host => self.host.send(frame),
            Side::Network => self.network.send(frame),
        }
    }

    /// Sends the frames both ports staged (one system call per port and
    /// burst); how many of them were refused.
    pub(super) fn flush(&mut self) -> u64 {
        self.host.flush() + self.network.flush()
    }
}

/// Both ports' sending halves as opened, from which each thread takes its
/// handles.
pub(super) struct SharedTxPorts {
    pub(super) host: Arc<Mutex<Box<dyn TxPort>>>,
    pub(super) network: Arc<Mutex<Box<dyn TxPort>>>,
}
