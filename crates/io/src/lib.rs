//! Ports: where frames enter and leave the appliance.
//!
//! A [`Port`] is a pair of halves, an [`RxPort`] and a [`TxPort`], that can
//! be moved to different threads. Implementations:
//! - [`Port::af_packet`]: every frame of a Linux interface through an
//!   `AF_PACKET` socket (pnet), promiscuous, without our own transmissions;
//! - [`Port::tun`]: a TUN device carrying raw IP packets;
//! - [`Port::memory`]: an in-memory port for tests, with a [`MemoryHandle`];
//! - [`pcap`]: capture files to read from and write to (`bitsgw replay`).
//!
//! Receiving blocks for at most [`RECV_TIMEOUT`], so the loop that calls
//! [`RxPort::recv`] can check a stop flag between calls. I/O errors are
//! returned as [`PortError`] and never panic.
//!
//! This is the only crate of the workspace with `unsafe` code: the system
//! calls libc exposes (ioctl, setsockopt, poll, setns). Each block says why
//! it is sound.

use std::time::Duration;

use bitsgw_wire::PacketBuf;

mod af_packet;
mod memory;
pub mod netns;
pub mod pcap;
mod sys;
mod tun;

pub use memory::MemoryHandle;

/// How long [`RxPort::recv`] waits for a frame before returning `Ok(false)`.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(10);

/// What a port's frames start with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// An Ethernet II header (destination, source, EtherType).
    Ethernet,
    /// An IPv4 or IPv6 header, told apart by the version nibble.
    RawIp,
}

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

/// Receiving half of a port. Blocking with a short internal timeout
/// ([`RECV_TIMEOUT`]) so a caller's loop can check a stop flag.
pub trait RxPort: Send {
    /// The port's name (an interface name for system ports).
    fn name(&self) -> &str;
    /// What received frames start with.
    fn link_type(&self) -> LinkType;
    /// Receives one frame into `buf` (reset first; the frame starts after
    /// the default headroom). `Ok(false)` if nothing arrived before the
    /// timeout.
    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError>;
}

/// Sending half of a port.
pub trait TxPort: Send {
    /// The port's name (an interface name for system ports).
    fn name(&self) -> &str;
    /// What sent frames must start with.
    fn link_type(&self) -> LinkType;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> Result<(), PortError>;
}

/// A port: its receiving and sending halves, which may be used from
/// different threads.
pub struct Port {
    /// The receiving half.
    pub rx: Box<dyn RxPort>,
    /// The sending half.
    pub tx: Box<dyn TxPort>,
}

impl core::fmt::Debug for Port {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.rx.name())
            .field("link_type", &self.rx.link_type())
            .finish()
    }
}

impl Port {
    /// `AF_PACKET` on a Linux interface: every frame, promiscuous, through
    /// pnet's datalink channel. Frames that this host transmits on the
    /// interface (`PACKET_OUTGOING`, including this port's own sends) are
    /// not received back: the socket has `PACKET_IGNORE_OUTGOING` set
    /// (Linux 4.20 or newer).
    ///
    /// The socket belongs to the network namespace of the calling thread
    /// (see [`netns::run_in`]). Only Ethernet and loopback interfaces are
    /// accepted.
    pub fn af_packet(interface: &str) -> Result<Port, PortError> {
        af_packet::open(interface)
    }

    /// A TUN device (`IFF_TUN | IFF_NO_PI`) created, or attached to if it
    /// exists and is persistent, by name; frames are raw IP. A device this
    /// call created disappears when both halves are dropped.
    pub fn tun(name: &str) -> Result<Port, PortError> {
        tun::open(name)
    }

    /// An in-memory port for tests: returns the port and a handle to inject
    /// frames and collect what was sent.
    pub fn memory(name: &str, link: LinkType) -> (Port, MemoryHandle) {
        memory::open(name, link)
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        self.rx.name()
    }

    /// What the port's frames start with.
    pub fn link_type(&self) -> LinkType {
        self.rx.link_type()
    }
}

/// Copies a received frame into `buf`, after the default headroom.
fn fill(buf: &mut PacketBuf, port: &str, frame: &[u8]) -> Result<(), PortError> {
    buf.set(frame).map_err(|_| PortError::FrameTooLarge {
        port: port.to_owned(),
        len: frame.len(),
        capacity: buf.capacity(),
    })
}
