//! The Mobility Header's messages (RFC 6275 6.1.2-6.1.8) and the
//! Binding Update / Acknowledgement fields of RFC 5555.

use super::*;

/// Fields of a Binding Update (RFC 6275 6.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingUpdate {
    /// Sequence #.
    pub seq: u16,
    /// A: the sender asks for a Binding Acknowledgement.
    pub ack: bool,
    /// H: a home registration.
    pub home_registration: bool,
    /// L: the home address's interface identifier is also the link-local
    /// address's.
    pub link_local_compat: bool,
    /// K: IKE SA survives movement.
    pub key_mgmt_compat: bool,
    /// Lifetime in 4-second units.
    pub lifetime_units: u16,
}

/// Fields of a Binding Acknowledgement (RFC 6275 6.1.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingAck {
    /// Status (see [`ba_status`]).
    pub status: u8,
    /// K: IKE SA survives movement.
    pub key_mgmt_compat: bool,
    /// Sequence #, copied from the Binding Update.
    pub seq: u16,
    /// Granted lifetime in 4-second units.
    pub lifetime_units: u16,
}

/// A mobility message (RFC 6275 6.1.2 - 6.1.9), without its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// Binding Refresh Request (6.1.2).
    BindingRefreshRequest,
    /// Home Test Init (6.1.3).
    HomeTestInit {
        /// Home Init Cookie.
        cookie: [u8; 8],
    },
    /// Care-of Test Init (6.1.4).
    CareOfTestInit {
        /// Care-of Init Cookie.
        cookie: [u8; 8],
    },
    /// Home Test (6.1.5).
    HomeTest {
        /// Home Nonce Index.
        nonce_index: u16,
        /// Home Init Cookie.
        cookie: [u8; 8],
        /// Home Keygen Token.
        keygen_token: [u8; 8],
    },
    /// Care-of Test (6.1.6).
    CareOfTest {
        /// Care-of Nonce Index.
        nonce_index: u16,
        /// Care-of Init Cookie.
        cookie: [u8; 8],
        /// Care-of Keygen Token.
        keygen_token: [u8; 8],
    },
    /// Binding Update (6.1.7).
    BindingUpdate(BindingUpdate),
    /// Binding Acknowledgement (6.1.8).
    BindingAck(BindingAck),
    /// Binding Error (6.1.9).
    BindingError {
        /// Status (see [`be_status`]).
        status: u8,
        /// Home Address.
        home_address: [u8; 16],
    },
    /// A type this code does not know: its message data stays opaque (the
    /// receiver answers with a Binding Error, RFC 6275 9.2).
    Unknown {
        /// MH Type.
        mh_type: u8,
    },
}

impl Message {
    /// The MH Type of the message.
    pub fn mh_type(&self) -> u8 {
        match self {
            Message::BindingRefreshRequest => mh_type::BRR,
            Message::HomeTestInit { .. } => mh_type::HOTI,
            Message::CareOfTestInit { .. } => mh_type::COTI,
            Message::HomeTest { .. } => mh_type::HOT,
            Message::CareOfTest { .. } => mh_type::COT,
            Message::BindingUpdate(_) => mh_type::BU,
            Message::BindingAck(_) => mh_type::BA,
            Message::BindingError { .. } => mh_type::BE,
            Message::Unknown { mh_type } => *mh_type,
        }
    }

    /// Length of the message fields that precede the options (RFC 6275
    /// 6.1.2 - 6.1.9); `None` for an unknown type.
    pub(super) fn fields_len_of(mh_type: u8) -> Option<usize> {
        match mh_type {
            mh_type::BRR => Some(2),
            mh_type::HOTI | mh_type::COTI => Some(10),
            mh_type::HOT | mh_type::COT => Some(18),
            mh_type::BU | mh_type::BA => Some(6),
            mh_type::BE => Some(18),
            _ => None,
        }
    }

    /// Length of the message fields that precede the options.
    pub fn fields_len(&self) -> usize {
        Self::fields_len_of(self.mh_type()).unwrap_or(0)
    }

    /// Reads the message fields of an MH of `mh_type` from `data`, which
    /// holds at least [`Message::fields_len`] bytes.
    pub(super) fn parse_fields(mh_type: u8, d: &[u8]) -> Message {
        let u16_at = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let arr8 = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&d[i..i + 8]);
            a
        };
        match mh_type {
            mh_type::BRR => Message::BindingRefreshRequest,
            mh_type::HOTI => Message::HomeTestInit { cookie: arr8(2) },
            mh_type::COTI => Message::CareOfTestInit { cookie: arr8(2) },
            mh_type::HOT => Message::HomeTest {
                nonce_index: u16_at(0),
                cookie: arr8(2),
                keygen_token: arr8(10),
            },
            mh_type::COT => Message::CareOfTest {
                nonce_index: u16_at(0),
                cookie: arr8(2),
                keygen_token: arr8(10),
            },
            mh_type::BU => {
                let flags = u16_at(2);
                Message::BindingUpdate(BindingUpdate {
                    seq: u16_at(0),
                    ack: flags & bu_flags::A != 0,
                    home_registration: flags & bu_flags::H != 0,
                    link_local_compat: flags & bu_flags::L != 0,
                    key_mgmt_compat: flags & bu_flags::K != 0,
                    lifetime_units: u16_at(4),
                })
            }
            mh_type::BA => Message::BindingAck(BindingAck {
                status: d[0],
                key_mgmt_compat: d[1] & ba_flags::K != 0,
                seq: u16_at(2),
                lifetime_units: u16_at(4),
            }),
            mh_type::BE => {
                let mut home_address = [0u8; 16];
                home_address.copy_from_slice(&d[2..18]);
                Message::BindingError {
                    status: d[0],
                    home_address,
                }
            }
            other => Message::Unknown { mh_type: other },
        }
    }

    /// Writes the message fields into `out[..fields_len()]`.
    pub(super) fn emit_fields(&self, out: &mut [u8]) {
        match *self {
            Message::BindingRefreshRequest | Message::Unknown { .. } => {
                out.fill(0);
            }
            Message::HomeTestInit { cookie } | Message::CareOfTestInit { cookie } => {
                out[0..2].fill(0);
                out[2..10].copy_from_slice(&cookie);
            }
            Message::HomeTest {
                nonce_index,
                cookie,
                keygen_token,
            }
            | Message::CareOfTest {
                nonce_index,
                cookie,
                keygen_token,
            } => {
                out[0..2].copy_from_slice(&nonce_index.to_be_bytes());
                out[2..10].copy_from_slice(&cookie);
                out[10..18].copy_from_slice(&keygen_token);
            }
            Message::BindingUpdate(bu) => {
                let mut flags = 0u16;
                for (set, bit) in [
                    (bu.ack, bu_flags::A),
                    (bu.home_registration, bu_flags::H),
                    (bu.link_local_compat, bu_flags::L),
                    (bu.key_mgmt_compat, bu_flags::K),
                ] {
                    if set {
                        flags |= bit;
                    }
                }
                out[0..2].copy_from_slice(&bu.seq.to_be_bytes());
                out[2..4].copy_from_slice(&flags.to_be_bytes());
                out[4..6].copy_from_slice(&bu.lifetime_units.to_be_bytes());
            }
            Message::BindingAck(ba) => {
                out[0] = ba.status;
                out[1] = if ba.key_mgmt_compat { ba_flags::K } else { 0 };
                out[2..4].copy_from_slice(&ba.seq.to_be_bytes());
                out[4..6].copy_from_slice(&ba.lifetime_units.to_be_bytes());
            }
            Message::BindingError {
                status,
                home_address,
            } => {
                out[0] = status;
                out[1] = 0;
                out[2..18].copy_from_slice(&home_address);
            }
        }
    }
}
