//! The IKE header (RFC 7296 3.1).

use super::{PayloadType, WireError};

/// Octets of the fixed IKE header.
pub const HEADER_LEN: usize = 28;

mod field {
    use core::ops::Range;
    pub const SPI_I: Range<usize> = 0..8;
    pub const SPI_R: Range<usize> = 8..16;
    pub const NEXT: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

/// Exchange types (RFC 7296 3.1); others round-trip as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExchangeType {
    /// IKE_SA_INIT (34).
    IkeSaInit,
    /// IKE_AUTH (35).
    IkeAuth,
    /// CREATE_CHILD_SA (36).
    CreateChildSa,
    /// INFORMATIONAL (37).
    Informational,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for ExchangeType {
    fn from(v: u8) -> Self {
        match v {
            34 => ExchangeType::IkeSaInit,
            35 => ExchangeType::IkeAuth,
            36 => ExchangeType::CreateChildSa,
            37 => ExchangeType::Informational,
            v => ExchangeType::Unknown(v),
        }
    }
}

impl From<ExchangeType> for u8 {
    fn from(v: ExchangeType) -> u8 {
        match v {
            ExchangeType::IkeSaInit => 34,
            ExchangeType::IkeAuth => 35,
            ExchangeType::CreateChildSa => 36,
            ExchangeType::Informational => 37,
            ExchangeType::Unknown(v) => v,
        }
    }
}

/// Header flags (RFC 7296 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set in messages sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// The sender could speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;

    /// Whether the sender is the IKE SA's original initiator.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }

    /// Whether the message is a response.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }

    /// Flags of a message sent by `initiator` that is a `response` or not.
    pub fn new(initiator: bool, response: bool) -> Flags {
        let mut f = 0;
        if initiator {
            f |= Self::INITIATOR;
        }
        if response {
            f |= Self::RESPONSE;
        }
        Flags(f)
    }
}

/// A view of an IKE header over a buffer.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// A view without any check; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// A view whose accessors cannot panic: the buffer holds the fixed
    /// header and the length the header claims.
    pub fn new_checked(buffer: T) -> Result<Header<T>, WireError> {
        let h = Header::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks the buffer against the fixed header and the Length field.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated("IKE header"));
        }
        let len = self.length() as usize;
        if len < HEADER_LEN {
            return Err(WireError::BadLength("IKE header"));
        }
        if len > b.len() {
            return Err(WireError::Truncated("IKE message"));
        }
        Ok(())
    }

    /// The initiator's SPI.
    pub fn spi_i(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::SPI_I])
    }

    /// The responder's SPI (zero in the first IKE_SA_INIT request).
    pub fn spi_r(&self) -> u64 {
        read_u64(&self.buffer.as_ref()[field::SPI_R])
    }

    /// The first payload's type.
    pub fn next_payload(&self) -> PayloadType {
        self.buffer.as_ref()[field::NEXT].into()
    }

    /// Major version (high nibble).
    pub fn major_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] >> 4
    }

    /// Minor version (low nibble).
    pub fn minor_version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION] & 0x0f
    }

    /// The exchange type.
    pub fn exchange(&self) -> ExchangeType {
        self.buffer.as_ref()[field::EXCHANGE].into()
    }

    /// The flags.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// The message ID.
    pub fn message_id(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::MESSAGE_ID])
    }

    /// The whole message's length.
    pub fn length(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::LENGTH])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    fn set(&mut self, at: core::ops::Range<usize>, v: &[u8]) {
        self.buffer.as_mut()[at].copy_from_slice(v);
    }

    /// Sets the initiator's SPI.
    pub fn set_spi_i(&mut self, v: u64) {
        self.set(field::SPI_I, &v.to_be_bytes());
    }

    /// Sets the responder's SPI.
    pub fn set_spi_r(&mut self, v: u64) {
        self.set(field::SPI_R, &v.to_be_bytes());
    }

    /// Sets the first payload's type.
    pub fn set_next_payload(&mut self, v: PayloadType) {
        self.buffer.as_mut()[field::NEXT] = v.into();
    }

    /// Sets the version octet.
    pub fn set_version(&mut self, major: u8, minor: u8) {
        self.buffer.as_mut()[field::VERSION] = (major << 4) | (minor & 0x0f);
    }

    /// Sets the exchange type.
    pub fn set_exchange(&mut self, v: ExchangeType) {
        self.buffer.as_mut()[field::EXCHANGE] = v.into();
    }

    /// Sets the flags.
    pub fn set_flags(&mut self, v: Flags) {
        self.buffer.as_mut()[field::FLAGS] = v.0;
    }

    /// Sets the message ID.
    pub fn set_message_id(&mut self, v: u32) {
        self.set(field::MESSAGE_ID, &v.to_be_bytes());
    }

    /// Sets the length.
    pub fn set_length(&mut self, v: u32) {
        self.set(field::LENGTH, &v.to_be_bytes());
    }
}

pub(crate) fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(crate) fn read_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(crate) fn read_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// The IKE header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    /// Initiator's SPI.
    pub spi_i: u64,
    /// Responder's SPI.
    pub spi_r: u64,
    /// The first payload's type.
    pub next_payload: PayloadType,
    /// Minor version (sent as 0).
    pub minor_version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags.
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
    /// The message's length.
    pub length: u32,
}

impl HeaderRepr {
    /// Reads a checked header; refuses a major version other than 2.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<HeaderRepr, WireError> {
        h.check_len()?;
        if h.major_version() != 2 {
            return Err(WireError::BadMajorVersion(h.major_version()));
        }
        Ok(HeaderRepr {
            spi_i: h.spi_i(),
            spi_r: h.spi_r(),
            next_payload: h.next_payload(),
            minor_version: h.minor_version(),
            exchange: h.exchange(),
            flags: h.flags(),
            message_id: h.message_id(),
            length: h.length(),
        })
    }

    /// Writes the header (major version 2).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut Header<T>) {
        h.set_spi_i(self.spi_i);
        h.set_spi_r(self.spi_r);
        h.set_next_payload(self.next_payload);
        h.set_version(2, self.minor_version);
        h.set_exchange(self.exchange);
        h.set_flags(self.flags);
        h.set_message_id(self.message_id);
        h.set_length(self.length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header of strongSwan's IKE_SA_INIT request in `wire::tests`
    /// (SPIr zero, Initiator flag, first payload SA), its Length set to 28
    /// so that it stands alone.
    const INIT_HEADER: [u8; 28] = [
        0x3f, 0x80, 0x44, 0xb3, 0xd0, 0x03, 0x2d, 0xa3, 0, 0, 0, 0, 0, 0, 0, 0, 0x21, 0x20, 0x22,
        0x08, 0, 0, 0, 0, 0, 0, 0, 0x1c,
    ];

    #[test]
    fn parses_and_emits_the_header() {
        let h = Header::new_checked(&INIT_HEADER[..]).unwrap();
        let r = HeaderRepr::parse(&h).unwrap();
        assert_eq!(r.spi_i, 0x3f80_44b3_d003_2da3);
        assert_eq!(r.spi_r, 0);
        assert_eq!(r.next_payload, PayloadType::Sa);
        assert_eq!(r.exchange, ExchangeType::IkeSaInit);
        assert!(r.flags.initiator() && !r.flags.response());
        assert_eq!(r.length, 28);
        let mut out = [0u8; 28];
        r.emit(&mut Header::new_unchecked(&mut out[..]));
        assert_eq!(out, INIT_HEADER);
    }

    #[test]
    fn refuses_short_and_inconsistent_headers() {
        assert_eq!(
            Header::new_checked(&INIT_HEADER[..27]).unwrap_err(),
            WireError::Truncated("IKE header")
        );
        let mut long = INIT_HEADER;
        long[27] = 0x1d;
        assert_eq!(
            Header::new_checked(&long[..]).unwrap_err(),
            WireError::Truncated("IKE message")
        );
        let mut short = INIT_HEADER;
        short[27] = 0x1b;
        assert_eq!(
            Header::new_checked(&short[..]).unwrap_err(),
            WireError::BadLength("IKE header")
        );
        let mut v1 = INIT_HEADER;
        v1[17] = 0x10;
        let h = Header::new_checked(&v1[..]).unwrap();
        assert_eq!(
            HeaderRepr::parse(&h).unwrap_err(),
            WireError::BadMajorVersion(1)
        );
    }
}
