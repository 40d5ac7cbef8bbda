//! IKEv2 wire formats (RFC 7296 section 3): the fixed IKE header as a
//! smoltcp-style view, the generic payload chain, and a `Repr` for every
//! payload the exchanges use. Parsing never panics on any input; emitting
//! writes into a caller's buffer of at least `buffer_len()` octets.

mod header;
mod payload;
mod sa;
mod ts;

pub use header::{ExchangeType, Flags, Header, HeaderRepr, HEADER_LEN};
pub(crate) use payload::spi32;
pub use payload::{
    AuthPayload, DeletePayload, IdPayload, IdType, KePayload, NotifyPayload, NotifyType, Payload,
    PayloadIter, PayloadType, RawPayload, SkPayload, GENERIC_HEADER_LEN,
};
pub use sa::{Attribute, Proposal, ProtocolId, SaPayload, Transform, TransformType};
pub use ts::{TrafficSelector, TsType};

/// Why a message or payload could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer octets than the structure's fixed part or its length field.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field smaller than the structure's fixed part, or one that
    /// disagrees with its container.
    #[error("bad length in {0}")]
    BadLength(&'static str),
    /// A major version other than 2 (RFC 7296 3.1).
    #[error("IKE major version {0} is not 2")]
    BadMajorVersion(u8),
    /// A field has a value the RFC forbids.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// An unknown payload with the critical bit set (RFC 7296 2.5).
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    /// The output buffer is smaller than `buffer_len()`.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// A whole IKE message: the header and its (plaintext) payload chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; `next_payload` and `length` are set by [`Message::emit`].
    pub header: HeaderRepr,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a message: the header and every payload of the outer chain.
    /// An SK payload stays encrypted ([`Payload::Sk`]).
    pub fn parse(bytes: &[u8]) -> Result<Message, WireError> {
        let header = Header::new_checked(bytes)?;
        let repr = HeaderRepr::parse(&header)?;
        let body = &bytes[HEADER_LEN..repr.length as usize];
        let payloads = parse_chain(repr.next_payload, body)?;
        Ok(Message {
            header: repr,
            payloads,
        })
    }

    /// Octets [`Message::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + chain_len(&self.payloads)
    }

    /// Writes the message into `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = self.buffer_len();
        if buf.len() < len {
            return Err(WireError::BufferTooSmall);
        }
        let length = u32::try_from(len).map_err(|_| WireError::BadLength("message"))?;
        let mut header = self.header;
        header.next_payload = self
            .payloads
            .first()
            .map_or(PayloadType::NoNext, Payload::kind);
        header.length = length;
        header.emit(&mut Header::new_unchecked(&mut buf[..HEADER_LEN]));
        emit_chain(&self.payloads, &mut buf[HEADER_LEN..len])?;
        Ok(len)
    }

    /// The message as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut out)?;
        Ok(out)
    }
}

/// Parses a payload chain starting with type `first` that fills `body`
/// exactly. An SK payload ends the chain (RFC 7296 3.14: its Next Payload
/// names the first payload inside it).
pub fn parse_chain(first: PayloadType, body: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut out = Vec::new();
    for raw in PayloadIter::new(first, body) {
        out.push(Payload::parse(&raw?)?);
    }
    Ok(out)
}

/// Octets of a payload chain.
pub fn chain_len(payloads: &[Payload]) -> usize {
    payloads
        .iter()
        .map(|p| GENERIC_HEADER_LEN + p.body_len())
        .sum()
}

/// Writes a payload chain into `buf` (at least [`chain_len`] octets).
pub fn emit_chain(payloads: &[Payload], buf: &mut [u8]) -> Result<usize, WireError> {
    let total = chain_len(payloads);
    if buf.len() < total {
        return Err(WireError::BufferTooSmall);
    }
    let mut at = 0;
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            // The SK payload's Next Payload is its first inner payload.
            Payload::Sk(sk) => sk.first_inner,
            _ => payloads
                .get(i + 1)
                .map_or(PayloadType::NoNext, Payload::kind),
        };
        let len = GENERIC_HEADER_LEN + p.body_len();
        let len16 = u16::try_from(len).map_err(|_| WireError::BadLength("payload"))?;
        buf[at] = next.into();
        buf[at + 1] = 0;
        buf[at + 2..at + 4].copy_from_slice(&len16.to_be_bytes());
        p.emit_body(&mut buf[at + GENERIC_HEADER_LEN..at + len]);
        at += len;
    }
    Ok(at)
}
