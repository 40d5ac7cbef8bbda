//! Sending: each thread's handles on the two ports.

use super::*;

/// A thread's way to send on one port: a handle of its own where the port
/// can give one ([`TxPort::try_clone`]), else the port's one handle,
/// shared behind a lock that is taken once per burst: the thread stages
/// its frames and hands them over at [`TxHandle::flush`] (or when its
/// staging space is full), never one lock per frame.
pub(super) enum TxHandle {
    Own(Box<dyn TxPort>),
    Shared {
        port: Arc<Mutex<Box<dyn TxPort>>>,
        staged: Staged,
    },
}

/// Frames a thread staged for a shared port, in space reserved once.
pub(super) struct Staged {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Frames the port refused when the space was handed over early.
    refused: u64,
}

/// Staging space per thread and shared port: two bursts of full-size
/// Ethernet frames, or four bursts of frames.
const STAGED_BYTES: usize = 2 * BATCH * 1536;
const STAGED_FRAMES: usize = 4 * BATCH;

impl Staged {
    fn new() -> Staged {
        Staged {
            bytes: Vec::with_capacity(STAGED_BYTES),
            ends: Vec::with_capacity(STAGED_FRAMES),
            refused: 0,
        }
    }

    fn fits(&self, frame: &[u8]) -> bool {
        self.ends.len() < STAGED_FRAMES && self.bytes.len() + frame.len() <= STAGED_BYTES
    }

    /// Hands the staged frames to `port` under one lock, then has it send
    /// them; how many it refused (all of them if the lock is poisoned).
    fn hand_over(&mut self, port: &Mutex<Box<dyn TxPort>>) -> u64 {
        let mut refused = std::mem::take(&mut self.refused);
        match port.lock() {
            Ok(mut p) => {
                let mut start = 0;
                for &end in &self.ends {
                    if p.send(&self.bytes[start..end]).is_err() {
                        refused += 1;
                    }
                    start = end;
                }
                refused += p.flush();
            }
            Err(_) => refused += self.ends.len() as u64,
        }
        self.bytes.clear();
        self.ends.clear();
        refused
    }
}

impl TxHandle {
    pub(super) fn for_thread(port: &Arc<Mutex<Box<dyn TxPort>>>) -> TxHandle {
        let own = port.lock().ok().and_then(|p| p.try_clone());
        match own {
            Some(own) => TxHandle::Own(own),
            None => TxHandle::Shared {
                port: Arc::clone(port),
                staged: Staged::new(),
            },
        }
    }

    /// Sends `frame` or stages it; false if the port refused it (a staged
    /// frame the port refuses later is counted by [`TxHandle::flush`]).
    pub(super) fn send(&mut self, frame: &[u8]) -> bool {
        match self {
            TxHandle::Own(port) => port.send(frame).is_ok(),
            TxHandle::Shared { port, staged } => {
                if !staged.fits(frame) && !staged.ends.is_empty() {
                    staged.refused += staged.hand_over(port);
                }
                if staged.fits(frame) {
                    staged.bytes.extend_from_slice(frame);
                    staged.ends.push(staged.bytes.len());
                    return true;
                }
                // Larger than the whole space (a jumbo frame): alone.
                port.lock()
                    .map(|mut p| p.send(frame).is_ok())
                    .unwrap_or(false)
            }
        }
    }

    /// Sends what the port (or this thread, for a shared port) staged; how
    /// many of those frames it refused.
    pub(super) fn flush(&mut self) -> u64 {
        match self {
            TxHandle::Own(port) => port.flush(),
            TxHandle::Shared { staged, .. } if staged.ends.is_empty() => {
                std::mem::take(&mut staged.refused)
            }
            TxHandle::Shared { port, staged } => staged.hand_over(port),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A port with one handle that records what it is given, refusing
    /// frames that start with 0xff.
    struct Recording(Arc<Mutex<Vec<Vec<u8>>>>);

    impl TxPort for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn link_type(&self) -> LinkType {
            LinkType::Ethernet
        }
        fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
            if frame.first() == Some(&0xff) {
                return Err(PortError::Io {
                    port: "recording".into(),
                    source: std::io::Error::other("refused"),
                });
            }
            if let Ok(mut sent) = self.0.lock() {
                sent.push(frame.to_vec());
            }
            Ok(())
        }
    }

    fn shared() -> (TxHandle, Arc<Mutex<Vec<Vec<u8>>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let port: Box<dyn TxPort> = Box::new(Recording(Arc::clone(&sent)));
        (TxHandle::for_thread(&Arc::new(Mutex::new(port))), sent)
    }

    #[test]
    fn a_shared_port_gets_a_threads_frames_in_order_at_the_flush() {
        let (mut tx, sent) = shared();
        assert!(matches!(tx, TxHandle::Shared { .. }));
        for i in 0..3u8 {
            assert!(tx.send(&[i; 60]));
        }
        // Staged: the port's lock was not taken per frame.
        assert!(sent.lock().unwrap().is_empty());
        assert_eq!(tx.flush(), 0);
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent, vec![vec![0u8; 60], vec![1; 60], vec![2; 60]]);
    }

    #[test]
    fn full_staging_is_handed_over_early_and_refusals_count_at_the_flush() {
        let (mut tx, sent) = shared();
        assert!(tx.send(&[0xff; 60]));
        for i in 1..STAGED_FRAMES {
            assert!(tx.send(&[(i % 200) as u8; 60]));
        }
        assert!(sent.lock().unwrap().is_empty());
        // One more than the space holds: the staged ones go first.
        assert!(tx.send(&[7; 60]));
        assert_eq!(sent.lock().unwrap().len(), STAGED_FRAMES - 1);
        // A frame larger than the whole space goes alone, after them.
        let jumbo = vec![9u8; STAGED_BYTES + 1];
        assert!(tx.send(&jumbo));
        assert_eq!(tx.flush(), 1, "the refused frame, counted once");
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), STAGED_FRAMES + 1);
        assert_eq!(sent[STAGED_FRAMES - 1], vec![7; 60]);
        assert_eq!(sent[STAGED_FRAMES], jumbo);
        assert_eq!(tx.flush(), 0);
    }
}
