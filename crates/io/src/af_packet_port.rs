//! `AF_PACKET` ports: one raw packet socket per interface, bound to every
//! protocol, promiscuous, without our own transmissions.
//!
//! Frames are received through a memory-mapped ring (`PACKET_MMAP`,
//! `TPACKET_V2`): while frames wait, taking one is a copy out of the ring
//! into the caller's [`PacketBuf`] and no system call; a `poll` only when
//! the ring is empty. That lets the receive thread gather a burst of
//! waiting frames into one batch ([`RxPort::recv_nowait`]) cheaply. A
//! frame longer than a ring slot (jumbo frames) is read from the socket in
//! full instead. Sending is one blocking `send` per frame.
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
use std::time::Duration;

use bitsgw_wire::buf::DEFAULT_HEADROOM;
use bitsgw_wire::PacketBuf;

use crate::sys::RingFrame;
use crate::{sys, LinkType, Port, PortError, RxPort, TxPort, RECV_TIMEOUT};

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

#[derive(Debug)]
struct AfPacketRx {
    name: String,
    socket: Arc<OwnedFd>,
    ring: sys::RxRing,
}

#[derive(Debug, Clone)]
struct AfPacketTx {
    name: String,
    socket: Arc<OwnedFd>,
}

pub(crate) fn open(interface: &str) -> Result<Port, PortError> {
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
    let ring = sys::RxRing::new(fd, RING_SLOT, RING_SLOTS).map_err(err)?;
    sys::bind_packet_socket(fd, ifindex).map_err(err)?;
    sys::add_promiscuous_membership(fd, ifindex).map_err(err)?;
    let socket = Arc::new(socket);
    Ok(Port {
        rx: Box::new(AfPacketRx {
            name: interface.to_owned(),
            socket: socket.clone(),
            ring,
        }),
        tx: Box::new(AfPacketTx {
            name: interface.to_owned(),
            socket,
        }),
    })
}

impl AfPacketRx {
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
        if self.try_recv(buf)? {
            return Ok(true);
        }
        let ready =
            sys::poll_readable(self.socket.as_fd(), RECV_TIMEOUT).map_err(|e| self.io_error(e))?;
        if !ready {
            return Ok(false);
        }
        self.try_recv(buf)
    }

    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.try_recv(buf)
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
}
