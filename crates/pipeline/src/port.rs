//! What the pipeline needs of a port; `bitsgw-io` implements it for
//! AF_PACKET, TUN and in-memory ports.

use bitsgw_wire::ether::LinkType;
use bitsgw_wire::PacketBuf;

/// A port failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// It could not be opened.
    #[error("port {port}: can not open: {source}")]
    Open {
        /// The port.
        port: String,
        /// Why.
        source: std::io::Error,
    },
    /// Receiving or sending failed.
    #[error("port {port}: {source}")]
    Io {
        /// The port.
        port: String,
        /// Why.
        source: std::io::Error,
    },
    /// The port was closed (an in-memory port's handle said so).
    #[error("port {port}: closed")]
    Closed {
        /// The port.
        port: String,
    },
    /// A capture file is not what it should be.
    #[error("capture {file}: {problem}")]
    BadCapture {
        /// The file.
        file: String,
        /// What is wrong.
        problem: String,
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
    /// Receives one frame if one is waiting, without blocking; lets the
    /// receive thread gather a burst into one batch. Ports that can not
    /// tell answer `Ok(false)`, and frames then travel one at a time.
    fn recv_nowait(&mut self, buf: &mut PacketBuf) -> Result<bool, PortError> {
        let _ = buf;
        Ok(false)
    }
}

/// Sending half of a port.
pub trait TxPort: Send {
    /// The port's name.
    fn name(&self) -> &str;
    /// What its frames start with.
    fn link_type(&self) -> LinkType;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> Result<(), PortError>;
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
