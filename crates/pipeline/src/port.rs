//! What the pipeline needs of a port; `bitsgw-io` implements it for
//! AF_PACKET, TUN and in-memory ports.

use bitsgw_wire::ether::LinkType;
use bitsgw_wire::PacketBuf;

/// Errors of ports and capture files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The port could not be opened (no such interface, no permission, ...).
    #[error("cannot open port {port}: {source}")]
    Open {
        /// The port's name.
        port: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Receiving or sending failed at the system level.
    #[error("I/O error on port {port}: {source}")]
    Io {
        /// The port's name.
        port: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// The port is closed: nothing more will be received.
    #[error("port {port} is closed")]
    Closed {
        /// The port's name.
        port: String,
    },
    /// The port's interface is gone (deleted, or its device detached):
    /// nothing more will be received or sent through it.
    #[error("port {port}: the interface is gone (deleted)")]
    LinkLost {
        /// The port's name, which is the interface's.
        port: String,
    },
    /// A received frame did not fit into the packet buffer. The frame is
    /// dropped and the port stays usable: the caller counts the drop and
    /// calls again.
    #[error("port {port}: frame of {len} bytes does not fit a {capacity}-byte buffer")]
    FrameTooLarge {
        /// The port's name.
        port: String,
        /// The frame's length.
        len: usize,
        /// The room the buffer had for it.
        capacity: usize,
    },
    /// A capture file's content is invalid, or a packet can not be
    /// represented in it.
    #[error("capture {file}: {problem}")]
    BadCapture {
        /// The capture file's path.
        file: String,
        /// What is wrong, and where.
        problem: String,
    },
    /// Opening, reading or writing a capture file failed at the system
    /// level.
    #[error("capture {file}: {source}")]
    CaptureIo {
        /// The capture file's path.
        file: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Entering a network namespace failed.
    #[error("network namespace {name}: {source}")]
    Namespace {
        /// The namespace's name.
        name: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Receiving half of a port. `recv` blocks for at most a short time (about
/// 10 ms) so a caller's loop can check whether to stop.
pub trait RxPort: Send {
    /// The port's name.
    fn name(&self) -> &str;
    /// What its frames start with.
    fn link_type(&self) -> LinkType;
    /// Receives one frame into `buf` (which is reset first). `Ok(false)`
    /// if nothing arrived in time.
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError>;
    /// [`RxPort::recv`], waiting at most about `wait` (a thread that polls
    /// several ports waits on each in turn). Ports that can not bound
    /// their wait so answer as `recv` does.
    fn recv_within(
        &mut self,
        buf: &mut PacketBuf,
        wait: std::time::Duration,
    ) -> Result<bool, PortError> {
        let _ = wait;
        self.recv(buf)
    }
    /// Receives one frame if one is waiting, without blocking; lets the
    /// receive thread gather a burst into one batch. Ports that can not
    /// tell answer `Ok(false)`, and frames then travel one at a time.
    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let _ = buf;
        Ok(false)
    }
    /// In a group of ports that spreads ESP by SPI (an `AF_PACKET` fanout
    /// group with its steering program): sends ESP of each SPI in `owners`
    /// to the port of the queue paired with it, for the whole group. The
    /// runner calls it on one port of the group whenever the SAs' owners
    /// may have changed. Other ports ignore it.
    fn steer_by_spi(&mut self, owners: &[(u32, u32)]) -> Result<(), PortError> {
        let _ = owners;
        Ok(())
    }
    /// In a group of ports that spreads IPv4 by addresses (an `AF_PACKET`
    /// fanout group with its steering program): sends each frame to the
    /// queue of the first rule it matches, for the whole group (see
    /// [`SteerRule`]). The runner calls it on one port of the group
    /// whenever the outbound SPD or the SAs' owners may have changed.
    /// Other ports ignore it.
    fn steer_by_rules(&mut self, rules: &[SteerRule]) -> Result<(), PortError> {
        let _ = rules;
        Ok(())
    }
    /// Frames the operating system dropped before they reached this port
    /// (a full socket buffer), since the last call. Ports that can not
    /// lose frames that way answer 0.
    fn take_kernel_drops(&mut self) -> Result<u64, PortError> {
        Ok(0)
    }
}

/// Sending half of a port.
pub trait TxPort: Send {
    /// The port's name.
    fn name(&self) -> &str;
    /// What its frames start with.
    fn link_type(&self) -> LinkType;
    /// Sends one frame, or stages it to leave with the next
    /// [`TxPort::flush`] (an error here is then only for this frame; the
    /// staged ones that fail are counted by the flush).
    fn send(&mut self, frame: &[u8]) -> Result<(), PortError>;
    /// Sends whatever [`TxPort::send`] staged; returns how many of those
    /// frames the port refused since the last flush. The pipeline calls it
    /// after each batch of frames, so a staged frame waits at most for the
    /// rest of its batch. Ports that send at once stage nothing.
    fn flush(&mut self) -> u64 {
        0
    }
    /// Another sending handle on the same port, through which a second
    /// thread can send without a lock, if the port allows that (a packet
    /// socket or a TUN device takes whole frames from several threads).
    /// `None`: the threads share this handle behind a lock.
    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        None
    }
}

/// Both halves of a port.
pub struct Port {
    /// Receiving half.
    pub rx: Box<dyn RxPort>,
    /// Sending half.
    pub tx: Box<dyn TxPort>,
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.rx.name())
            .finish()
    }
}

/// One rule of a host side's steering: IPv4 frames whose source and
/// destination addresses lie in these ranges (inclusive; `None` is any)
/// and whose protocol is this one (`None`: any) go to `queue`, or, with no
/// queue, by their addresses' hash. Rules are tried in order; a frame that
/// matches none goes by the hash. Made from the outbound SPD: the entry
/// that a flow's packets match first names the owner of the SAs that
/// protect it. Ports are not looked at, so a frame may land on the queue
/// of an entry the SPD does not pick for it; it is then handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteerRule {
    /// The source addresses (the SPD entry's local ones).
    pub src: Option<(u32, u32)>,
    /// The destination addresses (its remote ones).
    pub dst: Option<(u32, u32)>,
    /// The IP protocol.
    pub proto: Option<u8>,
    /// Where matching frames go.
    pub queue: Option<u32>,
}
