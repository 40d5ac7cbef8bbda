//! The Mobility Header of Mobile IPv6 (RFC 6275 6.1), its messages, and the
//! mobility options of RFC 6275 6.2 and of Dual-Stack Mobile IPv6
//! (RFC 5555 3.1, 3.2).
//!
//! [`MhPacket`] is a checked view over the header; [`MhRepr::parse`] reads
//! the message and validates the options area; [`emit_mh`] writes a message
//! with its options at the alignment each one asks for. Nothing here panics
//! on short or malformed input.

use crate::checksum;
use crate::proto;

mod message;
mod option;

pub use message::{BindingAck, BindingUpdate, Message};
use option::parse_option;
pub use option::{MhOption, MhOptionIter};

/// Length of the fixed part of the Mobility Header: Payload Proto, Header
/// Len, MH Type, Reserved, Checksum (RFC 6275 6.1.1).
pub const MH_FIXED_LEN: usize = 6;
/// Longest Mobility Header the 8-bit Header Len field can describe.
pub const MH_MAX_LEN: usize = 256 * 8;

/// MH Type values (RFC 6275 6.1.2 - 6.1.9).
pub mod mh_type {
    /// Binding Refresh Request (6.1.2).
    pub const BRR: u8 = 0;
    /// Home Test Init (6.1.3).
    pub const HOTI: u8 = 1;
    /// Care-of Test Init (6.1.4).
    pub const COTI: u8 = 2;
    /// Home Test (6.1.5).
    pub const HOT: u8 = 3;
    /// Care-of Test (6.1.6).
    pub const COT: u8 = 4;
    /// Binding Update (6.1.7).
    pub const BU: u8 = 5;
    /// Binding Acknowledgement (6.1.8).
    pub const BA: u8 = 6;
    /// Binding Error (6.1.9).
    pub const BE: u8 = 7;
}

/// Binding Acknowledgement status values (RFC 6275 6.1.8).
pub mod ba_status {
    /// Binding Update accepted.
    pub const ACCEPTED: u8 = 0;
    /// Accepted but prefix discovery necessary.
    pub const ACCEPTED_PREFIX_DISCOVERY: u8 = 1;
    /// Reason unspecified.
    pub const UNSPECIFIED: u8 = 128;
    /// Administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 129;
    /// Insufficient resources.
    pub const INSUFFICIENT_RESOURCES: u8 = 130;
    /// Home registration not supported.
    pub const HOME_REGISTRATION_NOT_SUPPORTED: u8 = 131;
    /// Not home subnet.
    pub const NOT_HOME_SUBNET: u8 = 132;
    /// Not home agent for this mobile node.
    pub const NOT_HOME_AGENT: u8 = 133;
    /// Duplicate Address Detection failed.
    pub const DAD_FAILED: u8 = 134;
    /// Sequence number out of window.
    pub const SEQ_OUT_OF_WINDOW: u8 = 135;
    /// Expired home nonce index.
    pub const EXPIRED_HOME_NONCE_INDEX: u8 = 136;
    /// Expired care-of nonce index.
    pub const EXPIRED_CARE_OF_NONCE_INDEX: u8 = 137;
    /// Expired nonces.
    pub const EXPIRED_NONCES: u8 = 138;
    /// Registration type change disallowed.
    pub const REGISTRATION_TYPE_CHANGE_DISALLOWED: u8 = 139;
    /// Invalid Care-of Address (RFC 6275 6.1.8). The home agent answers
    /// it to a Binding Update that came over IPv4 without the IPv4
    /// Care-of Address option (RFC 5555 4.1, 4.3.1).
    pub const INVALID_CARE_OF_ADDRESS: u8 = 174;
}

/// Binding Error status values (RFC 6275 6.1.9).
pub mod be_status {
    /// Unknown binding for Home Address destination option.
    pub const UNKNOWN_HAO_BINDING: u8 = 1;
    /// Unrecognized MH Type value.
    pub const UNKNOWN_MH_TYPE: u8 = 2;
}

/// Status values of the IPv4 Address Acknowledgement option
/// (RFC 5555 3.2.1).
pub mod ipv4_ack_status {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// Failure, reason unspecified.
    pub const FAILURE_UNSPECIFIED: u8 = 128;
    /// Administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 129;
    /// Incorrect IPv4 home address.
    pub const INCORRECT_IPV4_HOA: u8 = 130;
    /// Invalid IPv4 address.
    pub const INVALID_IPV4_ADDRESS: u8 = 131;
    /// Dynamic IPv4 home address assignment not available.
    pub const DYNAMIC_IPV4_HOA_NOT_AVAILABLE: u8 = 132;
    /// Prefix allocation unauthorized.
    pub const PREFIX_ALLOCATION_UNAUTHORIZED: u8 = 133;
}

/// Bits of the 16-bit flags-and-reserved word of a Binding Update
/// (RFC 6275 6.1.7 and the IANA "Binding Update Flags" registry). Only A,
/// H, L and K are fields of [`BindingUpdate`]; the others are read and set
/// with [`MhPacket::bu_flags`] and [`MhPacket::set_bu_flags`].
pub mod bu_flags {
    /// Acknowledge (RFC 6275 6.1.7).
    pub const A: u16 = 0x8000;
    /// Home Registration (RFC 6275 6.1.7).
    pub const H: u16 = 0x4000;
    /// Link-Local Address Compatibility (RFC 6275 6.1.7).
    pub const L: u16 = 0x2000;
    /// Key Management Mobility Capability (RFC 6275 6.1.7).
    pub const K: u16 = 0x1000;
    /// MAP Registration (RFC 5380).
    pub const M: u16 = 0x0800;
    /// Mobile Router (RFC 3963).
    pub const R: u16 = 0x0400;
    /// Proxy Registration (RFC 5213).
    pub const P: u16 = 0x0200;
    /// Force UDP encapsulation (RFC 5555 3.3 / 4.1).
    pub const F: u16 = 0x0100;
    /// TLV-header format (RFC 5845).
    pub const T: u16 = 0x0080;
}

/// Bits of the flags byte of a Binding Acknowledgement (RFC 6275 6.1.8 and
/// the IANA "Binding Acknowledgment Flags" registry).
pub mod ba_flags {
    /// Key Management Mobility Capability (RFC 6275 6.1.8).
    pub const K: u8 = 0x80;
    /// Mobile Router (RFC 3963).
    pub const R: u8 = 0x40;
    /// Proxy Registration (RFC 5213).
    pub const P: u8 = 0x20;
    /// TLV-header format (RFC 5845).
    pub const T: u8 = 0x10;
}

/// Mobility option types (RFC 6275 6.2, RFC 5555 3.1, 3.2).
pub mod opt_type {
    /// Pad1 (6.2.2).
    pub const PAD1: u8 = 0;
    /// PadN (6.2.3).
    pub const PADN: u8 = 1;
    /// Binding Refresh Advice (6.2.4).
    pub const BINDING_REFRESH_ADVICE: u8 = 2;
    /// Alternate Care-of Address (6.2.5).
    pub const ALTERNATE_COA: u8 = 3;
    /// Nonce Indices (6.2.6).
    pub const NONCE_INDICES: u8 = 4;
    /// Binding Authorization Data (6.2.7).
    pub const BINDING_AUTH_DATA: u8 = 5;
    /// IPv4 Home Address (RFC 5555 3.1.1).
    pub const IPV4_HOME_ADDRESS: u8 = 29;
    /// IPv4 Address Acknowledgement (RFC 5555 3.2.1).
    pub const IPV4_ADDRESS_ACK: u8 = 30;
    /// NAT Detection (RFC 5555 3.2.2).
    pub const NAT_DETECTION: u8 = 31;
    /// IPv4 Care-of Address (RFC 5555 3.1.2).
    pub const IPV4_COA: u8 = 32;
}

/// Why a Mobility Header could not be parsed or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MhError {
    /// Shorter than the 8 bytes every Mobility Header has.
    #[error("mobility header shorter than 8 bytes")]
    Truncated,
    /// Payload Proto is not 59 (RFC 6275 6.1.1).
    #[error("mobility header payload proto is not 59")]
    BadPayloadProto,
    /// The Header Len field claims more bytes than the packet holds, or a
    /// message to emit would be longer than the field can say.
    #[error("mobility header length field inconsistent with the packet")]
    BadLength,
    /// The checksum does not verify.
    #[error("mobility header checksum does not verify")]
    BadChecksum,
    /// The message data is too short for the MH Type (RFC 6275 9.2), or
    /// the message can not be emitted.
    #[error("mobility message too short for its type")]
    BadMessageLength,
    /// A mobility option is malformed or runs past the options area;
    /// `offset` is its position from the start of the Mobility Header.
    #[error("malformed mobility option at offset {offset}")]
    BadOption {
        /// Offset of the option from the start of the Mobility Header.
        offset: usize,
    },
    /// The output buffer is too short.
    #[error("no space in the output buffer for the mobility header")]
    NoSpace,
}

/// Byte positions of the Mobility Header's fixed part (RFC 6275 6.1.1).
mod field {
    use core::ops::Range;
    pub const PAYLOAD_PROTO: usize = 0;
    pub const HEADER_LEN: usize = 1;
    pub const MH_TYPE: usize = 2;
    pub const CHECKSUM: Range<usize> = 4..6;
}

/// A view over a Mobility Header (RFC 6275 6.1.1), in smoltcp's style:
/// after [`MhPacket::new_checked`] no accessor can panic.
#[derive(Debug, Clone)]
pub struct MhPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MhPacket<T> {
    /// The view, unchecked: accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        MhPacket { buffer }
    }

    /// The view, after [`MhPacket::check_len`] and a check that Payload
    /// Proto is 59 (RFC 6275 6.1.1, 9.2).
    pub fn new_checked(buffer: T) -> Result<Self, MhError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        if p.payload_proto() != proto::NO_NEXT_HEADER {
            return Err(MhError::BadPayloadProto);
        }
        Ok(p)
    }

    /// Checks that the buffer holds the 8-byte minimum and the whole header
    /// its Header Len field describes.
    pub fn check_len(&self) -> Result<(), MhError> {
        let b = self.buffer.as_ref();
        if b.len() < 8 {
            return Err(MhError::Truncated);
        }
        if self.header_len() > b.len() {
            return Err(MhError::BadLength);
        }
        Ok(())
    }

    /// Payload Proto.
    pub fn payload_proto(&self) -> u8 {
        self.buffer.as_ref()[field::PAYLOAD_PROTO]
    }

    /// Length of the Mobility Header in bytes: (Header Len + 1) * 8.
    pub fn header_len(&self) -> usize {
        (usize::from(self.buffer.as_ref()[field::HEADER_LEN]) + 1) * 8
    }

    /// MH Type.
    pub fn mh_type(&self) -> u8 {
        self.buffer.as_ref()[field::MH_TYPE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::CHECKSUM.start], b[field::CHECKSUM.start + 1]])
    }

    /// The message data: the bytes after the fixed part, up to
    /// [`MhPacket::header_len`] (message fields, then mobility options).
    pub fn message_data(&self) -> &[u8] {
        &self.buffer.as_ref()[MH_FIXED_LEN..self.header_len()]
    }

    /// The whole Mobility Header, [`MhPacket::header_len`] bytes.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the checksum verifies with the pseudo-header of RFC 6275
    /// 6.1.1 (`src`, `dst`, upper-layer length, next header 135). With a
    /// Home Address option `src` is the home address; with a type 2 routing
    /// header `dst` is the final destination (RFC 8200 8.1).
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let mh = self.header();
        let len = u32::try_from(mh.len()).unwrap_or(u32::MAX);
        let acc = checksum::pseudo_header(src, dst, proto::MH, len);
        checksum::finish(checksum::sum(acc, mh)) == 0
    }

    /// For a Binding Update, its 16-bit flags-and-reserved word (see
    /// [`bu_flags`]); `None` for other types or a short message.
    pub fn bu_flags(&self) -> Option<u16> {
        let d = self.message_data();
        (self.mh_type() == mh_type::BU && d.len() >= 4).then(|| u16::from_be_bytes([d[2], d[3]]))
    }

    /// For a Binding Acknowledgement, its flags byte (see [`ba_flags`]).
    pub fn ba_flags(&self) -> Option<u8> {
        let d = self.message_data();
        (self.mh_type() == mh_type::BA && d.len() >= 2).then(|| d[1])
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> MhPacket<T> {
    /// Computes and writes the checksum (RFC 6275 6.1.1).
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let len = self.header_len();
        let b = self.buffer.as_mut();
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = mh_checksum(src, dst, &b[..len]);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// For a Binding Update, replaces its flags-and-reserved word (see
    /// [`bu_flags`]), e.g. to set F (RFC 5555). Returns false (and changes
    /// nothing) for other messages. The checksum must be filled afterwards.
    pub fn set_bu_flags(&mut self, flags: u16) -> bool {
        if self.mh_type() != mh_type::BU || self.header_len() < MH_FIXED_LEN + 4 {
            return false;
        }
        self.buffer.as_mut()[MH_FIXED_LEN + 2..MH_FIXED_LEN + 4]
            .copy_from_slice(&flags.to_be_bytes());
        true
    }

    /// For a Binding Acknowledgement, replaces its flags byte (see
    /// [`ba_flags`]). Returns false for other messages. The checksum must
    /// be filled afterwards.
    pub fn set_ba_flags(&mut self, flags: u8) -> bool {
        if self.mh_type() != mh_type::BA {
            return false;
        }
        self.buffer.as_mut()[MH_FIXED_LEN + 1] = flags;
        true
    }
}

/// The Mobility Header checksum of `mh` between `src` and `dst`
/// (RFC 6275 6.1.1). The checksum field of `mh` is counted as zero, so the
/// result can be written into it directly.
pub fn mh_checksum(src: &[u8; 16], dst: &[u8; 16], mh: &[u8]) -> u16 {
    let len = u32::try_from(mh.len()).unwrap_or(u32::MAX);
    let mut acc = checksum::pseudo_header(src, dst, proto::MH, len);
    acc = checksum::sum(acc, mh.get(..field::CHECKSUM.start).unwrap_or(mh));
    acc = checksum::sum(acc, mh.get(field::CHECKSUM.end..).unwrap_or(&[]));
    checksum::finish(acc)
}

/// A parsed Mobility Header: the message and its (already validated)
/// options area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MhRepr<'a> {
    /// The message.
    pub message: Message,
    /// The mobility options area (empty for an unknown MH Type, whose
    /// message data stays opaque).
    pub options: &'a [u8],
}

impl<'a> MhRepr<'a> {
    /// Parses the message and validates it (RFC 6275 9.2): the message data
    /// is long enough for the MH Type, and every option is well formed and
    /// inside the options area. Does not check the checksum: the caller
    /// uses [`MhPacket::verify_checksum`], whose pseudo-header needs the
    /// addresses. Option alignment is not enforced on receipt.
    pub fn parse(packet: &MhPacket<&'a [u8]>) -> Result<MhRepr<'a>, MhError> {
        packet.check_len()?;
        let buf: &'a [u8] = packet.buffer;
        let data = &buf[MH_FIXED_LEN..packet.header_len()];
        let t = packet.mh_type();
        let Some(fixed) = Message::fields_len_of(t) else {
            return Ok(MhRepr {
                message: Message::Unknown { mh_type: t },
                options: &[],
            });
        };
        if data.len() < fixed {
            return Err(MhError::BadMessageLength);
        }
        let message = Message::parse_fields(t, data);
        let options = &data[fixed..];
        let mut at = 0;
        while at < options.len() {
            match parse_option(&options[at..]) {
                Some((_, len)) => at += len,
                None => {
                    return Err(MhError::BadOption {
                        offset: MH_FIXED_LEN + fixed + at,
                    })
                }
            }
        }
        Ok(MhRepr { message, options })
    }

    /// The options, in order, padding included.
    pub fn options(&self) -> MhOptionIter<'a> {
        MhOptionIter::new(self.options)
    }
}

/// Writes into an optional buffer, or only counts (for the length).
struct Writer<'b> {
    out: Option<&'b mut [u8]>,
    pos: usize,
}

impl Writer<'_> {
    /// Reserves the next `n` bytes and lets `f` write them.
    fn put(
        &mut self,
        n: usize,
        f: impl FnOnce(&mut [u8]) -> Result<(), MhError>,
    ) -> Result<(), MhError> {
        let end = self.pos + n;
        if let Some(out) = self.out.as_deref_mut() {
            let dst = out.get_mut(self.pos..end).ok_or(MhError::NoSpace)?;
            f(dst)?;
        }
        self.pos = end;
        Ok(())
    }

    /// Pad1 or PadN of `n` bytes.
    fn pad(&mut self, n: usize) -> Result<(), MhError> {
        if n == 0 {
            return Ok(());
        }
        let at = self.pos;
        self.put(n, |d| {
            MhOption::PadN(n)
                .emit(d)
                .map_err(|()| MhError::BadOption { offset: at })
        })
    }
}

/// Lays out the MH; writes it when `w.out` is set. Returns its length.
fn layout(
    w: &mut Writer<'_>,
    message: &Message,
    options: &[MhOption<'_>],
) -> Result<usize, MhError> {
    let fixed = message.fields_len();
    w.put(MH_FIXED_LEN + fixed, |d| {
        d[field::PAYLOAD_PROTO] = proto::NO_NEXT_HEADER;
        d[field::HEADER_LEN] = 0;
        d[field::MH_TYPE] = message.mh_type();
        d[3] = 0;
        d[field::CHECKSUM].fill(0);
        message.emit_fields(&mut d[MH_FIXED_LEN..]);
        Ok(())
    })?;
    for opt in options {
        let (n, k) = opt.alignment();
        let pad = (k + n - w.pos % n) % n;
        w.pad(pad)?;
        let at = w.pos;
        w.put(opt.wire_len(), |d| {
            opt.emit(d).map_err(|()| MhError::BadOption { offset: at })
        })?;
    }
    w.pad((8 - w.pos % 8) % 8)?;
    let total = w.pos;
    if total > MH_MAX_LEN {
        return Err(MhError::BadLength);
    }
    if let Some(out) = w.out.as_deref_mut() {
        out[field::HEADER_LEN] = u8::try_from(total / 8 - 1).map_err(|_| MhError::BadLength)?;
    }
    Ok(total)
}

/// Bytes the MH with these options takes, with the padding the options'
/// alignment and the 8-octet length rule need (RFC 6275 6.1.1, 6.2).
pub fn mh_buffer_len(message: &Message, options: &[MhOption<'_>]) -> usize {
    let mut w = Writer { out: None, pos: 0 };
    // Counting can only fail on the length limit; report the length anyway.
    layout(&mut w, message, options).unwrap_or(w.pos)
}

/// Writes the MH (Payload Proto 59, Header Len, MH Type, checksum zero)
/// with each option at its alignment and Pad1/PadN inserted where needed,
/// the total padded to a multiple of 8 (RFC 6275 6.1.1, 6.2). Callers pass
/// only non-padding options (a Pad1/PadN passed in is written as given).
/// Returns the bytes written. The checksum is left zero: fill it with
/// [`MhPacket::fill_checksum`] once the addresses are known.
///
/// Errors: [`MhError::NoSpace`] if `out` is too short,
/// [`MhError::BadMessageLength`] for [`Message::Unknown`],
/// [`MhError::BadOption`] for an option whose field does not fit (data over
/// 255 bytes, a prefix length over 63), [`MhError::BadLength`] if the
/// whole would exceed 2048 bytes.
pub fn emit_mh(
    out: &mut [u8],
    message: &Message,
    options: &[MhOption<'_>],
) -> Result<usize, MhError> {
    if let Message::Unknown { .. } = message {
        return Err(MhError::BadMessageLength);
    }
    let need = layout(&mut Writer { out: None, pos: 0 }, message, options)?;
    if out.len() < need {
        return Err(MhError::NoSpace);
    }
    let mut w = Writer {
        out: Some(out),
        pos: 0,
    };
    layout(&mut w, message, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const ALT_COA: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    /// A Binding Update 2001:db8::1 -> 2001:db8::2 built by scapy 2.8:
    /// seq 7, flags A H K F, lifetime 16, Alternate Care-of Address
    /// 2001:db8:9::1 (after a 2-byte PadN, at 14 = 8n+6), IPv4 Care-of
    /// Address 192.0.2.9, IPv4 Home Address 10.0.0.1/24 with P.
    const SCAPY_BU: [u8; 48] = [
        0x3b, 0x05, 0x05, 0x00, 0xf5, 0xcb, 0x00, 0x07, 0xd1, 0x00, 0x00, 0x10, 0x01, 0x00, 0x03,
        0x10, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x20, 0x06, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x09, 0x1d, 0x06, 0x62, 0x00, 0x0a,
        0x00, 0x00, 0x01,
    ];

    /// A Binding Acknowledgement built by scapy 2.8: accepted, K, seq 7,
    /// lifetime 16, NAT Detection (F, refresh 110 s), IPv4 Address
    /// Acknowledgement (success, /24, 10.0.0.1), PadN to 32 bytes.
    const SCAPY_BA: [u8; 32] = [
        0x3b, 0x03, 0x06, 0x00, 0x99, 0x6b, 0x00, 0x80, 0x00, 0x07, 0x00, 0x10, 0x1f, 0x06, 0x80,
        0x00, 0x00, 0x00, 0x00, 0x6e, 0x1e, 0x06, 0x00, 0x60, 0x0a, 0x00, 0x00, 0x01, 0x01, 0x02,
        0x00, 0x00,
    ];

    fn bu() -> BindingUpdate {
        BindingUpdate {
            seq: 7,
            ack: true,
            home_registration: true,
            link_local_compat: false,
            key_mgmt_compat: true,
            lifetime_units: 16,
        }
    }

    fn bu_options() -> [MhOption<'static>; 3] {
        [
            MhOption::AlternateCareOf(ALT_COA),
            MhOption::Ipv4CareOf([192, 0, 2, 9]),
            MhOption::Ipv4HomeAddress {
                prefix_len: 24,
                request_prefix: true,
                addr: [10, 0, 0, 1],
            },
        ]
    }

    #[test]
    fn parses_scapy_binding_update() {
        let p = MhPacket::new_checked(&SCAPY_BU[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        assert!(!p.verify_checksum(&DST, &DST));
        assert_eq!(p.checksum(), 0xf5cb);
        assert_eq!(p.bu_flags(), Some(0xd100));
        let r = MhRepr::parse(&p).unwrap();
        assert_eq!(r.message, Message::BindingUpdate(bu()));
        let opts: Vec<_> = r
            .options()
            .filter(|o| !matches!(o, MhOption::PadN(_) | MhOption::Pad1))
            .collect();
        assert_eq!(opts, bu_options());
        assert_eq!(r.options().next(), Some(MhOption::PadN(2)));
    }

    #[test]
    fn emits_scapy_binding_update_byte_for_byte() {
        let mut out = [0u8; 64];
        let n = emit_mh(&mut out, &Message::BindingUpdate(bu()), &bu_options()).unwrap();
        assert_eq!(n, 48);
        assert_eq!(
            mh_buffer_len(&Message::BindingUpdate(bu()), &bu_options()),
            48
        );
        let mut p = MhPacket::new_checked(&mut out[..n]).unwrap();
        assert!(p.set_bu_flags(p.bu_flags().unwrap() | bu_flags::F));
        p.fill_checksum(&SRC, &DST);
        assert_eq!(&out[..n], &SCAPY_BU[..]);
        assert_eq!(mh_checksum(&SRC, &DST, &SCAPY_BU), 0xf5cb);
    }

    #[test]
    fn binding_ack_matches_scapy() {
        let ba = BindingAck {
            status: ba_status::ACCEPTED,
            key_mgmt_compat: true,
            seq: 7,
            lifetime_units: 16,
        };
        let opts = [
            MhOption::NatDetection {
                udp_forced: true,
                refresh_time: 110,
            },
            MhOption::Ipv4AddressAck {
                status: ipv4_ack_status::SUCCESS,
                prefix_len: 24,
                addr: [10, 0, 0, 1],
            },
        ];
        let mut out = [0u8; 32];
        let n = emit_mh(&mut out, &Message::BindingAck(ba), &opts).unwrap();
        let mut p = MhPacket::new_checked(&mut out[..n]).unwrap();
        p.fill_checksum(&SRC, &DST);
        assert_eq!(out, SCAPY_BA);
        let p = MhPacket::new_checked(&SCAPY_BA[..]).unwrap();
        assert_eq!(p.ba_flags(), Some(ba_flags::K));
        let r = MhRepr::parse(&p).unwrap();
        assert_eq!(r.message, Message::BindingAck(ba));
        let got: Vec<_> = r.options().collect();
        assert_eq!(got, [opts[0], opts[1], MhOption::PadN(4)]);
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::BindingRefreshRequest,
            Message::HomeTestInit { cookie: [1; 8] },
            Message::CareOfTestInit { cookie: [2; 8] },
            Message::HomeTest {
                nonce_index: 0x1234,
                cookie: [3; 8],
                keygen_token: [4; 8],
            },
            Message::CareOfTest {
                nonce_index: 0x4321,
                cookie: [5; 8],
                keygen_token: [6; 8],
            },
            Message::BindingUpdate(bu()),
            Message::BindingAck(BindingAck {
                status: ba_status::SEQ_OUT_OF_WINDOW,
                key_mgmt_compat: false,
                seq: 0xffff,
                lifetime_units: 0,
            }),
            Message::BindingError {
                status: be_status::UNKNOWN_MH_TYPE,
                home_address: ALT_COA,
            },
        ]
    }

    fn all_options() -> Vec<MhOption<'static>> {
        vec![
            MhOption::BindingRefreshAdvice { interval: 300 },
            MhOption::AlternateCareOf(ALT_COA),
            MhOption::NonceIndices {
                home: 1,
                care_of: 2,
            },
            MhOption::BindingAuthData(&[0xaa; 12]),
            MhOption::Ipv4HomeAddress {
                prefix_len: 32,
                request_prefix: false,
                addr: [0, 0, 0, 0],
            },
            MhOption::Ipv4AddressAck {
                status: ipv4_ack_status::PREFIX_ALLOCATION_UNAUTHORIZED,
                prefix_len: 16,
                addr: [198, 51, 100, 7],
            },
            MhOption::NatDetection {
                udp_forced: false,
                refresh_time: 0xdead_beef,
            },
            MhOption::Ipv4CareOf([203, 0, 113, 1]),
            MhOption::Unknown {
                kind: 99,
                data: &[1, 2, 3],
            },
        ]
    }

    /// Emits, then checks length, alignment and the round trip.
    fn check_round_trip(msg: &Message, opts: &[MhOption<'_>]) -> Vec<u8> {
        let len = mh_buffer_len(msg, opts);
        let mut out = vec![0u8; len];
        assert_eq!(emit_mh(&mut out, msg, opts), Ok(len));
        assert_eq!(len % 8, 0);
        assert_eq!(usize::from(out[1]), len / 8 - 1);
        let mut p = MhPacket::new_checked(&mut out[..]).unwrap();
        p.fill_checksum(&SRC, &DST);
        let p = MhPacket::new_checked(&out[..]).unwrap();
        assert!(p.verify_checksum(&SRC, &DST));
        let r = MhRepr::parse(&p).unwrap();
        assert_eq!(&r.message, msg);
        // Alignment, checked on the emitted bytes.
        let mut at = MH_FIXED_LEN + msg.fields_len();
        let mut got = Vec::new();
        for o in r.options() {
            let (n, k) = o.alignment();
            assert_eq!(at % n, k, "{o:?} at {at}");
            at += o.wire_len();
            if !matches!(o, MhOption::Pad1 | MhOption::PadN(_)) {
                got.push(o);
            }
        }
        assert_eq!(at, len);
        assert_eq!(got, opts);
        out
    }

    #[test]
    fn every_message_and_option_round_trips_aligned() {
        let opts = all_options();
        for msg in all_messages() {
            check_round_trip(&msg, &[]);
            check_round_trip(&msg, &opts);
            for o in &opts {
                check_round_trip(&msg, core::slice::from_ref(o));
            }
            let mut rev = opts.clone();
            rev.reverse();
            check_round_trip(&msg, &rev);
        }
    }

    #[test]
    fn fixed_lengths_without_options() {
        let lens: Vec<usize> = all_messages()
            .iter()
            .map(|m| mh_buffer_len(m, &[]))
            .collect();
        // RFC 6275 6.1.2 - 6.1.9: 8, 16, 16, 24, 24, 16 (12 + padding), 16, 24.
        assert_eq!(lens, [8, 16, 16, 24, 24, 16, 16, 24]);
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let opts = all_options();
        for msg in all_messages() {
            let full = check_round_trip(&msg, &opts);
            for cut in 0..full.len() {
                let short = &full[..cut];
                let parsed = MhPacket::new_checked(short).and_then(|p| MhRepr::parse(&p));
                assert!(parsed.is_err(), "{msg:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let mut b = SCAPY_BU;
        b[0] = 6;
        assert_eq!(
            MhPacket::new_checked(&b[..]).unwrap_err(),
            MhError::BadPayloadProto
        );
        assert_eq!(
            MhPacket::new_checked(&b[..7]).unwrap_err(),
            MhError::Truncated
        );
        let mut b = SCAPY_BU;
        b[1] = 6;
        assert_eq!(
            MhPacket::new_checked(&b[..]).unwrap_err(),
            MhError::BadLength
        );
        // A BU whose Header Len leaves only 2 bytes of message data.
        let short = [59, 0, mh_type::BU, 0, 0, 0, 0, 1];
        let p = MhPacket::new_checked(&short[..]).unwrap();
        assert_eq!(MhRepr::parse(&p).unwrap_err(), MhError::BadMessageLength);
        // An option running past the options area.
        let mut b = SCAPY_BU;
        b[41] = 7;
        let p = MhPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            MhRepr::parse(&p).unwrap_err(),
            MhError::BadOption { offset: 40 }
        );
        // A known option of the wrong length.
        let mut b = SCAPY_BU;
        b[15] = 14;
        b[30] = 1;
        b[31] = 0;
        let p = MhPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            MhRepr::parse(&p).unwrap_err(),
            MhError::BadOption { offset: 14 }
        );
        // Emit errors.
        let mut out = [0u8; 8];
        assert_eq!(
            emit_mh(&mut out, &Message::BindingUpdate(bu()), &[]),
            Err(MhError::NoSpace)
        );
        assert_eq!(
            emit_mh(&mut out, &Message::Unknown { mh_type: 9 }, &[]),
            Err(MhError::BadMessageLength)
        );
        let big = [0u8; 300];
        let mut out = [0u8; 400];
        assert!(matches!(
            emit_mh(
                &mut out,
                &Message::BindingRefreshRequest,
                &[MhOption::BindingAuthData(&big)]
            ),
            Err(MhError::BadOption { .. })
        ));
        assert_eq!(
            MhError::BadOption { offset: 3 }.to_string(),
            "malformed mobility option at offset 3"
        );
    }

    #[test]
    fn unknown_type_parses_opaque() {
        let b = [59, 1, 42, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        let p = MhPacket::new_checked(&b[..]).unwrap();
        let r = MhRepr::parse(&p).unwrap();
        assert_eq!(r.message, Message::Unknown { mh_type: 42 });
        assert!(r.options.is_empty());
        assert_eq!(p.message_data(), &b[6..]);
        assert_eq!(p.into_inner().len(), 16);
    }
}
