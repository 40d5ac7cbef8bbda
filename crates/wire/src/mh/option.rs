//! Mobility options (RFC 6275 6.2, RFC 5555 3.1, 3.2): parsing, iteration
//! over an options area, and writing one option.

use super::*;

/// A mobility option (RFC 6275 6.2, RFC 5555 3.1, 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MhOption<'a> {
    /// Pad1 (6.2.2): one zero byte.
    Pad1,
    /// PadN (6.2.3): the total length of the option, Type and Length
    /// included.
    PadN(usize),
    /// Binding Refresh Advice (6.2.4), alignment 2n.
    BindingRefreshAdvice {
        /// Refresh Interval in 4-second units.
        interval: u16,
    },
    /// Alternate Care-of Address (6.2.5), alignment 8n+6.
    AlternateCareOf([u8; 16]),
    /// Nonce Indices (6.2.6), alignment 2n.
    NonceIndices {
        /// Home Nonce Index.
        home: u16,
        /// Care-of Nonce Index.
        care_of: u16,
    },
    /// Binding Authorization Data (6.2.7), alignment 8n+2: the
    /// Authenticator.
    BindingAuthData(&'a [u8]),
    /// IPv4 Home Address (RFC 5555 3.1.1), alignment 4n.
    Ipv4HomeAddress {
        /// Prefix-len (6 bits).
        prefix_len: u8,
        /// P: the mobile node asks for a prefix.
        request_prefix: bool,
        /// IPv4 home address (0.0.0.0 asks for one).
        addr: [u8; 4],
    },
    /// IPv4 Address Acknowledgement (RFC 5555 3.2.1), alignment 4n.
    Ipv4AddressAck {
        /// Status (see [`ipv4_ack_status`]).
        status: u8,
        /// Pref-len (6 bits).
        prefix_len: u8,
        /// IPv4 home address.
        addr: [u8; 4],
    },
    /// NAT Detection (RFC 5555 3.2.2), alignment 4n.
    NatDetection {
        /// F: UDP encapsulation is required.
        udp_forced: bool,
        /// Refresh time in seconds.
        refresh_time: u32,
    },
    /// IPv4 Care-of Address (RFC 5555 3.1.2), alignment 4n.
    Ipv4CareOf([u8; 4]),
    /// An option this code does not know, with its data; it round-trips.
    Unknown {
        /// Option Type.
        kind: u8,
        /// Option Data.
        data: &'a [u8],
    },
}

impl MhOption<'_> {
    /// Alignment requirement `(n, k)`: the option's Type byte sits at
    /// `n * x + k` from the start of the Mobility Header (RFC 6275 6.2,
    /// RFC 5555 3.1, 3.2).
    pub fn alignment(&self) -> (usize, usize) {
        match self {
            MhOption::BindingRefreshAdvice { .. } | MhOption::NonceIndices { .. } => (2, 0),
            MhOption::AlternateCareOf(_) => (8, 6),
            MhOption::BindingAuthData(_) => (8, 2),
            MhOption::Ipv4HomeAddress { .. }
            | MhOption::Ipv4AddressAck { .. }
            | MhOption::NatDetection { .. }
            | MhOption::Ipv4CareOf(_) => (4, 0),
            MhOption::Pad1 | MhOption::PadN(_) | MhOption::Unknown { .. } => (1, 0),
        }
    }

    /// Bytes the option takes on the wire, Type and Length included.
    pub fn wire_len(&self) -> usize {
        match self {
            MhOption::Pad1 => 1,
            MhOption::PadN(n) => *n,
            MhOption::BindingRefreshAdvice { .. } => 4,
            MhOption::AlternateCareOf(_) => 18,
            MhOption::NonceIndices { .. } => 6,
            MhOption::BindingAuthData(d) => 2 + d.len(),
            MhOption::Ipv4HomeAddress { .. }
            | MhOption::Ipv4AddressAck { .. }
            | MhOption::NatDetection { .. }
            | MhOption::Ipv4CareOf(_) => 8,
            MhOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Writes the option into `out[..wire_len()]`. Fails if a field does
    /// not fit its wire field.
    pub(super) fn emit(&self, out: &mut [u8]) -> Result<(), ()> {
        let mut header = |kind: u8, len: usize| -> Result<(), ()> {
            out[0] = kind;
            out[1] = u8::try_from(len).map_err(|_| ())?;
            Ok(())
        };
        match *self {
            MhOption::Pad1 => out[0] = opt_type::PAD1,
            MhOption::PadN(0) => {}
            MhOption::PadN(1) => out[0] = opt_type::PAD1,
            MhOption::PadN(n) => {
                header(opt_type::PADN, n - 2)?;
                out[2..n].fill(0);
            }
            MhOption::BindingRefreshAdvice { interval } => {
                header(opt_type::BINDING_REFRESH_ADVICE, 2)?;
                out[2..4].copy_from_slice(&interval.to_be_bytes());
            }
            MhOption::AlternateCareOf(a) => {
                header(opt_type::ALTERNATE_COA, 16)?;
                out[2..18].copy_from_slice(&a);
            }
            MhOption::NonceIndices { home, care_of } => {
                header(opt_type::NONCE_INDICES, 4)?;
                out[2..4].copy_from_slice(&home.to_be_bytes());
                out[4..6].copy_from_slice(&care_of.to_be_bytes());
            }
            MhOption::BindingAuthData(d) => {
                header(opt_type::BINDING_AUTH_DATA, d.len())?;
                out[2..2 + d.len()].copy_from_slice(d);
            }
            MhOption::Ipv4HomeAddress {
                prefix_len,
                request_prefix,
                addr,
            } => {
                if prefix_len > 0x3f {
                    return Err(());
                }
                header(opt_type::IPV4_HOME_ADDRESS, 6)?;
                out[2] = (prefix_len << 2) | if request_prefix { 0x02 } else { 0 };
                out[3] = 0;
                out[4..8].copy_from_slice(&addr);
            }
            MhOption::Ipv4AddressAck {
                status,
                prefix_len,
                addr,
            } => {
                if prefix_len > 0x3f {
                    return Err(());
                }
                header(opt_type::IPV4_ADDRESS_ACK, 6)?;
                out[2] = status;
                out[3] = prefix_len << 2;
                out[4..8].copy_from_slice(&addr);
            }
            MhOption::NatDetection {
                udp_forced,
                refresh_time,
            } => {
                header(opt_type::NAT_DETECTION, 6)?;
                out[2] = if udp_forced { 0x80 } else { 0 };
                out[3] = 0;
                out[4..8].copy_from_slice(&refresh_time.to_be_bytes());
            }
            MhOption::Ipv4CareOf(a) => {
                header(opt_type::IPV4_COA, 6)?;
                out[2..4].fill(0);
                out[4..8].copy_from_slice(&a);
            }
            MhOption::Unknown { kind, data } => {
                header(kind, data.len())?;
                out[2..2 + data.len()].copy_from_slice(data);
            }
        }
        Ok(())
    }
}

/// Reads the option at the start of `area`: the option and its length.
/// `None` if it is truncated or a known option has the wrong length.
pub(super) fn parse_option(area: &[u8]) -> Option<(MhOption<'_>, usize)> {
    let kind = *area.first()?;
    if kind == opt_type::PAD1 {
        return Some((MhOption::Pad1, 1));
    }
    let len = usize::from(*area.get(1)?);
    let data = area.get(2..2 + len)?;
    let arr4 = |d: &[u8]| [d[2], d[3], d[4], d[5]];
    let opt = match (kind, len) {
        (opt_type::PADN, _) => MhOption::PadN(2 + len),
        (opt_type::BINDING_REFRESH_ADVICE, 2) => MhOption::BindingRefreshAdvice {
            interval: u16::from_be_bytes([data[0], data[1]]),
        },
        (opt_type::ALTERNATE_COA, 16) => {
            let mut a = [0u8; 16];
            a.copy_from_slice(data);
            MhOption::AlternateCareOf(a)
        }
        (opt_type::NONCE_INDICES, 4) => MhOption::NonceIndices {
            home: u16::from_be_bytes([data[0], data[1]]),
            care_of: u16::from_be_bytes([data[2], data[3]]),
        },
        (opt_type::BINDING_AUTH_DATA, _) => MhOption::BindingAuthData(data),
        (opt_type::IPV4_HOME_ADDRESS, 6) => MhOption::Ipv4HomeAddress {
            prefix_len: data[0] >> 2,
            request_prefix: data[0] & 0x02 != 0,
            addr: arr4(data),
        },
        (opt_type::IPV4_ADDRESS_ACK, 6) => MhOption::Ipv4AddressAck {
            status: data[0],
            prefix_len: data[1] >> 2,
            addr: arr4(data),
        },
        (opt_type::NAT_DETECTION, 6) => MhOption::NatDetection {
            udp_forced: data[0] & 0x80 != 0,
            refresh_time: u32::from_be_bytes([data[2], data[3], data[4], data[5]]),
        },
        (opt_type::IPV4_COA, 6) => MhOption::Ipv4CareOf(arr4(data)),
        (
            opt_type::BINDING_REFRESH_ADVICE
            | opt_type::ALTERNATE_COA
            | opt_type::NONCE_INDICES
            | opt_type::IPV4_HOME_ADDRESS
            | opt_type::IPV4_ADDRESS_ACK
            | opt_type::NAT_DETECTION
            | opt_type::IPV4_COA,
            _,
        ) => return None,
        (kind, _) => MhOption::Unknown { kind, data },
    };
    Some((opt, 2 + len))
}

/// The mobility options in an options area, in order, padding included.
/// Stops at the first malformed option (an area [`MhRepr::parse`]
/// accepted has none).
#[derive(Debug, Clone)]
pub struct MhOptionIter<'a> {
    area: &'a [u8],
}

impl<'a> MhOptionIter<'a> {
    /// Iterates over the options in `area`.
    pub fn new(area: &'a [u8]) -> Self {
        MhOptionIter { area }
    }
}

impl<'a> Iterator for MhOptionIter<'a> {
    type Item = MhOption<'a>;

    fn next(&mut self) -> Option<MhOption<'a>> {
        match parse_option(self.area) {
            Some((opt, len)) => {
                self.area = self.area.get(len..).unwrap_or(&[]);
                Some(opt)
            }
            None => {
                self.area = &[];
                None
            }
        }
    }
}
