//! Ports: where frames enter and leave the appliance.
//!
//! A [`Port`] is a pair of halves, an [`RxPort`] and a [`TxPort`], that can
//! be moved to different threads. Implementations:
//! - [`af_packet`]: every frame of a Linux interface through an
//!   `AF_PACKET` socket, promiscuous, without our own transmissions;
//! - [`tun`]: a TUN device carrying raw IP packets;
//! - [`memory`]: an in-memory port for tests, with a [`MemoryHandle`];
//! - [`pcap`]: capture files to read from and write to (`bitsgw replay`).
//!
//! [`endpoint`] is the appliance's own host stack on a side, on smoltcp.
//!
//! Receiving blocks for at most [`RECV_TIMEOUT`], so the loop that calls
//! [`RxPort::recv`] can check a stop flag between calls. I/O errors are
//! returned as [`PortError`] and never panic.
//!
//! This is the only crate of the workspace with `unsafe` code: the system
//! calls libc exposes (ioctl, setsockopt, poll, setns, prctl, flock, setresuid). Each block says why
//! it is sound.

use std::time::Duration;

use bitsgw_wire::PacketBuf;

mod af_packet_port;
#[cfg(feature = "af-xdp")]
mod af_xdp_port;
mod memory;
pub mod netns;
pub mod pcap;
pub mod process;
pub mod smoltcp_endpoint;
pub mod steering;
mod sys;
mod tun_port;

pub use af_packet_port::SEND_MODE_VARIABLE;
pub use memory::MemoryHandle;
pub use smoltcp_endpoint::SmoltcpEndpoint;

/// How long [`RxPort::recv`] waits for a frame before returning `Ok(false)`.
pub const RECV_TIMEOUT: Duration = Duration::from_millis(10);

pub use bitsgw_pipeline::port::{Port, PortError, RxPort, SteerRule, TxPort};
pub use bitsgw_wire::ether::LinkType;

/// `AF_PACKET` on a Linux interface: every frame, promiscuous, through a
/// raw packet socket. Frames that this host transmits on the
/// interface (`PACKET_OUTGOING`, including this port's own sends) are
/// not received back: the socket has `PACKET_IGNORE_OUTGOING` set
/// (Linux 4.20 or newer).
///
/// The socket belongs to the network namespace of the calling thread
/// (see [`netns::run_in`]). Only Ethernet and loopback interfaces are
/// accepted.
pub fn af_packet(interface: &str) -> Result<Port, PortError> {
    af_packet_port::open(interface, OnLinkLoss::Fail).map(|(port, _)| port)
}

/// [`af_packet`], with a choice of what the port does if its interface is
/// deleted while it runs, and a [`LinkWatch`] that tells the rest of the
/// appliance. Either way the receiving half notices (the socket reports
/// the interface down, and it then looks whether it is gone) instead of
/// polling a dead socket in a busy loop.
pub fn af_packet_with(
    interface: &str,
    on_loss: OnLinkLoss,
) -> Result<(Port, LinkWatch), PortError> {
    af_packet_port::open(interface, on_loss)
}

/// `queues` [`af_packet_with`] ports on one interface, in one
/// `PACKET_FANOUT` group: each frame the interface receives reaches one of
/// them, chosen by the kernel's flow hash (addresses, protocol, ports; the
/// SPI for ESP), so one flow, and one SA's traffic between two gateways,
/// always reaches the same port. Each port is received by its own thread
/// (the runner's queues, [`bitsgw_pipeline::runner::start_queues`]).
///
/// With [`Fanout::BySpi`] the kernel runs [`steering::spi_program`]
/// instead of its hash: ESP frames go to the queue that owns their SPI, as
/// the runner tells the port ([`RxPort::steer_by_spi`]).
pub fn af_packet_fanout(
    interface: &str,
    on_loss: OnLinkLoss,
    queues: usize,
    fanout: Fanout,
) -> Result<Vec<(Port, LinkWatch)>, PortError> {
    af_packet_port::open_fanout(interface, on_loss, queues, fanout)
}

/// An `AF_XDP` socket on queue 0 of an Ethernet interface, in copy mode
/// behind generic XDP (cargo feature `af-xdp`): every frame arriving on
/// the interface goes to the port instead of the kernel's stack. A trial
/// (`af_xdp_port`'s documentation says what it does not handle).
#[cfg(feature = "af-xdp")]
pub fn af_xdp(interface: &str) -> Result<Port, PortError> {
    af_xdp_port::open(interface)
}

/// How a `PACKET_FANOUT` group spreads frames over its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// The kernel's flow hash (`PACKET_FANOUT_HASH`): one flow, one socket.
    FlowHash,
    /// ESP by the owner of its SPI (`PACKET_FANOUT_CBPF`, see
    /// [`steering`]); the network side's choice.
    BySpi,
    /// IPv4 by the first of the outbound SPD's entries its addresses
    /// match, to the owner of that entry's SAs ([`RxPort::steer_by_rules`],
    /// [`steering::rules_program`]); the host side's choice.
    ByRules,
}

/// What a port does when its interface is deleted under it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnLinkLoss {
    /// Receiving fails with [`PortError::LinkLost`], which stops the
    /// pipeline.
    #[default]
    Fail,
    /// Receiving sleeps, looking every half second for an interface of
    /// the same name, and binds to it when one appears; frames sent
    /// meanwhile fail (and are counted as such).
    Wait,
}

/// How often a port lost its interface and found it back; shared with
/// the port's receiving half.
#[derive(Debug, Clone, Default)]
pub struct LinkWatch(std::sync::Arc<LinkCounts>);

#[derive(Debug, Default)]
struct LinkCounts {
    losses: std::sync::atomic::AtomicU64,
    returns: std::sync::atomic::AtomicU64,
}

impl LinkWatch {
    /// Times the interface was found gone.
    pub fn losses(&self) -> u64 {
        self.0.losses.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Times an interface of the name came back and the port bound to it.
    pub fn returns(&self) -> u64 {
        self.0.returns.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn record_loss(&self) {
        self.0
            .losses
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn record_return(&self) {
        self.0
            .returns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The Ethernet address of an interface (in the calling thread's network
/// namespace), for the appliance's own endpoint on it.
pub fn interface_mac(interface: &str) -> Result<[u8; 6], PortError> {
    let err = |source| PortError::Open {
        port: interface.to_owned(),
        source,
    };
    let socket = sys::control_socket().map_err(err)?;
    sys::hardware_address(std::os::fd::AsFd::as_fd(&socket), interface)
        .map_err(err)?
        .ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the interface has no Ethernet address",
            ))
        })
}

/// Takes an exclusive advisory lock (`flock(LOCK_EX | LOCK_NB)`) on
/// `file`, held until the file is closed (also when the process dies);
/// `WouldBlock` when another open file holds it.
pub fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a file descriptor and flags; the descriptor is
    // open for as long as `file` is borrowed, and no memory is passed.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TUN device (`IFF_TUN | IFF_NO_PI`) created, or attached to if it
/// exists and is persistent, by name; frames are raw IP. A device this
/// call created disappears when both halves are dropped.
pub fn tun(name: &str) -> Result<Port, PortError> {
    tun_port::open(name)
}

/// `queues` ports on the queues of one multi-queue TUN device
/// (`IFF_MULTI_QUEUE`), created, or attached to if it exists and is a
/// persistent multi-queue device, by name; one port per queue of the
/// runner's queues ([`bitsgw_pipeline::runner::start_queues`]). The
/// kernel reads each flow the stack routes into the device on one queue;
/// a packet written on any queue enters the stack. A device this call
/// created disappears when every port's halves are dropped.
pub fn tun_queues(name: &str, queues: usize) -> Result<Vec<Port>, PortError> {
    tun_port::open_queues(name, queues)
}

/// An in-memory port for tests: returns the port and a handle to inject
/// frames and collect what was sent.
pub fn memory(name: &str, link: LinkType) -> (Port, MemoryHandle) {
    memory::open(name, link)
}

/// Copies a received frame into `buf`, after the default headroom.
fn fill(buf: &mut PacketBuf, port: &str, frame: &[u8]) -> Result<(), PortError> {
    buf.set(frame).map_err(|_| PortError::FrameTooLarge {
        port: port.to_owned(),
        len: frame.len(),
        capacity: buf.capacity(),
    })
}
