//! `AF_PACKET` ports: one raw packet socket per interface, bound to every
//! protocol, promiscuous, without our own transmissions.
//!
//! Frames are received through a memory-mapped ring (`PACKET_MMAP`,
//! `TPACKET_V2`): while frames wait, taking one is a copy out of the ring
//! into the caller's [`PacketBuf`] and no system call; a `poll` only when
//! the ring is empty. That lets the receive thread gather a burst of
//! waiting frames into one batch ([`RxPort::recv_nowait`]) cheaply. A
//! frame longer than a ring slot (jumbo frames) is read from the socket in
//! full instead. Sending is batched the same way: frames are copied into a
//! staging area of the sending handle and leave together, with one
//! `sendmmsg` per burst ([`TxPort::flush`], which the pipeline calls after
//! each batch) instead of one `send` each; a frame too long for a staging
//! slot is sent on its own, after those staged before it.
//!
//! For measuring what that batching saves, the environment variable
//! [`SEND_MODE_VARIABLE`] chooses how ports opened afterwards send:
//! `per-frame` (one `send` per frame, as before batching), `batch` (the
//! default) or `batch-qdisc-bypass` (batched, and the socket set with
//! `PACKET_QDISC_BYPASS` so its frames skip the interface's queueing
//! discipline and the other packet sockets' taps; `packet(7)`). Only the
//! syscall benchmark (`make bench-syscalls`) sets it.
//!
//! Frames this host sends on the interface (`PACKET_OUTGOING`, our own
//! sends among them) are not received back: `PACKET_IGNORE_OUTGOING`
//! (Linux 4.20). The ring is made large ([`RING_SLOTS`]) so a burst
//! outlasts a moment in which the receive thread is not scheduled; what
//! the kernel still drops for lack of room is read from
//! `PACKET_STATISTICS` and reported by [`RxPort::take_kernel_drops`], so it
//! is counted like every other drop.
//!
//! Linux takes the outer VLAN tag (802.1Q or 802.1ad) out of every frame
//! it receives before a packet socket sees it, and reports it beside the
//! frame (`tp_vlan_tci`/`tp_vlan_tpid` in the ring slot, `PACKET_AUXDATA`
//! for frames read from the socket). The port puts it back after the MAC
//! addresses while copying the frame into the caller's buffer, so a tagged
//! frame is handled, and leaves, with its tag.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitsgw_wire::buf::DEFAULT_HEADROOM;
use bitsgw_wire::PacketBuf;

use crate::sys::RingFrame;
use bitsgw_pipeline::port::SteerRule;

use crate::{
    sys, Fanout, LinkType, LinkWatch, OnLinkLoss, Port, PortError, RxPort, TxPort, RECV_TIMEOUT,
};

/// How long a send may wait for room in the socket's send buffer.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// The socket's receive buffer, which holds the frames too long for a ring
/// slot (the kernel charges each its buffer's true size).
const RECEIVE_BUFFER: usize = 8 << 20;

/// A receive ring slot: its header and a frame of up to 1 984 octets
/// (every frame of a 1500-octet MTU, with VLAN tags).
const RING_SLOT: usize = 2048;

/// Receive ring slots (8 MiB in all).
const RING_SLOTS: usize = 4096;

/// The socket's send buffer.
const SEND_BUFFER: usize = 4 << 20;

/// How often a port whose interface went down looks whether it is gone,
/// and a port whose interface is gone whether it is back.
const LINK_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct AfPacketRx {
    name: String,
    socket: Arc<OwnedFd>,
    ring: sys::RxRing,
    /// The interface the socket is bound to.
    ifindex: libc::c_int,
    on_loss: OnLinkLoss,
    watch: LinkWatch,
    /// The interface is gone; the socket is bound to nothing.
    lost: bool,
    /// When to look again whether the interface still exists: armed when
    /// it went down (deleting an interface first takes it down, and the
    /// socket hears only of that), disarmed by the next frame.
    next_link_check: Option<Instant>,
    /// In a steered group ([`Fanout::BySpi`], [`Fanout::ByRules`]): the
    /// steering call that sets its program.
    steering: Option<Fanout>,
}

#[derive(Debug)]
struct AfPacketTx {
    name: String,
    socket: Arc<OwnedFd>,
    staged: TxStaging,
    mode: SendMode,
}

/// The environment variable that chooses the ports' [`SendMode`].
pub const SEND_MODE_VARIABLE: &str = "BITSGW_AF_PACKET_SEND";

/// How a port's sending half hands frames to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendMode {
    /// One `send(2)` per frame, at once.
    PerFrame,
    /// Staged, one `sendmmsg(2)` per burst.
    Batch,
    /// [`SendMode::Batch`] on a socket with `PACKET_QDISC_BYPASS`.
    BatchQdiscBypass,
}

impl SendMode {
    /// The mode [`SEND_MODE_VARIABLE`] names; batched when it is unset.
    fn from_environment() -> io::Result<SendMode> {
        match std::env::var(SEND_MODE_VARIABLE) {
            Err(std::env::VarError::NotPresent) => SendMode::parse(None),
            Ok(v) => SendMode::parse(Some(&v)),
            Err(std::env::VarError::NotUnicode(_)) => SendMode::parse(Some("")),
        }
    }

    fn parse(value: Option<&str>) -> io::Result<SendMode> {
        match value {
            None | Some("batch") => Ok(SendMode::Batch),
            Some("per-frame") => Ok(SendMode::PerFrame),
            Some("batch-qdisc-bypass") => Ok(SendMode::BatchQdiscBypass),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{SEND_MODE_VARIABLE} must be per-frame, batch or batch-qdisc-bypass"),
            )),
        }
    }
}

/// A staging slot: every frame of a 1500-octet MTU with VLAN tags.
const STAGE_SLOT: usize = 2048;

/// Frames waiting for the next flush, in slots of one buffer made with the
/// handle (no allocation per frame), and how many staged frames the kernel
/// refused since the last flush reported.
struct TxStaging {
    slots: Box<[u8]>,
    lens: [usize; sys::SEND_BATCH],
    count: usize,
    failed: u64,
}

impl TxStaging {
    fn new() -> Self {
        TxStaging {
            slots: vec![0u8; STAGE_SLOT * sys::SEND_BATCH].into_boxed_slice(),
            lens: [0; sys::SEND_BATCH],
            count: 0,
            failed: 0,
        }
    }

    /// Copies `frame` (at most [`STAGE_SLOT`] octets) into the next slot;
    /// the caller flushes a full staging area first.
    fn stage(&mut self, frame: &[u8]) {
        let at = self.count * STAGE_SLOT;
        self.slots[at..at + frame.len()].copy_from_slice(frame);
        self.lens[self.count] = frame.len();
        self.count += 1;
    }

    /// Sends every staged frame, in order, with as few `sendmmsg` as the
    /// kernel allows; a frame it refuses is counted and skipped.
    fn send_all(&mut self, socket: &OwnedFd) {
        let mut frames: [&[u8]; sys::SEND_BATCH] = [&[]; sys::SEND_BATCH];
        for (i, frame) in frames.iter_mut().enumerate().take(self.count) {
            let at = i * STAGE_SLOT;
            *frame = &self.slots[at..at + self.lens[i]];
        }
        let mut next = 0;
        while next < self.count {
            match sys::send_batch(socket.as_fd(), &frames[next..self.count]) {
                Ok(n) if n > 0 => next += n,
                // The first frame left was refused (or, never seen, none
                // was taken without an error): count it and go on.
                _ => {
                    self.failed += 1;
                    next += 1;
                }
            }
        }
        self.count = 0;
    }
}

impl core::fmt::Debug for TxStaging {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TxStaging")
            .field("count", &self.count)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for AfPacketTx {
    /// Nothing staged is lost with the handle.
    fn drop(&mut self) {
        if self.staged.count > 0 {
            self.staged.send_all(&self.socket);
        }
    }
}

impl Clone for AfPacketTx {
    /// Another handle on the same socket, with a staging area of its own.
    fn clone(&self) -> Self {
        AfPacketTx {
            name: self.name.clone(),
            socket: self.socket.clone(),
            staged: TxStaging::new(),
            mode: self.mode,
        }
    }
}

pub(crate) fn open(interface: &str, on_loss: OnLinkLoss) -> Result<(Port, LinkWatch), PortError> {
    open_in_group(interface, on_loss, None)
}

/// `queues` sockets on `interface` in one `PACKET_FANOUT` group of mode
/// `PACKET_FANOUT_HASH`: the kernel hands each received frame to one of
/// them by the flow hash of its packet (addresses, protocol, and ports or,
/// for ESP, the SPI; fragments of one datagram by addresses alone), so a
/// flow, and an SA's traffic from one peer, always reaches the same
/// socket. The group's id is the interface's index, unique in its network
/// namespace.
pub(crate) fn open_fanout(
    interface: &str,
    on_loss: OnLinkLoss,
    queues: usize,
    fanout: Fanout,
) -> Result<Vec<(Port, LinkWatch)>, PortError> {
    let ifindex = sys::interface_index(interface).map_err(|source| PortError::Open {
        port: interface.to_owned(),
        source,
    })?;
    // Group ids are 16 bits wide; indexes past that share ids modulo 2^16,
    // which the kernel refuses (different device) rather than mixing.
    let group = (ifindex & 0xffff) as u16;
    (0..queues)
        .map(|_| open_in_group(interface, on_loss, Some((group, fanout))))
        .collect()
}

fn open_in_group(
    interface: &str,
    on_loss: OnLinkLoss,
    fanout: Option<(u16, Fanout)>,
) -> Result<(Port, LinkWatch), PortError> {
    let err = |source| PortError::Open {
        port: interface.to_owned(),
        source,
    };
    let socket = sys::packet_socket().map_err(err)?;
    let fd = socket.as_fd();
    let hardware = sys::hardware_type(fd, interface).map_err(err)?;
    if hardware != libc::ARPHRD_ETHER && hardware != libc::ARPHRD_LOOPBACK {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not an Ethernet interface (hardware type {hardware}); use a TUN port for raw IP"
            ),
        )));
    }
    let ifindex = sys::interface_index(interface).map_err(err)?;
    // Everything is set before the bind: frames start arriving with it.
    sys::set_int_option(fd, libc::SOL_PACKET, sys::PACKET_IGNORE_OUTGOING, 1).map_err(err)?;
    sys::set_int_option(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1).map_err(err)?;
    sys::set_buffer_size(fd, true, RECEIVE_BUFFER).map_err(err)?;
    sys::set_buffer_size(fd, false, SEND_BUFFER).map_err(err)?;
    sys::set_send_timeout(fd, SEND_TIMEOUT).map_err(err)?;
    let mode = SendMode::from_environment().map_err(err)?;
    if mode == SendMode::BatchQdiscBypass {
        sys::set_int_option(fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1).map_err(err)?;
    }
    let ring = sys::RxRing::new(fd, RING_SLOT, RING_SLOTS).map_err(err)?;
    sys::bind_packet_socket(fd, ifindex).map_err(err)?;
    sys::add_promiscuous_membership(fd, ifindex).map_err(err)?;
    if let Some((group, fanout)) = fanout {
        // A socket joins a group once bound (the kernel refuses an unbound
        // one); frames that arrived before the join are this socket's.
        // Until a program is set, a CBPF group hands everything to its
        // first socket.
        let fanout_mode = match fanout {
            Fanout::FlowHash => libc::PACKET_FANOUT_HASH,
            Fanout::BySpi | Fanout::ByRules => libc::PACKET_FANOUT_CBPF,
        } as libc::c_int;
        sys::set_int_option(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            libc::c_int::from(group) | (fanout_mode << 16),
        )
        .map_err(err)?;
    }
    let socket = Arc::new(socket);
    let watch = LinkWatch::default();
    let port = Port {
        rx: Box::new(AfPacketRx {
            name: interface.to_owned(),
            socket: socket.clone(),
            ring,
            ifindex,
            on_loss,
            watch: watch.clone(),
            lost: false,
            next_link_check: None,
            steering: fanout.map(|(_, f)| f).filter(|f| *f != Fanout::FlowHash),
        }),
        tx: Box::new(AfPacketTx {
            name: interface.to_owned(),
            socket,
            staged: TxStaging::new(),
            mode,
        }),
    };
    Ok((port, watch))
}

impl AfPacketRx {
    /// Whether the interface the socket is bound to no longer exists
    /// under its name (looked up in the socket's network namespace, which
    /// may not be the calling thread's).
    fn link_gone(&self) -> bool {
        sys::interface_index_of(self.socket.as_fd(), &self.name).ok() != Some(self.ifindex)
    }

    /// The interface is gone: fails the port, or (`OnLinkLoss::Wait`)
    /// waits for it to return.
    fn lose_link(&mut self) -> Result<bool, PortError> {
        self.lost = true;
        self.watch.record_loss();
        self.next_link_check = Some(Instant::now() + LINK_CHECK);
        self.after_loss()
    }

    fn after_loss(&self) -> Result<bool, PortError> {
        match self.on_loss {
            OnLinkLoss::Fail => Err(PortError::LinkLost {
                port: self.name.clone(),
            }),
            OnLinkLoss::Wait => Ok(false),
        }
    }

    /// While the interface is gone: sleeps rather than polls a socket that
    /// is bound to nothing, and now and then looks whether an interface of
    /// that name is back, to bind the socket to it.
    fn wait_for_link(&mut self) -> Result<bool, PortError> {
        if self.on_loss == OnLinkLoss::Fail {
            return self.after_loss();
        }
        std::thread::sleep(RECV_TIMEOUT);
        let now = Instant::now();
        if self.next_link_check.is_some_and(|at| now < at) {
            return Ok(false);
        }
        self.next_link_check = Some(now + LINK_CHECK);
        if self.rebind().is_ok() {
            self.lost = false;
            self.next_link_check = None;
            self.watch.record_return();
        }
        Ok(false)
    }

    /// Binds the socket to the interface now called by the port's name,
    /// promiscuous as when it was opened (the kernel dropped the old
    /// binding and membership with the old interface).
    fn rebind(&mut self) -> io::Result<()> {
        let fd = self.socket.as_fd();
        let ifindex = sys::interface_index_of(fd, &self.name)?;
        let hardware = sys::hardware_type(fd, &self.name)?;
        if hardware != libc::ARPHRD_ETHER && hardware != libc::ARPHRD_LOOPBACK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an Ethernet interface",
            ));
        }
        sys::bind_packet_socket(fd, ifindex)?;
        sys::add_promiscuous_membership(fd, ifindex)?;
        // What the old binding left pending is no news now.
        let _ = sys::take_socket_error(fd);
        self.ifindex = ifindex;
        Ok(())
    }

    /// Looks whether the interface is gone, if a check is due.
    fn check_link_if_due(&mut self) -> Result<bool, PortError> {
        let now = Instant::now();
        match self.next_link_check {
            Some(at) if now >= at => {
                if self.link_gone() {
                    return self.lose_link();
                }
                self.next_link_check = Some(now + LINK_CHECK);
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// `poll` reported an error or hang-up. A socket whose interface went
    /// down has `ENETDOWN` pending and reports it on every `poll` until it
    /// is read: read it (no busy loop), and look whether the interface is
    /// gone rather than only down.
    fn link_trouble(&mut self, revents: libc::c_short) -> Result<bool, PortError> {
        let pending = sys::take_socket_error(self.socket.as_fd()).map_err(|e| self.io_error(e))?;
        if revents & (libc::POLLHUP | libc::POLLNVAL) != 0 || self.link_gone() {
            return self.lose_link();
        }
        match pending {
            Some(e) if !is_link_error(&e) => Err(PortError::Io {
                port: self.name.clone(),
                source: e,
            }),
            _ => {
                self.next_link_check = Some(Instant::now() + LINK_CHECK);
                Ok(false)
            }
        }
    }

    /// A receive error that says the interface went down or away is
    /// handled like [`Self::link_trouble`]; others are passed on.
    fn on_error(&mut self, e: PortError) -> Result<bool, PortError> {
        match &e {
            PortError::Io { source, .. } if is_link_error(source) => {
                if self.link_gone() {
                    return self.lose_link();
                }
                self.next_link_check = Some(Instant::now() + LINK_CHECK);
                Ok(false)
            }
            _ => Err(e),
        }
    }

    fn io_error(&self, source: io::Error) -> PortError {
        // A failed receive may leave its reason as the socket's pending
        // error; fetching it also clears it.
        let source = match sys::take_socket_error(self.socket.as_fd()) {
            Ok(Some(pending)) => pending,
            _ => source,
        };
        PortError::Io {
            port: self.name.clone(),
            source,
        }
    }

    /// One waiting frame into `buf`, if there is one: from the ring, or
    /// from the socket when the ring slot says the frame was too long for
    /// it.
    fn try_recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let room = buf.capacity().saturating_sub(DEFAULT_HEADROOM);
        let taken = match self.ring.peek().map_err(|e| self.io_error(e))? {
            None => return Ok(false),
            Some(RingFrame::Whole(frame, tag)) => {
                // A runt the kernel still untagged keeps no tag (the
                // pipeline counts it as a bad frame).
                let tag = tag.filter(|_| frame.len() >= MACS_LEN);
                let len = frame.len() + tag.map_or(0, |t| t.len());
                match buf.reset_to_len(len) {
                    Ok(space) if len <= room => {
                        copy_with_tag(space, frame, tag);
                        Ok(true)
                    }
                    _ => Err(len),
                }
            }
            Some(RingFrame::Copied) => Ok(false),
            Some(RingFrame::Cut { len }) => Err(len),
        };
        self.ring.release();
        match taken {
            Ok(true) => Ok(true),
            // The whole frame waits on the socket.
            Ok(false) => self.recv_from_socket(buf),
            Err(len) => {
                buf.reset();
                Err(PortError::FrameTooLarge {
                    port: self.name.clone(),
                    len,
                    capacity: room,
                })
            }
        }
    }

    /// One frame waiting on the socket itself into `buf`, if there is one.
    fn recv_from_socket(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let room = buf.capacity().saturating_sub(DEFAULT_HEADROOM);
        // The frame lands after room for a tag the kernel may have taken
        // out, which then goes back in front of it.
        let space = match buf.reset_to_len(room).map(|s| s.get_mut(TAG_LEN..)) {
            Ok(Some(space)) => space,
            _ => {
                return Err(PortError::Io {
                    port: self.name.clone(),
                    source: io::Error::other("packet buffer has no room"),
                })
            }
        };
        match sys::recv_packet_nowait(self.socket.as_fd(), space) {
            Ok(Some((len, _))) if len + TAG_LEN > room => {
                buf.reset();
                Err(PortError::FrameTooLarge {
                    port: self.name.clone(),
                    len,
                    capacity: room - TAG_LEN,
                })
            }
            Ok(Some((len, tag))) => {
                buf.truncate(TAG_LEN + len);
                match tag {
                    Some(tag) if len >= MACS_LEN => {
                        let data = buf.data_mut();
                        data.copy_within(TAG_LEN..TAG_LEN + MACS_LEN, 0);
                        data[MACS_LEN..MACS_LEN + TAG_LEN].copy_from_slice(&tag);
                    }
                    // Cannot fail: the buffer holds TAG_LEN octets and more.
                    _ => {
                        let _ = buf.trim_front(TAG_LEN);
                    }
                }
                Ok(true)
            }
            Ok(None) => {
                buf.reset();
                Ok(false)
            }
            Err(e) => {
                buf.reset();
                Err(self.io_error(e))
            }
        }
    }
}

/// Length of a VLAN tag.
const TAG_LEN: usize = 4;
/// Length of the destination and source MAC addresses, after which a tag
/// stands (IEEE 802.1Q 9.3).
const MACS_LEN: usize = 12;

/// Copies `frame` (at least its MAC addresses long if tagged) into
/// `space` (of its length plus the tag's), with `tag` put back after the
/// MAC addresses.
fn copy_with_tag(space: &mut [u8], frame: &[u8], tag: Option<sys::VlanTag>) {
    match tag {
        Some(tag) => {
            space[..MACS_LEN].copy_from_slice(&frame[..MACS_LEN]);
            space[MACS_LEN..MACS_LEN + TAG_LEN].copy_from_slice(&tag);
            space[MACS_LEN + TAG_LEN..].copy_from_slice(&frame[MACS_LEN..]);
        }
        None => space.copy_from_slice(frame),
    }
}

impl RxPort for AfPacketRx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, RECV_TIMEOUT)
    }

    fn recv_within(&mut self, buf: &mut PacketBuf, wait: Duration) -> Result<bool, PortError> {
        if self.lost {
            return self.wait_for_link();
        }
        match self.try_recv(buf) {
            Ok(true) => {
                self.next_link_check = None;
                return Ok(true);
            }
            Ok(false) => {}
            Err(e) => return self.on_error(e),
        }
        let revents = sys::poll_events(self.socket.as_fd(), wait).map_err(|e| self.io_error(e))?;
        if revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return self.link_trouble(revents);
        }
        if revents == 0 {
            return self.check_link_if_due();
        }
        self.try_recv(buf).or_else(|e| self.on_error(e))
    }

    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        if self.lost {
            return Ok(false);
        }
        self.try_recv(buf).or_else(|e| self.on_error(e))
    }

    fn steer_by_spi(&mut self, owners: &[(u32, u32)]) -> Result<(), PortError> {
        if self.steering != Some(Fanout::BySpi) {
            return Ok(());
        }
        let mut program = crate::steering::spi_program(owners);
        sys::set_fanout_program(self.socket.as_fd(), &mut program).map_err(|e| self.io_error(e))
    }

    fn steer_by_rules(&mut self, rules: &[SteerRule]) -> Result<(), PortError> {
        if self.steering != Some(Fanout::ByRules) {
            return Ok(());
        }
        let mut program = crate::steering::rules_program(rules);
        sys::set_fanout_program(self.socket.as_fd(), &mut program).map_err(|e| self.io_error(e))
    }

    fn take_kernel_drops(&mut self) -> Result<u64, PortError> {
        sys::take_packet_drops(self.socket.as_fd()).map_err(|e| self.io_error(e))
    }
}

impl TxPort for AfPacketTx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        Some(Box::new(self.clone()))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        if frame.len() <= STAGE_SLOT && self.mode != SendMode::PerFrame {
            if self.staged.count == sys::SEND_BATCH {
                self.staged.send_all(&self.socket);
            }
            self.staged.stage(frame);
            return Ok(());
        }
        // Too long to stage: after the frames staged before it.
        if self.staged.count > 0 {
            self.staged.send_all(&self.socket);
        }
        match sys::send(self.socket.as_fd(), frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(PortError::Io {
                port: self.name.clone(),
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {n} of {} bytes", frame.len()),
                ),
            }),
            Err(source) => Err(PortError::Io {
                port: self.name.clone(),
                source,
            }),
        }
    }

    fn flush(&mut self) -> u64 {
        if self.staged.count > 0 {
            self.staged.send_all(&self.socket);
        }
        std::mem::take(&mut self.staged.failed)
    }
}

/// Whether a socket error says the interface went down or away.
fn is_link_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETDOWN | libc::ENXIO | libc::ENODEV)
    )
}

#[cfg(test)]
mod tests {
    use super::SendMode;

    #[test]
    fn the_send_mode_is_batched_unless_the_variable_names_another() {
        assert_eq!(SendMode::parse(None).unwrap(), SendMode::Batch);
        assert_eq!(SendMode::parse(Some("batch")).unwrap(), SendMode::Batch);
        assert_eq!(
            SendMode::parse(Some("per-frame")).unwrap(),
            SendMode::PerFrame
        );
        assert_eq!(
            SendMode::parse(Some("batch-qdisc-bypass")).unwrap(),
            SendMode::BatchQdiscBypass
        );
        let err = SendMode::parse(Some("perframe")).unwrap_err();
        assert!(
            err.to_string().contains("BITSGW_AF_PACKET_SEND must be"),
            "{err}"
        );
    }
}
