//! Reassembly of IPv4 (RFC 791) and IPv6 (RFC 8200 4.5) fragments with
//! bounded memory and time.

use core::time::Duration;

use bitsgw_wire::ip::{
    self, IpMeta, IpVersion, IPV4_MIN_HEADER, IPV6_FRAGMENT_HEADER, IPV6_HEADER,
};
use bitsgw_wire::{proto, PacketBuf, Timestamp};
use rustc_hash::FxHashMap;

use crate::FragDrop;

/// Largest value of the IPv4 Total Length and IPv6 Payload Length fields.
const MAX_LEN_FIELD: usize = 65_535;

/// Limits of the [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Bytes held for all datagrams in progress together. Each fragment is
    /// charged its IP packet length as received, headers included.
    pub max_bytes: usize,
    /// Datagrams in progress at once.
    pub max_datagrams: usize,
    /// Time from the first-arriving fragment after which an incomplete
    /// datagram is discarded (RFC 8200 4.5: 60 seconds; RFC 791 suggests
    /// 15 seconds as a lower bound for its timer).
    pub timeout: Duration,
    /// Largest reassembled datagram, headers included (the IPv4 Total
    /// Length field allows 65535).
    pub max_datagram_len: usize,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_bytes: 4 * 1024 * 1024,
            max_datagrams: 256,
            timeout: Duration::from_secs(60),
            max_datagram_len: MAX_LEN_FIELD,
        }
    }
}

/// What [`Reassembler::handle_fragment`] did with a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reassembly {
    /// Stored; the datagram is not complete yet.
    Held,
    /// The datagram is complete and in the output buffer.
    Complete,
}

/// What identifies a datagram: RFC 791 (source, destination, protocol,
/// identification); RFC 8200 4.5 (source, destination, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    ident: u32,
}

/// One fragment's data.
struct Piece {
    /// Offset in the fragmentable part.
    off: usize,
    data: Box<[u8]>,
}

impl Piece {
    fn end(&self) -> usize {
        self.off + self.data.len()
    }
}

/// A datagram in progress.
struct Datagram {
    deadline: Timestamp,
    /// Once the first fragment is in: the IPv4 header, or the IPv6
    /// unfragmentable part with the Next Header that named the Fragment
    /// header already set to the fragment's Next Header.
    header: Vec<u8>,
    /// Non-overlapping, sorted by offset; no empty pieces.
    pieces: Vec<Piece>,
    /// Data bytes held (sum of the pieces' lengths).
    received: usize,
    /// Length of the fragmentable part, once the last fragment is in.
    total: Option<usize>,
    /// Fragments accepted, empty last fragments included.
    fragments: usize,
    /// Bytes charged against [`ReassemblyLimits::max_bytes`].
    charged: usize,
}

impl Datagram {
    fn new(deadline: Timestamp) -> Self {
        Datagram {
            deadline,
            header: Vec::new(),
            pieces: Vec::new(),
            received: 0,
            total: None,
            fragments: 0,
            charged: 0,
        }
    }

    /// Checks a fragment at `off..end` against what is held. The error
    /// discards the whole datagram.
    fn check(&self, off: usize, end: usize, more: bool) -> Result<(), FragDrop> {
        if let Some(total) = self.total {
            if !more {
                // A second last fragment: a duplicate, or a contradiction.
                return Err(if end == total {
                    FragDrop::Overlap
                } else {
                    FragDrop::Malformed
                });
            }
            if end > total {
                return Err(FragDrop::Malformed);
            }
        } else if !more && self.pieces.last().is_some_and(|p| p.end() > end) {
            // A last fragment that ends before data already held.
            return Err(FragDrop::Malformed);
        }
        if end == off {
            return Ok(());
        }
        let at = self.pieces.partition_point(|p| p.off < off);
        let overlaps_prev = at > 0 && self.pieces[at - 1].end() > off;
        let overlaps_next = self.pieces.get(at).is_some_and(|p| p.off < end);
        if overlaps_prev || overlaps_next {
            return Err(FragDrop::Overlap);
        }
        Ok(())
    }
}

/// Reassembles IPv4 (RFC 791) and IPv6 (RFC 8200 4.5) fragments with
/// bounded memory and time.
///
/// Policy:
/// - Any overlap discards the whole datagram in progress, for IPv6 as
///   RFC 5722 requires and for IPv4 as the safe choice (overlaps have no
///   legitimate use and are the basis of filter-evasion attacks). An exact
///   duplicate of a held fragment is treated as an overlap too.
/// - A new datagram is refused when [`ReassemblyLimits::max_datagrams`] are
///   in progress (nothing held is evicted); a fragment that would exceed
///   [`ReassemblyLimits::max_bytes`] is refused and its datagram discarded,
///   since it could never complete.
/// - Each fragment is charged its IP packet length as received. The heap
///   actually used is that plus a small constant per fragment.
/// - The reassembled IPv4 header is the first fragment's; the IPv6
///   unfragmentable part is the first fragment's (RFC 8200 4.5).
/// - Incomplete datagrams expire [`ReassemblyLimits::timeout`] after their
///   first-arriving fragment. The caller drives [`Reassembler::handle_timeout`]
///   at [`Reassembler::poll_timeout`]; a fragment arriving for an expired
///   datagram also discards it first (counted under
///   [`FragDrop::TimedOut`] in [`Reassembler::dropped`]).
pub struct Reassembler {
    limits: ReassemblyLimits,
    datagrams: FxHashMap<Key, Datagram>,
    bytes: usize,
    dropped: [u64; FragDrop::ALL.len()],
}

impl core::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reassembler")
            .field("limits", &self.limits)
            .field("in_progress", &self.datagrams.len())
            .field("bytes_held", &self.bytes)
            .finish()
    }
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            datagrams: FxHashMap::default(),
            bytes: 0,
            dropped: [0; FragDrop::ALL.len()],
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &ReassemblyLimits {
        &self.limits
    }

    /// Datagrams in progress.
    pub fn in_progress(&self) -> usize {
        self.datagrams.len()
    }

    /// Bytes charged for the fragments held.
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    /// Fragments dropped for `reason` since creation: the ones refused by
    /// [`Reassembler::handle_fragment`] and the held ones discarded with
    /// them or by [`Reassembler::handle_timeout`].
    pub fn dropped(&self, reason: FragDrop) -> u64 {
        self.dropped[reason.index()]
    }

    fn count(&mut self, reason: FragDrop, fragments: usize) {
        let n = u64::try_from(fragments).unwrap_or(u64::MAX);
        let c = &mut self.dropped[reason.index()];
        *c = c.saturating_add(n);
    }

    /// Refuses the arriving fragment.
    fn refuse(&mut self, reason: FragDrop) -> FragDrop {
        self.count(reason, 1);
        reason
    }

    /// Discards a datagram in progress and the arriving fragment.
    fn discard(&mut self, key: &Key, reason: FragDrop) -> FragDrop {
        let held = self.remove(key).map_or(0, |d| d.fragments);
        self.count(reason, held + 1);
        reason
    }

    fn remove(&mut self, key: &Key) -> Option<Datagram> {
        let d = self.datagrams.remove(key)?;
        self.bytes -= d.charged;
        Some(d)
    }

    /// Takes one fragment. `pkt` is a whole IPv4 or IPv6 packet for which
    /// [`ip::parse`] returned `meta` with `meta.frag` set.
    ///
    /// `Held`: stored. `Complete`: `out` holds the reassembled datagram
    /// (IPv4: the first fragment's header with MF and the offset cleared,
    /// Total Length and checksum fixed; IPv6: the Fragment header removed,
    /// the Next Header before it patched, Payload Length fixed).
    /// `Err(reason)`: this fragment was dropped, and for overlaps,
    /// contradictions, the memory limit and failures at completion the
    /// whole datagram in progress with it.
    pub fn handle_fragment(
        &mut self,
        pkt: &[u8],
        meta: &IpMeta,
        now: Timestamp,
        out: &mut PacketBuf,
    ) -> Result<Reassembly, FragDrop> {
        let Some(frag) = meta.frag else {
            return Err(self.refuse(FragDrop::Malformed));
        };
        let Some(pkt) = pkt.get(..meta.total_len) else {
            return Err(self.refuse(FragDrop::Malformed));
        };
        let Some(parts) = split_fragment(pkt, meta) else {
            return Err(self.refuse(FragDrop::Malformed));
        };
        let key = Key {
            v6: meta.version == IpVersion::V6,
            src: parts.src,
            dst: parts.dst,
            proto: parts.proto,
            ident: frag.ident,
        };
        let data = parts.data;
        let off = frag.offset as usize;
        let end = off + data.len();
        if frag.more && (data.is_empty() || data.len() % 8 != 0) {
            // RFC 8200 4.5: non-last fragments are multiples of 8 bytes.
            return Err(self.refuse(FragDrop::Malformed));
        }
        let field_limit = match meta.version {
            IpVersion::V4 => MAX_LEN_FIELD,
            IpVersion::V6 => MAX_LEN_FIELD + IPV6_HEADER,
        };
        if parts.header_len + end > field_limit.min(self.limits.max_datagram_len) {
            return Err(self.refuse(FragDrop::TooLarge));
        }

        if self.datagrams.get(&key).is_some_and(|d| d.deadline <= now) {
            let held = self.remove(&key).map_or(0, |d| d.fragments);
            self.count(FragDrop::TimedOut, held);
        }
        let charge = pkt.len();
        match self.datagrams.get(&key) {
            Some(d) => {
                if let Err(reason) = d.check(off, end, frag.more) {
                    return Err(self.discard(&key, reason));
                }
                if self.bytes + charge > self.limits.max_bytes {
                    return Err(self.discard(&key, FragDrop::MemoryLimit));
                }
            }
            None => {
                if self.datagrams.len() >= self.limits.max_datagrams {
                    return Err(self.refuse(FragDrop::TooManyDatagrams));
                }
                if self.bytes + charge > self.limits.max_bytes {
                    return Err(self.refuse(FragDrop::MemoryLimit));
                }
            }
        }

        let deadline = now.saturating_add(self.limits.timeout);
        let d = self
            .datagrams
            .entry(key)
            .or_insert_with(|| Datagram::new(deadline));
        if off == 0 {
            d.header.clear();
            d.header.extend_from_slice(parts.header);
            if let Some(at) = parts.next_header_at {
                // `at` is inside the header: split_fragment checked it.
                d.header[at] = parts.next_header;
            }
        }
        if !data.is_empty() {
            let at = d.pieces.partition_point(|p| p.off < off);
            d.pieces.insert(
                at,
                Piece {
                    off,
                    data: data.into(),
                },
            );
        }
        if !frag.more {
            d.total = Some(end);
        }
        d.received += data.len();
        d.fragments += 1;
        d.charged += charge;
        self.bytes += charge;

        if d.total != Some(d.received) || d.header.is_empty() {
            return Ok(Reassembly::Held);
        }
        // No overlaps and every piece inside `total`: `received == total`
        // means the data is complete.
        let Some(d) = self.remove(&key) else {
            return Err(self.refuse(FragDrop::Malformed));
        };
        match assemble(&d, meta.version, self.limits.max_datagram_len, out) {
            Ok(()) => Ok(Reassembly::Complete),
            Err(reason) => {
                self.count(reason, d.fragments);
                Err(reason)
            }
        }
    }

    /// Discards the datagrams whose time is up; returns the number of
    /// fragments dropped (each a [`FragDrop::TimedOut`]).
    pub fn handle_timeout(&mut self, now: Timestamp) -> usize {
        let mut fragments = 0;
        let mut bytes = 0;
        self.datagrams.retain(|_, d| {
            if d.deadline <= now {
                fragments += d.fragments;
                bytes += d.charged;
                false
            } else {
                true
            }
        });
        self.bytes -= bytes;
        self.count(FragDrop::TimedOut, fragments);
        fragments
    }

    /// When the earliest datagram in progress expires (a scan of them).
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.datagrams.values().map(|d| d.deadline).min()
    }
}

/// The parts of one fragment that reassembly needs.
struct FragmentParts<'a> {
    src: [u8; 16],
    dst: [u8; 16],
    /// IPv4 protocol (part of the key); 0 for IPv6.
    proto: u8,
    /// The header a first fragment contributes: the IPv4 header, or the
    /// IPv6 unfragmentable part (everything before the Fragment header).
    header: &'a [u8],
    /// `header.len()`.
    header_len: usize,
    /// IPv6: where in `header` the Next Header naming the Fragment header
    /// is, and the value it gets in the reassembled packet.
    next_header_at: Option<usize>,
    next_header: u8,
    data: &'a [u8],
}

/// Splits a fragment into key, header and data, checking the fields the
/// caller's `meta` points at (`pkt` is cut to the IP length).
fn split_fragment<'a>(pkt: &'a [u8], meta: &IpMeta) -> Option<FragmentParts<'a>> {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    match (meta.version, ip::version(pkt).ok()?) {
        (IpVersion::V4, IpVersion::V4) => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            if ihl < IPV4_MIN_HEADER || ihl > pkt.len() {
                return None;
            }
            src[..4].copy_from_slice(pkt.get(12..16)?);
            dst[..4].copy_from_slice(pkt.get(16..20)?);
            Some(FragmentParts {
                src,
                dst,
                proto: pkt[9],
                header: &pkt[..ihl],
                header_len: ihl,
                next_header_at: None,
                next_header: 0,
                data: &pkt[ihl..],
            })
        }
        (IpVersion::V6, IpVersion::V6) => {
            let at = meta.frag?.header_at;
            let fh = pkt.get(at..at + IPV6_FRAGMENT_HEADER)?;
            let field = ipv6_field_naming(pkt, at)?;
            src.copy_from_slice(pkt.get(8..24)?);
            dst.copy_from_slice(pkt.get(24..40)?);
            Some(FragmentParts {
                src,
                dst,
                proto: 0,
                header: &pkt[..at],
                header_len: at,
                next_header_at: Some(field),
                next_header: fh[0],
                data: &pkt[at + IPV6_FRAGMENT_HEADER..],
            })
        }
        _ => None,
    }
}

/// Walks the IPv6 header chain of `pkt` to the Fragment header at `target`
/// and returns the offset of the Next Header field that names it. `None`
/// if the chain does not lead there through Hop-by-Hop, Routing and
/// Destination Options headers.
fn ipv6_field_naming(pkt: &[u8], target: usize) -> Option<usize> {
    for header in ip::Ipv6ExtHeaders::new(pkt).ok()? {
        let header = header.ok()?;
        if header.at == target {
            return (header.kind == proto::IPV6_FRAGMENT).then_some(header.prev_field);
        }
        if header.at > target || header.kind == proto::IPV6_FRAGMENT {
            return None;
        }
    }
    None
}

/// Writes the reassembled datagram into `out`.
fn assemble(
    d: &Datagram,
    version: IpVersion,
    max_len: usize,
    out: &mut PacketBuf,
) -> Result<(), FragDrop> {
    let total = d.header.len() + d.received;
    let field_limit = match version {
        IpVersion::V4 => MAX_LEN_FIELD,
        IpVersion::V6 => MAX_LEN_FIELD + IPV6_HEADER,
    };
    if total > max_len.min(field_limit) {
        return Err(FragDrop::TooLarge);
    }
    let buf = out
        .reset_to_len(total)
        .map_err(|_| FragDrop::BufferTooSmall)?;
    let hl = d.header.len();
    buf[..hl].copy_from_slice(&d.header);
    for p in &d.pieces {
        buf[hl + p.off..hl + p.end()].copy_from_slice(&p.data);
    }
    match version {
        IpVersion::V4 => {
            // Keep DF and the reserved bit; clear MF and the offset.
            buf[6] &= 0xc0;
            buf[7] = 0;
            ip::set_total_len(buf, total);
        }
        IpVersion::V6 => ip::set_total_len(buf, total),
    }
    Ok(())
}
