//! `AF_PACKET` ports through pnet's datalink channel.
//!
//! pnet's Linux backend creates, binds and polls the socket, but it drops
//! the packet type of what it receives, so it can not tell frames this host
//! sent (`PACKET_OUTGOING`) from frames that arrived. We therefore create
//! the socket ourselves, set `PACKET_IGNORE_OUTGOING` on it, and hand it to
//! pnet through `Config::socket_fd`. We keep a duplicate of the descriptor
//! to read the socket's pending error, which pnet reports only as an
//! "unexpected poll event".

use std::io;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::time::Duration;

use bitsgw_wire::PacketBuf;
use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender};

use crate::{fill, sys, LinkType, Port, PortError, RxPort, TxPort, RECV_TIMEOUT};

/// How long a send may wait for room in the socket's send buffer.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// pnet's receive buffer: the largest frame an `AF_PACKET` socket can hand
/// us (GSO/GRO aggregates included), so nothing is cut silently; larger
/// than a [`PacketBuf`] can take, which [`PortError::FrameTooLarge`] then
/// reports.
const READ_BUFFER: usize = 65_536 + 64;

struct AfPacketRx {
    name: String,
    rx: Box<dyn DataLinkReceiver>,
    /// A duplicate of the socket's descriptor, to read `SO_ERROR`.
    fd: OwnedFd,
}

struct AfPacketTx {
    name: String,
    tx: Box<dyn DataLinkSender>,
}

impl core::fmt::Debug for AfPacketRx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AfPacketRx")
            .field("name", &self.name)
            .finish()
    }
}

impl core::fmt::Debug for AfPacketTx {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AfPacketTx")
            .field("name", &self.name)
            .finish()
    }
}

pub(crate) fn open(interface: &str) -> Result<Port, PortError> {
    let err = |source| PortError::Open {
        port: interface.to_owned(),
        source,
    };
    let socket = sys::packet_socket().map_err(err)?;
    let hardware = sys::hardware_type(socket.as_fd(), interface).map_err(err)?;
    if hardware != libc::ARPHRD_ETHER && hardware != libc::ARPHRD_LOOPBACK {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not an Ethernet interface (hardware type {hardware}); use a TUN port for raw IP"
            ),
        )));
    }
    let ni = pnet_datalink::interfaces()
        .into_iter()
        .find(|ni| ni.name == interface)
        .ok_or_else(|| err(io::Error::new(io::ErrorKind::NotFound, "no such interface")))?;
    sys::set_int_option(
        socket.as_fd(),
        libc::SOL_PACKET,
        sys::PACKET_IGNORE_OUTGOING,
        1,
    )
    .map_err(err)?;
    let errors = socket.try_clone().map_err(err)?;
    let config = pnet_datalink::Config {
        read_buffer_size: READ_BUFFER,
        read_timeout: Some(RECV_TIMEOUT),
        write_timeout: Some(SEND_TIMEOUT),
        promiscuous: true,
        // pnet takes ownership of the descriptor and closes it, also when
        // setting up the channel fails.
        socket_fd: Some(socket.into_raw_fd()),
        ..Default::default()
    };
    match pnet_datalink::channel(&ni, config) {
        Ok(Channel::Ethernet(tx, rx)) => Ok(Port {
            rx: Box::new(AfPacketRx {
                name: interface.to_owned(),
                rx,
                fd: errors,
            }),
            tx: Box::new(AfPacketTx {
                name: interface.to_owned(),
                tx,
            }),
        }),
        Ok(_) => Err(err(io::Error::other(
            "pnet returned a non-Ethernet channel",
        ))),
        Err(e) => Err(err(e)),
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
        buf.reset();
        match self.rx.next() {
            Ok(frame) => {
                fill(buf, &self.name, frame)?;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(false)
            }
            Err(e) => {
                // pnet reports POLLERR without the error itself; fetching it
                // also clears it, so the next call does not fail the same way.
                let source = match sys::take_socket_error(self.fd.as_fd()) {
                    Ok(Some(pending)) => pending,
                    _ => e,
                };
                Err(PortError::Io {
                    port: self.name.clone(),
                    source,
                })
            }
        }
    }
}

impl TxPort for AfPacketTx {
    fn name(&self) -> &str {
        &self.name
    }

    fn link_type(&self) -> LinkType {
        LinkType::Ethernet
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), PortError> {
        match self.tx.send_to(frame, None) {
            Some(Ok(())) => Ok(()),
            Some(Err(source)) => Err(PortError::Io {
                port: self.name.clone(),
                source,
            }),
            None => Err(PortError::Io {
                port: self.name.clone(),
                source: io::Error::other("pnet could not send the frame"),
            }),
        }
    }
}
