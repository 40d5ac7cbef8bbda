//! TUN ports: raw IP packets to and from the kernel's stack.
//!
//! A TUN device may have several queues (`IFF_MULTI_QUEUE`, Linux 3.8),
//! each a file of its own: [`open_queues`] gives one port per queue, for
//! the pipeline's receive queues. The kernel picks the queue a packet from
//! the stack is read on (`tun_select_queue` in `drivers/net/tun.c`): the
//! queue that last wrote a packet of the same flow, else the flow hash
//! scaled to the number of queues, so one flow stays on one queue.
//!
//! Each packet is one `read(2)` and one `write(2)`: the kernel gives a
//! TUN file no batch a process can use. A write (or `writev`) is one
//! packet, whatever its iovecs (`tun_chr_write_iter` passes the whole
//! iterator to `tun_get_user`, which builds one skb of it); the batched
//! path, `tun_sendmsg` with `TUN_MSG_PTR` control messages carrying many
//! XDP buffers, is reached only through `tun_get_socket`, from inside the
//! kernel (vhost-net), as a TUN file is not a socket; `IFF_NAPI` queues
//! each written packet for the stack's NAPI poll, batching the stack's
//! work but not the writes (and is meant for testing the receive path);
//! `IFF_VNET_HDR` with offloads (`TUNSETOFFLOAD`) lets one write carry a
//! GSO packet that the kernel cuts into segments of one flow, which only
//! a writer that merges a flow's packets itself could use.
//!
//! The files are non-blocking: a receive reads first and polls only when
//! nothing waits, so a busy queue costs one system call per packet. A
//! write does not wait for room either way (the kernel gives a TUN file's
//! socket an unlimited send buffer, `sk_sndbuf = INT_MAX` in
//! `tun_chr_open`); one the kernel refuses is a counted send failure.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use bitsgw_wire::buf::DEFAULT_HEADROOM;
use bitsgw_wire::PacketBuf;

use crate::{sys, LinkType, Port, PortError, RxPort, TxPort, RECV_TIMEOUT};

const CLONE_DEVICE: &str = "/dev/net/tun";

#[derive(Debug)]
struct TunRx {
    name: String,
    file: Arc<File>,
}

#[derive(Debug, Clone)]
struct TunTx {
    name: String,
    file: Arc<File>,
}

pub(crate) fn open(name: &str) -> Result<Port, PortError> {
    let (file, actual) = attach(name, 0)?;
    Ok(port(file, actual))
}

/// `queues` queues of one multi-queue TUN device (`IFF_MULTI_QUEUE`), one
/// port each; what the stack routes into the device is spread over them
/// by the kernel, and a packet written to any of them enters the stack.
pub(crate) fn open_queues(name: &str, queues: usize) -> Result<Vec<Port>, PortError> {
    if queues == 0 || queues > MAX_QUEUES {
        return Err(PortError::Open {
            port: name.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a TUN device has 1 to {MAX_QUEUES} queues, not {queues}"),
            ),
        });
    }
    let (first, actual) = attach(name, libc::IFF_MULTI_QUEUE)?;
    let mut ports = Vec::with_capacity(queues);
    ports.push(port(first, actual.clone()));
    for _ in 1..queues {
        // By the name the kernel gave the device, should `name` hold a
        // `%d`.
        let (file, _) = attach(&actual, libc::IFF_MULTI_QUEUE)?;
        ports.push(port(file, actual.clone()));
    }
    Ok(ports)
}

/// The most queues a TUN device has (`MAX_TAP_QUEUES` in
/// `drivers/net/tun.c`).
const MAX_QUEUES: usize = 256;

/// A file of `/dev/net/tun` attached to the device `name` (created if
/// missing) with `IFF_TUN | IFF_NO_PI | extra_flags`, and the device's
/// name as the kernel gave it.
fn attach(name: &str, extra_flags: libc::c_int) -> Result<(File, String), PortError> {
    let err = |source| PortError::Open {
        port: name.to_owned(),
        source,
    };
    let mut req = sys::ifreq(name).map_err(err)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(CLONE_DEVICE)
        .map_err(|e| err(io::Error::new(e.kind(), format!("{CLONE_DEVICE}: {e}"))))?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | extra_flags) as libc::c_short;
    // SAFETY: TUNSETIFF reads the name and flags from, and writes the final
    // name into, the `ifreq` we pass: live, of the size the kernel expects,
    // with a NUL-terminated name (`sys::ifreq` checked its length).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // The kernel may have expanded a `%d` in the name.
    let actual: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((file, String::from_utf8_lossy(&actual).into_owned()))
}

/// The two halves of a port on one TUN file.
fn port(file: File, name: String) -> Port {
    let file = Arc::new(file);
    Port {
        rx: Box::new(TunRx {
            name: name.clone(),
            file: file.clone(),
        }),
        tx: Box::new(TunTx { name, file }),
    }
}

impl TunRx {
    /// One waiting packet into `buf`, if there is one, without blocking
    /// (the file is non-blocking).
    fn try_recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let io_err = |source| PortError::Io {
            port: self.name.clone(),
            source,
        };
        let room = buf.capacity().saturating_sub(DEFAULT_HEADROOM);
        let space = buf
            .reset_to_len(room)
            .map_err(|_| io_err(io::Error::other("packet buffer has no room")))?;
        match (&*self.file).read(space) {
            // A read that fills the buffer may have been cut short.
            Ok(n) if n >= room => {
                buf.reset();
                Err(PortError::FrameTooLarge {
                    port: self.name.clone(),
                    len: n,
                    capacity: room,
                })
            }
            Ok(n) => {
                buf.truncate(n);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                buf.reset();
                Ok(false)
            }
            // The device was deleted under us (`ip link del`): the file
            // is detached from it and says so on every read.
            Err(e) if e.raw_os_error() == Some(libc::EBADFD) => {
                buf.reset();
                Err(PortError::LinkLost {
                    port: self.name.clone(),
                })
            }
            Err(e) => {
                buf.reset();
                Err(io_err(e))
            }
        }
    }
}

impl RxPort for TunRx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::RawIp
    }

    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.recv_within(buf, RECV_TIMEOUT)
    }

    /// A read, and only when nothing waits a `poll` and a second read: a
    /// busy queue costs one system call per packet.
    fn recv_within(&mut self, buf: &mut PacketBuf, wait: Duration) -> Result<bool, PortError> {
        if self.try_recv(buf)? {
            return Ok(true);
        }
        let readable =
            sys::poll_readable(self.file.as_fd(), wait).map_err(|source| PortError::Io {
                port: self.name.clone(),
                source,
            })?;
        if !readable {
            return Ok(false);
        }
        self.try_recv(buf)
    }

    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        self.try_recv(buf)
    }
}

impl TxPort for TunTx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::RawIp
    }

    fn try_clone(&self) -> Option<Box<dyn TxPort>> {
        Some(Box::new(self.clone()))
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        match (&*self.file).write(frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(PortError::Io {
                port: self.name.clone(),
                source: io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote {n} of {} bytes", frame.len()),
                ),
            }),
            Err(source) => Err(PortError::Io {
                port: self.name.clone(),
                source,
            }),
        }
    }
}
