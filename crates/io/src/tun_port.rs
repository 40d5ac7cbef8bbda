//! TUN ports: raw IP packets to and from the kernel's stack.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

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
    let err = |source| PortError::Open {
        port: name.to_owned(),
        source,
    };
    let mut req = sys::ifreq(name).map_err(err)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(CLONE_DEVICE)
        .map_err(|e| err(io::Error::new(e.kind(), format!("{CLONE_DEVICE}: {e}"))))?;
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
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
    let actual = String::from_utf8_lossy(&actual).into_owned();
    let file = Arc::new(file);
    Ok(Port {
        rx: Box::new(TunRx {
            name: actual.clone(),
            file: file.clone(),
        }),
        tx: Box::new(TunTx { name: actual, file }),
    })
}

impl RxPort for TunRx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::RawIp
    }

    fn recv(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        buf.reset();
        let io_err = |source| PortError::Io {
            port: self.name.clone(),
            source,
        };
        if !sys::poll_readable(self.file.as_fd(), RECV_TIMEOUT).map_err(io_err)? {
            return Ok(false);
        }
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
