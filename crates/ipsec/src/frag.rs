//! IP fragmentation around the ESP engine.
//!
//! Inbound, fragments of ESP packets are reassembled before SA lookup
//! (RFC 4303 3.4.1: "reassembly is performed prior to IPsec processing"),
//! with bounded memory and time (RFC 791, RFC 8200 4.5) and every discarded
//! fragment counted under a [`FragDrop`] reason.
//!
//! Outbound, a packet that is too large for the MTU after encapsulation is
//! either fragmented ([`fragment_ipv4`], [`fragment_ipv6`]) or, when the
//! inner packet may not be fragmented, answered with ICMP Fragmentation
//! Needed ([`icmpv4_frag_needed`]) or ICMPv6 Packet Too Big
//! ([`icmpv6_packet_too_big`]), as RFC 4301 section 8 describes. Rate
//! limiting of those ICMP messages (RFC 1812 4.3.2.8, RFC 4443 2.4(f)) is
//! the caller's job.
//!
//! Everything is sans-IO: time is a [`Timestamp`] handed in.

use core::time::Duration;

use bitsgw_wire::checksum;
use bitsgw_wire::ip::{self, IpMeta, IpVersion, IPV4_MIN_HEADER, IPV6_HEADER};
use bitsgw_wire::{proto, PacketBuf, Timestamp};
use rustc_hash::FxHashMap;

/// Length of the IPv6 Fragment header (RFC 8200 4.5).
const FRAGMENT_HEADER: usize = 8;
/// Largest value of the IPv4 Total Length and IPv6 Payload Length fields.
const MAX_LEN_FIELD: usize = 65_535;
/// Most extension headers [`fragment_ipv6`] walks in the unfragmentable part.
const MAX_EXT_HEADERS: usize = 16;
/// Largest ICMPv4 error datagram (RFC 1812 4.3.2.3).
const ICMPV4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error packet: the IPv6 minimum MTU (RFC 4443 2.4(c)).
const ICMPV6_ERROR_MAX: usize = 1280;
/// Hop limit / TTL of the ICMP errors built here.
const ICMP_HOP_LIMIT: u8 = 64;

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

/// Why a fragment (or a packet to fragment, or an ICMP error) was dropped.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDrop {
    /// Not a well-formed fragment: a non-last fragment whose data is empty
    /// or not a multiple of 8 bytes, bad header lengths or options, a
    /// fragment past the end a last fragment set, or two different last
    /// fragments.
    Malformed,
    /// Overlaps data already held (RFC 5722); the whole datagram is
    /// discarded. Exact duplicates count as overlaps too.
    Overlap,
    /// The reassembled datagram would exceed the limit or the 65535-byte
    /// length field (RFC 8200 4.5, RFC 791).
    TooLarge,
    /// Holding the fragment would exceed [`ReassemblyLimits::max_bytes`];
    /// the datagram it belongs to is discarded as well.
    MemoryLimit,
    /// A new datagram would exceed [`ReassemblyLimits::max_datagrams`].
    TooManyDatagrams,
    /// The datagram was not complete within [`ReassemblyLimits::timeout`].
    TimedOut,
    /// The output buffer can not hold the result.
    BufferTooSmall,
    /// The packet to fragment has DF set (RFC 791): the caller answers with
    /// ICMP Fragmentation Needed instead.
    DontFragment,
    /// The MTU leaves no room for 8 bytes of data per fragment.
    MtuTooSmall,
    /// RFC 1812 4.3.2.7 / RFC 4443 2.4(e) forbid an ICMP error about this
    /// packet (an ICMP error itself, a non-initial fragment, a source that
    /// does not name a single node).
    IcmpNotAllowed,
}

impl FragDrop {
    /// All reasons, in the order of [`FragDrop::index`].
    pub const ALL: [FragDrop; 10] = [
        FragDrop::Malformed,
        FragDrop::Overlap,
        FragDrop::TooLarge,
        FragDrop::MemoryLimit,
        FragDrop::TooManyDatagrams,
        FragDrop::TimedOut,
        FragDrop::BufferTooSmall,
        FragDrop::DontFragment,
        FragDrop::MtuTooSmall,
        FragDrop::IcmpNotAllowed,
    ];

    /// The snake_case name used for counters.
    pub fn name(self) -> &'static str {
        match self {
            FragDrop::Malformed => "malformed",
            FragDrop::Overlap => "overlap",
            FragDrop::TooLarge => "too_large",
            FragDrop::MemoryLimit => "memory_limit",
            FragDrop::TooManyDatagrams => "too_many_datagrams",
            FragDrop::TimedOut => "timed_out",
            FragDrop::BufferTooSmall => "buffer_too_small",
            FragDrop::DontFragment => "dont_fragment",
            FragDrop::MtuTooSmall => "mtu_too_small",
            FragDrop::IcmpNotAllowed => "icmp_not_allowed",
        }
    }

    /// Position in [`FragDrop::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        match self {
            FragDrop::Malformed => 0,
            FragDrop::Overlap => 1,
            FragDrop::TooLarge => 2,
            FragDrop::MemoryLimit => 3,
            FragDrop::TooManyDatagrams => 4,
            FragDrop::TimedOut => 5,
            FragDrop::BufferTooSmall => 6,
            FragDrop::DontFragment => 7,
            FragDrop::MtuTooSmall => 8,
            FragDrop::IcmpNotAllowed => 9,
        }
    }
}

impl core::fmt::Display for FragDrop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FragDrop::Malformed => "malformed fragment",
            FragDrop::Overlap => "overlapping fragment",
            FragDrop::TooLarge => "reassembled datagram too large",
            FragDrop::MemoryLimit => "reassembly memory limit reached",
            FragDrop::TooManyDatagrams => "too many datagrams in reassembly",
            FragDrop::TimedOut => "reassembly timed out",
            FragDrop::BufferTooSmall => "output buffer too small",
            FragDrop::DontFragment => "packet too big and DF set",
            FragDrop::MtuTooSmall => "MTU too small to fragment",
            FragDrop::IcmpNotAllowed => "no ICMP error allowed for this packet",
        })
    }
}

impl std::error::Error for FragDrop {}

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
            let fh = pkt.get(at..at + FRAGMENT_HEADER)?;
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
                data: &pkt[at + FRAGMENT_HEADER..],
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
    let mut next = *pkt.get(6)?;
    let mut field = 6;
    let mut at = IPV6_HEADER;
    while at < target {
        if !matches!(
            next,
            proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS
        ) {
            return None;
        }
        let hdr = pkt.get(at..at + 2)?;
        field = at;
        next = hdr[0];
        at += (usize::from(hdr[1]) + 1) * 8;
    }
    (at == target && next == proto::IPV6_FRAGMENT).then_some(field)
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

/// The IPv4 header for non-first fragments: the fixed header and the
/// options whose copy flag is set (RFC 791 3.1, "Options"), padded with
/// End of Option List to a multiple of 4. Returns its length.
fn ipv4_later_header(hdr: &[u8], out: &mut [u8; 60]) -> Result<usize, FragDrop> {
    out.fill(0);
    out[..IPV4_MIN_HEADER].copy_from_slice(&hdr[..IPV4_MIN_HEADER]);
    let mut n = IPV4_MIN_HEADER;
    let mut i = IPV4_MIN_HEADER;
    while i < hdr.len() {
        match hdr[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*hdr.get(i + 1).ok_or(FragDrop::Malformed)?);
                if len < 2 || i + len > hdr.len() {
                    return Err(FragDrop::Malformed);
                }
                if kind & 0x80 != 0 {
                    out[n..n + len].copy_from_slice(&hdr[i..i + len]);
                    n += len;
                }
                i += len;
            }
        }
    }
    let n = n.div_ceil(4) * 4;
    // n <= hdr.len() <= 60, so the IHL fits its nibble.
    out[0] = 0x40 | (n / 4) as u8;
    Ok(n)
}

/// Splits an IPv4 packet into fragments of at most `mtu` bytes (RFC 791
/// 2.3, 3.2): offsets are multiples of 8, the first fragment carries all
/// options and later ones only those with the copy flag set, the
/// identification is kept, and a packet that is itself a fragment is
/// fragmented further (offsets add up, the last piece keeps its MF).
///
/// A packet that fits is passed to `emit` unchanged. Each fragment is
/// written into `scratch` and passed to `emit` in order; returns the
/// number emitted. DF set is refused with [`FragDrop::DontFragment`].
pub fn fragment_ipv4(
    pkt: &[u8],
    mtu: usize,
    scratch: &mut PacketBuf,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, FragDrop> {
    let meta = ip::parse(pkt).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V4 {
        return Err(FragDrop::Malformed);
    }
    let pkt = pkt.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    if pkt.len() <= mtu {
        emit(pkt);
        return Ok(1);
    }
    let flags_off = u16::from_be_bytes([pkt[6], pkt[7]]);
    if flags_off & 0x4000 != 0 {
        return Err(FragDrop::DontFragment);
    }
    let orig_more = flags_off & 0x2000 != 0;
    let orig_off = usize::from(flags_off & 0x1fff);
    let ihl = meta.header_len;
    let (first_hdr, data) = pkt.split_at(ihl);
    let mut later = [0u8; 60];
    let later_len = ipv4_later_header(first_hdr, &mut later)?;
    let first_room = mtu.saturating_sub(ihl) & !7;
    let later_room = mtu.saturating_sub(later_len) & !7;
    if first_room == 0 || later_room == 0 {
        return Err(FragDrop::MtuTooSmall);
    }
    if orig_off + data.len().div_ceil(8) > 0x1fff + 1 {
        return Err(FragDrop::TooLarge);
    }
    let mut pos = 0;
    let mut count = 0;
    while pos < data.len() {
        let hdr = if pos == 0 {
            first_hdr
        } else {
            &later[..later_len]
        };
        let room = if pos == 0 { first_room } else { later_room };
        let chunk = room.min(data.len() - pos);
        let last = pos + chunk == data.len();
        let len = hdr.len() + chunk;
        let buf = scratch
            .reset_to_len(len)
            .map_err(|_| FragDrop::BufferTooSmall)?;
        buf[..hdr.len()].copy_from_slice(hdr);
        buf[hdr.len()..].copy_from_slice(&data[pos..pos + chunk]);
        let more = !last || orig_more;
        // Checked above: the offset fits 13 bits.
        let off = ((orig_off + pos / 8) & 0x1fff) as u16;
        let field = (flags_off & 0x8000) | if more { 0x2000 } else { 0 } | off;
        buf[6..8].copy_from_slice(&field.to_be_bytes());
        ip::set_total_len(buf, len);
        emit(scratch.data());
        count += 1;
        pos += chunk;
    }
    Ok(count)
}

/// Splits an IPv6 packet into fragments of at most `mtu` bytes (RFC 8200
/// 4.5). The unfragmentable part, repeated in every fragment, is the IPv6
/// header and the extension headers up to and including the last Routing
/// header, or the Hop-by-Hop header when there is no Routing header. A
/// Fragment header with identification `ident` follows it.
///
/// A packet that fits is passed to `emit` unchanged. A packet that already
/// has a Fragment header in its unfragmentable chain is refused
/// ([`FragDrop::Malformed`]): only the source fragments in IPv6. An MTU
/// that would split the header chain (RFC 7112), counting the first 8 bytes
/// of the upper-layer header, is refused with [`FragDrop::MtuTooSmall`].
pub fn fragment_ipv6(
    pkt: &[u8],
    mtu: usize,
    ident: u32,
    scratch: &mut PacketBuf,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, FragDrop> {
    let meta = ip::parse(pkt).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V6 || meta.frag.is_some() {
        return Err(FragDrop::Malformed);
    }
    let pkt = pkt.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    if pkt.len() <= mtu {
        emit(pkt);
        return Ok(1);
    }
    // Find the end of the unfragmentable part and the Next Header field
    // that names the first fragmentable header.
    let mut next = pkt[6];
    let mut at = IPV6_HEADER;
    let mut unfrag_end = IPV6_HEADER;
    let mut unfrag_field = 6;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            proto::IPV6_HOP_BY_HOP | proto::IPV6_ROUTING | proto::IPV6_DEST_OPTS => {
                let hdr = pkt.get(at..at + 2).ok_or(FragDrop::Malformed)?;
                let len = (usize::from(hdr[1]) + 1) * 8;
                if at + len > pkt.len() {
                    return Err(FragDrop::Malformed);
                }
                if next == proto::IPV6_ROUTING
                    || (next == proto::IPV6_HOP_BY_HOP && at == IPV6_HEADER)
                {
                    unfrag_end = at + len;
                    unfrag_field = at;
                }
                next = hdr[0];
                at += len;
            }
            proto::IPV6_FRAGMENT => return Err(FragDrop::Malformed),
            _ => break,
        }
    }
    let (unfrag, rest) = pkt.split_at(unfrag_end);
    let first_next = unfrag[unfrag_field];
    let room = mtu.saturating_sub(unfrag_end + FRAGMENT_HEADER) & !7;
    // RFC 7112: the first fragment carries the whole header chain; here,
    // through the first 8 bytes of the upper-layer header.
    let chain = (meta.header_len + 8)
        .min(pkt.len())
        .saturating_sub(unfrag_end);
    if room == 0 || chain > room {
        return Err(FragDrop::MtuTooSmall);
    }
    let mut pos = 0;
    let mut count = 0;
    while pos < rest.len() {
        let chunk = room.min(rest.len() - pos);
        let more = pos + chunk < rest.len();
        let len = unfrag_end + FRAGMENT_HEADER + chunk;
        let buf = scratch
            .reset_to_len(len)
            .map_err(|_| FragDrop::BufferTooSmall)?;
        buf[..unfrag_end].copy_from_slice(unfrag);
        buf[unfrag_field] = proto::IPV6_FRAGMENT;
        // pos < rest.len() <= 65535 (the Payload Length field).
        let off_field = (pos as u16 & 0xfff8) | u16::from(more);
        let fh = &mut buf[unfrag_end..unfrag_end + FRAGMENT_HEADER];
        fh[0] = first_next;
        fh[1] = 0;
        fh[2..4].copy_from_slice(&off_field.to_be_bytes());
        fh[4..8].copy_from_slice(&ident.to_be_bytes());
        buf[unfrag_end + FRAGMENT_HEADER..].copy_from_slice(&rest[pos..pos + chunk]);
        ip::set_total_len(buf, len);
        emit(scratch.data());
        count += 1;
        pos += chunk;
    }
    Ok(count)
}

/// Whether an IPv4 address names a single node that may get an ICMP error
/// (RFC 1812 4.3.2.7: not 0/8, loopback, multicast, class E, broadcast).
fn ipv4_unicast(a: [u8; 4]) -> bool {
    !matches!(a[0], 0 | 127 | 224..=255)
}

/// ICMPv4 Destination Unreachable, code 4 "fragmentation needed and DF
/// set" (RFC 792), with the next-hop MTU (RFC 1191 4), from `src` to the
/// original packet's source, quoting the original IP header and as much of
/// its data as keeps the error within 576 bytes (RFC 1812 4.3.2.3).
///
/// Refused with [`FragDrop::IcmpNotAllowed`] when RFC 1812 4.3.2.7 forbids
/// the error: the original is an ICMP error, a non-initial fragment, sent
/// to a multicast or broadcast address, or from an address that does not
/// name a single node.
pub fn icmpv4_frag_needed(
    original: &[u8],
    next_hop_mtu: u16,
    src: [u8; 4],
    out: &mut PacketBuf,
) -> Result<(), FragDrop> {
    let meta = ip::parse(original).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V4 {
        return Err(FragDrop::Malformed);
    }
    let original = original.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    let mut orig_src = [0u8; 4];
    orig_src.copy_from_slice(&original[12..16]);
    let orig_dst = [original[16], original[17], original[18], original[19]];
    let icmp_error = meta.proto == proto::ICMP
        && !meta.is_later_fragment()
        && original
            .get(meta.header_len)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    if meta.is_later_fragment() || icmp_error || !ipv4_unicast(orig_src) || !ipv4_unicast(orig_dst)
    {
        return Err(FragDrop::IcmpNotAllowed);
    }
    let quote = original.len().min(ICMPV4_ERROR_MAX - IPV4_MIN_HEADER - 8);
    let len = IPV4_MIN_HEADER + 8 + quote;
    let buf = out
        .reset_to_len(len)
        .map_err(|_| FragDrop::BufferTooSmall)?;
    // len <= 576.
    ip::emit_ipv4_header(
        buf,
        src,
        orig_src,
        proto::ICMP,
        len as u16,
        ICMP_HOP_LIMIT,
        0,
        0,
        false,
    );
    let icmp = &mut buf[IPV4_MIN_HEADER..];
    icmp[..4].copy_from_slice(&[3, 4, 0, 0]);
    icmp[4..6].copy_from_slice(&[0, 0]);
    icmp[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quote]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// ICMPv6 Packet Too Big (RFC 4443 3.2) with `mtu`, from `src` to the
/// original packet's source, quoting as much of the original as keeps the
/// error within 1280 bytes, checksummed with the pseudo-header (RFC 4443
/// 2.3).
///
/// Refused with [`FragDrop::IcmpNotAllowed`] when RFC 4443 2.4(e) forbids
/// it: the original is an ICMPv6 error, or its source is unspecified or
/// multicast. (Packet Too Big is allowed for multicast destinations.)
pub fn icmpv6_packet_too_big(
    original: &[u8],
    mtu: u32,
    src: [u8; 16],
    out: &mut PacketBuf,
) -> Result<(), FragDrop> {
    let meta = ip::parse(original).map_err(|_| FragDrop::Malformed)?;
    if meta.version != IpVersion::V6 {
        return Err(FragDrop::Malformed);
    }
    let original = original.get(..meta.total_len).ok_or(FragDrop::Malformed)?;
    let mut orig_src = [0u8; 16];
    orig_src.copy_from_slice(&original[8..24]);
    let icmp_error = meta.proto == proto::ICMPV6
        && !meta.is_later_fragment()
        && original.get(meta.header_len).is_some_and(|t| *t < 128);
    if icmp_error || orig_src == [0; 16] || orig_src[0] == 0xff {
        return Err(FragDrop::IcmpNotAllowed);
    }
    let quote = original.len().min(ICMPV6_ERROR_MAX - IPV6_HEADER - 8);
    let icmp_len = 8 + quote;
    let buf = out
        .reset_to_len(IPV6_HEADER + icmp_len)
        .map_err(|_| FragDrop::BufferTooSmall)?;
    // icmp_len <= 1240.
    ip::emit_ipv6_header(
        buf,
        src,
        orig_src,
        proto::ICMPV6,
        icmp_len as u16,
        ICMP_HOP_LIMIT,
        0,
    );
    let icmp = &mut buf[IPV6_HEADER..];
    icmp[..4].copy_from_slice(&[2, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(&original[..quote]);
    let acc = checksum::pseudo_header(&src, &orig_src, proto::ICMPV6, icmp_len as u32);
    let c = checksum::finish(checksum::sum(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC4: [u8; 4] = [192, 0, 2, 1];
    const DST4: [u8; 4] = [198, 51, 100, 2];
    const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// An ESP-over-IPv4 datagram, 192.0.2.1 -> 198.51.100.2, ident 0xbeef,
    /// 24 bytes of data 0..24.
    const V4_WHOLE: [u8; 44] = [
        0x45, 0x00, 0x00, 0x2c, 0xbe, 0xef, 0x00, 0x00, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198,
        51, 100, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23,
    ];
    /// Its first fragment: MF, data 0..16.
    const V4_FRAG1: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0xbe, 0xef, 0x20, 0x00, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198,
        51, 100, 2, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ];
    /// Its second fragment: offset 16 (2 units), last, data 16..24.
    const V4_FRAG2: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0xbe, 0xef, 0x00, 0x02, 0x40, 0x32, 0x00, 0x00, 192, 0, 2, 1, 198,
        51, 100, 2, 16, 17, 18, 19, 20, 21, 22, 23,
    ];

    /// IPv6 ESP datagram with a Destination Options header (PadN) before
    /// the ESP data 0..24.
    const V6_WHOLE: [u8; 72] = [
        0x60, 0, 0, 0, 0x00, 0x20, 60, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        50, 0, 1, 4, 0, 0, 0, 0, // Destination Options, next ESP
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    ];
    /// First fragment: Destination Options (next Fragment), Fragment header
    /// (next ESP, offset 0, M, ident 0x01020304), data 0..16.
    const V6_FRAG1: [u8; 72] = [
        0x60, 0, 0, 0, 0x00, 0x20, 60, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        44, 0, 1, 4, 0, 0, 0, 0, //
        50, 0, 0x00, 0x01, 1, 2, 3, 4, //
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    ];
    /// Second fragment: offset 16, last, data 16..24.
    const V6_FRAG2: [u8; 64] = [
        0x60, 0, 0, 0, 0x00, 0x18, 60, 64, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        44, 0, 1, 4, 0, 0, 0, 0, //
        50, 0, 0x00, 0x10, 1, 2, 3, 4, //
        16, 17, 18, 19, 20, 21, 22, 23,
    ];

    /// A copy of an IPv4 fixture with its header checksum filled in.
    fn v4(fixture: &[u8]) -> Vec<u8> {
        let mut p = fixture.to_vec();
        ip::ipv4_fill_checksum(&mut p);
        p
    }

    /// An IPv4 fragment of the V4_WHOLE datagram (ident `ident`) at byte
    /// offset `off` with `data`.
    fn v4_frag(ident: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        ip::emit_ipv4_header(&mut p, SRC4, DST4, 50, 0, 64, ident, 0, false);
        p.extend_from_slice(data);
        let field = (off / 8) as u16 | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&field.to_be_bytes());
        let len = p.len();
        ip::set_total_len(&mut p, len);
        p
    }

    fn feed(
        r: &mut Reassembler,
        pkt: &[u8],
        now: Timestamp,
        out: &mut PacketBuf,
    ) -> Result<Reassembly, FragDrop> {
        let meta = ip::parse(pkt).unwrap();
        assert!(meta.frag.is_some());
        r.handle_fragment(pkt, &meta, now, out)
    }

    fn big_buf() -> PacketBuf {
        PacketBuf::with_capacity(70_000, 64)
    }

    #[test]
    fn names_are_distinct_and_indexed() {
        for (i, r) in FragDrop::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(r.name().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
        let mut names: Vec<_> = FragDrop::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FragDrop::ALL.len());
    }

    #[test]
    fn v4_in_order() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG1), t, &mut out),
            Ok(Reassembly::Held)
        );
        assert_eq!((r.in_progress(), r.bytes_held()), (1, 36));
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
            Ok(Reassembly::Complete)
        );
        assert_eq!(out.data(), &v4(&V4_WHOLE)[..]);
        assert_eq!(checksum::checksum(&out.data()[..20]), 0);
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn v4_out_of_order_keeps_first_header_and_df() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        let mut f1 = V4_FRAG1;
        f1[6] |= 0x40; // DF on the first fragment only
        f1[8] = 7; // its TTL
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
            Ok(Reassembly::Held)
        );
        assert_eq!(
            feed(&mut r, &v4(&f1), t, &mut out),
            Ok(Reassembly::Complete)
        );
        let mut want = V4_WHOLE;
        want[6] = 0x40;
        want[8] = 7;
        assert_eq!(out.data(), &v4(&want)[..]);
    }

    #[test]
    fn v4_duplicate_drops_the_datagram() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG1), t, &mut out),
            Err(FragDrop::Overlap)
        );
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        assert_eq!(r.dropped(FragDrop::Overlap), 2);
        // The rest of it can not complete anything now.
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
            Ok(Reassembly::Held)
        );
    }

    #[test]
    fn v4_partial_overlap_and_second_last_fragment() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &v4_frag(1, 16, true, &[0; 16]), t, &mut out).unwrap();
        // 8..24 overlaps 16..32 from the front.
        let e = feed(&mut r, &v4_frag(1, 8, true, &[0; 16]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Overlap));
        feed(&mut r, &v4_frag(2, 16, true, &[0; 16]), t, &mut out).unwrap();
        // 24..32 inside 16..32.
        let e = feed(&mut r, &v4_frag(2, 24, false, &[0; 8]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Overlap));
        feed(&mut r, &v4_frag(3, 32, false, &[0; 8]), t, &mut out).unwrap();
        // A second, different end.
        let e = feed(&mut r, &v4_frag(3, 48, false, &[0; 8]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Malformed));
        feed(&mut r, &v4_frag(4, 32, false, &[0; 8]), t, &mut out).unwrap();
        // Data past the end.
        let e = feed(&mut r, &v4_frag(4, 40, true, &[0; 8]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Malformed));
        feed(&mut r, &v4_frag(5, 32, true, &[0; 8]), t, &mut out).unwrap();
        // A last fragment ending before held data.
        let e = feed(&mut r, &v4_frag(5, 8, false, &[0; 8]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Malformed));
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    }

    #[test]
    fn v4_malformed_and_too_large_fragments_alone_are_dropped() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
        let e = feed(&mut r, &v4_frag(0xbeef, 16, true, &[0; 7]), t, &mut out);
        assert_eq!(e, Err(FragDrop::Malformed));
        let e = feed(
            &mut r,
            &v4_frag(0xbeef, 65_528, false, &[0; 8]),
            t,
            &mut out,
        );
        assert_eq!(e, Err(FragDrop::TooLarge));
        // Neither touched the datagram in progress.
        assert_eq!(r.in_progress(), 1);
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
            Ok(Reassembly::Complete)
        );
        assert_eq!(r.dropped(FragDrop::Malformed), 1);
        assert_eq!(r.dropped(FragDrop::TooLarge), 1);
        // A packet that is not a fragment.
        let meta = ip::parse(&V4_WHOLE).unwrap();
        let e = r.handle_fragment(&V4_WHOLE, &meta, t, &mut out);
        assert_eq!(e, Err(FragDrop::Malformed));
    }

    #[test]
    fn missing_piece_times_out() {
        let limits = ReassemblyLimits::default();
        let mut r = Reassembler::new(limits);
        let mut out = PacketBuf::new();
        let t0 = Timestamp::from_secs(100);
        feed(&mut r, &v4_frag(1, 0, true, &[0; 8]), t0, &mut out).unwrap();
        feed(&mut r, &v4_frag(1, 16, false, &[0; 8]), t0, &mut out).unwrap();
        let t1 = Timestamp::from_secs(110);
        feed(&mut r, &v4_frag(2, 0, true, &[0; 8]), t1, &mut out).unwrap();
        assert_eq!(r.poll_timeout(), Some(t0.saturating_add(limits.timeout)));
        assert_eq!(r.handle_timeout(Timestamp::from_secs(159)), 0);
        assert_eq!(r.handle_timeout(Timestamp::from_secs(160)), 2);
        assert_eq!((r.in_progress(), r.bytes_held()), (1, 28));
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(170)));
        assert_eq!(r.handle_timeout(Timestamp::from_secs(1000)), 1);
        assert_eq!(r.dropped(FragDrop::TimedOut), 3);
        assert_eq!(
            (r.in_progress(), r.bytes_held(), r.poll_timeout()),
            (0, 0, None)
        );
    }

    #[test]
    fn fragment_for_an_expired_datagram_starts_a_new_one() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        feed(&mut r, &v4(&V4_FRAG1), Timestamp::ZERO, &mut out).unwrap();
        let late = Timestamp::from_secs(61);
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG1), late, &mut out),
            Ok(Reassembly::Held)
        );
        assert_eq!(r.dropped(FragDrop::TimedOut), 1);
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), late, &mut out),
            Ok(Reassembly::Complete)
        );
    }

    #[test]
    fn memory_limit() {
        let limits = ReassemblyLimits {
            max_bytes: 60,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
        // A new datagram that does not fit is refused alone.
        let e = feed(&mut r, &v4_frag(7, 0, true, &[0; 32]), t, &mut out);
        assert_eq!(e, Err(FragDrop::MemoryLimit));
        assert_eq!((r.in_progress(), r.bytes_held()), (1, 36));
        // The rest of a datagram that does not fit discards it.
        let e = feed(&mut r, &v4_frag(0xbeef, 16, true, &[0; 16]), t, &mut out);
        assert_eq!(e, Err(FragDrop::MemoryLimit));
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        assert_eq!(r.dropped(FragDrop::MemoryLimit), 3);
    }

    #[test]
    fn too_many_datagrams() {
        let limits = ReassemblyLimits {
            max_datagrams: 2,
            ..ReassemblyLimits::default()
        };
        let mut r = Reassembler::new(limits);
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &v4_frag(1, 0, true, &[0; 8]), t, &mut out).unwrap();
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
        let e = feed(&mut r, &v4_frag(3, 0, true, &[0; 8]), t, &mut out);
        assert_eq!(e, Err(FragDrop::TooManyDatagrams));
        // Fragments of datagrams in progress are still taken.
        assert_eq!(
            feed(&mut r, &v4(&V4_FRAG2), t, &mut out),
            Ok(Reassembly::Complete)
        );
        assert_eq!(
            feed(&mut r, &v4_frag(3, 0, true, &[0; 8]), t, &mut out),
            Ok(Reassembly::Held)
        );
    }

    #[test]
    fn output_buffer_too_small_discards_the_datagram() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::with_capacity(40, 0);
        let t = Timestamp::ZERO;
        feed(&mut r, &v4(&V4_FRAG1), t, &mut out).unwrap();
        let e = feed(&mut r, &v4(&V4_FRAG2), t, &mut out);
        assert_eq!(e, Err(FragDrop::BufferTooSmall));
        assert_eq!(r.dropped(FragDrop::BufferTooSmall), 2);
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
    }

    #[test]
    fn v6_fragment_after_destination_options() {
        for order in [[0, 1], [1, 0]] {
            let mut r = Reassembler::new(ReassemblyLimits::default());
            let mut out = PacketBuf::new();
            let frags: [&[u8]; 2] = [&V6_FRAG1, &V6_FRAG2];
            let t = Timestamp::ZERO;
            assert_eq!(
                feed(&mut r, frags[order[0]], t, &mut out),
                Ok(Reassembly::Held)
            );
            assert_eq!(
                feed(&mut r, frags[order[1]], t, &mut out),
                Ok(Reassembly::Complete)
            );
            assert_eq!(out.data(), &V6_WHOLE[..]);
            let m = ip::parse(out.data()).unwrap();
            assert_eq!((m.proto, m.header_len, m.frag), (50, 48, None));
        }
    }

    #[test]
    fn v6_overlap_and_keys() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = PacketBuf::new();
        let t = Timestamp::ZERO;
        feed(&mut r, &V6_FRAG1, t, &mut out).unwrap();
        // Same ident, other source: another datagram.
        let mut other = V6_FRAG2;
        other[23] = 9;
        assert_eq!(feed(&mut r, &other, t, &mut out), Ok(Reassembly::Held));
        assert_eq!(r.in_progress(), 2);
        // Offset 8, 8 bytes: inside the first fragment's data.
        let mut inside = V6_FRAG2;
        inside[51] = 0x09; // offset 8, M
        assert_eq!(feed(&mut r, &inside, t, &mut out), Err(FragDrop::Overlap));
        assert_eq!(r.in_progress(), 1);
    }

    #[test]
    fn fragment_ipv4_refuses_df_and_tiny_mtu() {
        let mut whole = V4_WHOLE;
        whole[6] = 0x40;
        let mut scratch = PacketBuf::new();
        let mut n = 0;
        let e = fragment_ipv4(&v4(&whole), 40, &mut scratch, &mut |_| n += 1);
        assert_eq!(e, Err(FragDrop::DontFragment));
        let e = fragment_ipv4(&v4(&V4_WHOLE), 27, &mut scratch, &mut |_| n += 1);
        assert_eq!(e, Err(FragDrop::MtuTooSmall));
        assert_eq!(n, 0);
        // DF does not matter when the packet fits.
        let ok = fragment_ipv4(&v4(&whole), 44, &mut scratch, &mut |p| {
            assert_eq!(p, &v4(&whole)[..]);
            n += 1;
        });
        assert_eq!((ok, n), (Ok(1), 1));
    }

    #[test]
    fn fragment_ipv4_fixture() {
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::new();
        let n = fragment_ipv4(&v4(&V4_WHOLE), 36, &mut scratch, &mut |p| {
            frags.push(p.to_vec())
        });
        assert_eq!(n, Ok(2));
        assert_eq!(frags, [v4(&V4_FRAG1), v4(&V4_FRAG2)]);
    }

    #[test]
    fn fragment_ipv4_copies_only_copied_options_and_refragments() {
        // Stream ID (copied), NOP, Record Route (not copied).
        let opts = [0x88, 4, 0x12, 0x34, 1, 7, 7, 4, 0, 0, 0, 0];
        let mut p = vec![0u8; 20];
        ip::emit_ipv4_header(&mut p, SRC4, DST4, 50, 0, 64, 9, 0, false);
        p.extend_from_slice(&opts);
        p[0] = 0x48;
        p.extend((0..100).map(|i| i as u8));
        // Already a fragment at offset 64 with MF.
        p[6..8].copy_from_slice(&(0x2000u16 | 8).to_be_bytes());
        let len = p.len();
        ip::set_total_len(&mut p, len);
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::new();
        fragment_ipv4(&p, 72, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
        let mut at = 64;
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 72);
            let m = ip::parse(f).unwrap();
            assert_eq!(checksum::checksum(&f[..m.header_len]), 0);
            let fi = m.frag.unwrap();
            assert_eq!(fi.offset, at);
            assert!(fi.more, "the original had MF set");
            if i == 0 {
                assert_eq!(
                    &f[..32],
                    &{
                        let mut h = p[..32].to_vec();
                        h[2..4].copy_from_slice(&(f.len() as u16).to_be_bytes());
                        ip::ipv4_fill_checksum(&mut h);
                        h
                    }[..]
                );
            } else {
                assert_eq!(m.header_len, 24);
                assert_eq!(&f[20..24], &[0x88, 4, 0x12, 0x34]);
            }
            at += (f.len() - m.header_len) as u32;
        }
        assert_eq!(at, 64 + 100);
    }

    /// A permutation of `0..n` from `seed` (Fisher-Yates with an LCG).
    fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = (seed >> 33) as usize % (i + 1);
            v.swap(i, j);
        }
        v
    }

    fn reassemble_all(frags: &[Vec<u8>], seed: u64) -> PacketBuf {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut out = big_buf();
        let order = shuffled(frags.len(), seed);
        for (k, &i) in order.iter().enumerate() {
            let res = feed(&mut r, &frags[i], Timestamp::ZERO, &mut out);
            let want = if k + 1 == order.len() {
                Reassembly::Complete
            } else {
                Reassembly::Held
            };
            assert_eq!(res, Ok(want));
        }
        assert_eq!((r.in_progress(), r.bytes_held()), (0, 0));
        out
    }

    fn v6_packet(ext: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        let mut chain = Vec::new();
        let first = match ext {
            // Hop-by-Hop (PadN), then ESP.
            1 => {
                chain.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]);
                0
            }
            // Hop-by-Hop, Destination Options, Routing (type 4, 0 left,
            // one address), Destination Options, then ESP.
            2 => {
                chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
                chain.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]);
                chain.extend_from_slice(&[60, 2, 4, 0, 1, 0, 0, 0]);
                chain.extend_from_slice(&[0xaa; 16]);
                chain.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]);
                0
            }
            _ => 50,
        };
        let plen = (chain.len() + payload.len()) as u16;
        ip::emit_ipv6_header(&mut p, SRC6, DST6, first, plen, 64, 0);
        p.extend_from_slice(&chain);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn fragment_ipv6_keeps_the_routing_header_unfragmentable() {
        let p = v6_packet(2, &[7; 300]);
        let mut frags = Vec::new();
        let mut scratch = PacketBuf::new();
        let n = fragment_ipv6(&p, 200, 0x55, &mut scratch, &mut |f| frags.push(f.to_vec()));
        assert_eq!(n, Ok(frags.len()));
        for f in &frags {
            assert!(f.len() <= 200);
            let m = ip::parse(f).unwrap();
            // Hop-by-Hop (8) + Destination Options (8) + Routing (24).
            assert_eq!(m.frag.unwrap().header_at, 80);
            // The Routing header's Next Header names the Fragment header.
            assert_eq!(f[56], 44);
            assert_eq!(
                &f[..80],
                &{
                    let mut h = p[..80].to_vec();
                    h[4..6].copy_from_slice(&((f.len() - 40) as u16).to_be_bytes());
                    h[56] = 44;
                    h
                }[..]
            );
        }
        assert_eq!(reassemble_all(&frags, 1).data(), &p[..]);
        // Room for 8 bytes only: the trailing Destination Options header
        // and the ESP header would be split.
        let e = fragment_ipv6(&p, 96, 0x55, &mut scratch, &mut |_| {});
        assert_eq!(e, Err(FragDrop::MtuTooSmall));
    }

    #[test]
    fn icmpv4_frag_needed_checksums_and_quote() {
        let mut orig = vec![0u8; 1500];
        ip::emit_ipv4_header(&mut orig, DST4, SRC4, 17, 1500, 63, 77, 0, true);
        for (i, b) in orig[20..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let me = [203, 0, 113, 1];
        let mut out = PacketBuf::new();
        icmpv4_frag_needed(&orig, 1400, me, &mut out).unwrap();
        let o = out.data();
        assert_eq!(o.len(), 576);
        let m = ip::parse(o).unwrap();
        assert_eq!((m.proto, m.frag, m.total_len), (1, None, 576));
        assert_eq!(checksum::checksum(&o[..20]), 0);
        assert_eq!(checksum::checksum(&o[20..]), 0);
        assert_eq!(&o[12..16], &me);
        assert_eq!(&o[16..20], &DST4);
        assert_eq!(&o[20..22], &[3, 4]);
        assert_eq!(&o[24..28], &[0, 0, 0x05, 0x78]);
        assert_eq!(&o[28..], &orig[..548]);
        // A short original is quoted whole.
        icmpv4_frag_needed(&v4(&V4_WHOLE), 576, me, &mut out).unwrap();
        assert_eq!(&out.data()[28..], &v4(&V4_WHOLE)[..]);
        assert_eq!(checksum::checksum(&out.data()[20..]), 0);
    }

    #[test]
    fn icmpv4_not_about_errors_later_fragments_or_multicast() {
        let mut out = PacketBuf::new();
        let me = [203, 0, 113, 1];
        let mut err = vec![0u8; 28];
        ip::emit_ipv4_header(&mut err, SRC4, DST4, 1, 28, 64, 1, 0, false);
        err[20] = 3;
        assert_eq!(
            icmpv4_frag_needed(&err, 1400, me, &mut out),
            Err(FragDrop::IcmpNotAllowed)
        );
        err[20] = 8; // echo request: fine
        assert!(icmpv4_frag_needed(&err, 1400, me, &mut out).is_ok());
        assert_eq!(
            icmpv4_frag_needed(&v4(&V4_FRAG2), 1400, me, &mut out),
            Err(FragDrop::IcmpNotAllowed)
        );
        let mut mc = V4_WHOLE;
        mc[16] = 239;
        assert_eq!(
            icmpv4_frag_needed(&v4(&mc), 1400, me, &mut out),
            Err(FragDrop::IcmpNotAllowed)
        );
    }

    #[test]
    fn icmpv6_packet_too_big_checksums_and_quote() {
        let payload: Vec<u8> = (0..1460).map(|i| i as u8).collect();
        let orig = v6_packet(0, &payload);
        let me = [
            0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
        ];
        let mut out = PacketBuf::new();
        icmpv6_packet_too_big(&orig, 1400, me, &mut out).unwrap();
        let o = out.data();
        assert_eq!(o.len(), 1280);
        let m = ip::parse(o).unwrap();
        assert_eq!((m.proto, m.header_len, m.total_len), (58, 40, 1280));
        assert_eq!(&o[8..24], &me);
        assert_eq!(&o[24..40], &SRC6);
        assert_eq!(&o[40..48], &[2, 0, o[42], o[43], 0, 0, 0x05, 0x78]);
        let acc = checksum::pseudo_header(&me, &SRC6, 58, 1240);
        assert_eq!(checksum::finish(checksum::sum(acc, &o[40..])), 0);
        assert_eq!(&o[48..], &orig[..1232]);
        // ICMPv6 errors are not answered; informational messages are.
        let mut err = v6_packet(0, &[1, 0, 0, 0, 0, 0, 0, 0]);
        err[6] = 58;
        assert_eq!(
            icmpv6_packet_too_big(&err, 1280, me, &mut out),
            Err(FragDrop::IcmpNotAllowed)
        );
        err[40] = 128;
        icmpv6_packet_too_big(&err, 1280, me, &mut out).unwrap();
        assert_eq!(&out.data()[48..], &err[..]);
        let mut mc = orig.clone();
        mc[8] = 0xff;
        assert_eq!(
            icmpv6_packet_too_big(&mc, 1280, me, &mut out),
            Err(FragDrop::IcmpNotAllowed)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn fragment_ipv4_round_trip(
            len in 0usize..4000,
            mtu in 68usize..1600,
            ident in any::<u16>(),
            with_options in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let mut p = vec![0u8; 20];
            ip::emit_ipv4_header(&mut p, SRC4, DST4, 50, 0, 64, ident, 0x28, false);
            if with_options {
                p.extend_from_slice(&[0x88, 4, 0x12, 0x34, 1, 7, 7, 4, 0, 0, 0, 0]);
                p[0] = 0x48;
            }
            p.extend((0..len).map(|i| (i * 7 + usize::from(ident)) as u8));
            let total = p.len();
            ip::set_total_len(&mut p, total);
            let mut frags = Vec::new();
            let mut scratch = PacketBuf::new();
            let n = fragment_ipv4(&p, mtu, &mut scratch, &mut |f| frags.push(f.to_vec())).unwrap();
            prop_assert_eq!(n, frags.len());
            if n == 1 {
                prop_assert_eq!(&frags[0], &p);
                return Ok(());
            }
            for f in &frags {
                prop_assert!(f.len() <= mtu);
                let m = ip::parse(f).unwrap();
                prop_assert_eq!(checksum::checksum(&f[..m.header_len]), 0);
                prop_assert_eq!(m.frag.unwrap().offset % 8, 0);
            }
            let whole = reassemble_all(&frags, seed);
            prop_assert_eq!(whole.data(), &p[..]);
        }

        #[test]
        fn fragment_ipv6_round_trip(
            len in 0usize..4000,
            mtu in 120usize..1600,
            ident in any::<u32>(),
            ext in 0u8..3,
            seed in any::<u64>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let p = v6_packet(ext, &payload);
            let mut frags = Vec::new();
            let mut scratch = PacketBuf::new();
            let n = fragment_ipv6(&p, mtu, ident, &mut scratch, &mut |f| frags.push(f.to_vec()))
                .unwrap();
            prop_assert_eq!(n, frags.len());
            if n == 1 {
                prop_assert_eq!(&frags[0], &p);
                return Ok(());
            }
            for f in &frags {
                prop_assert!(f.len() <= mtu);
                let fi = ip::parse(f).unwrap().frag.unwrap();
                prop_assert_eq!(fi.ident, ident);
            }
            let whole = reassemble_all(&frags, seed);
            prop_assert_eq!(whole.data(), &p[..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            pkts in proptest::collection::vec(
                (0u8..2, proptest::collection::vec(any::<u8>(), 0..160)),
                1..24,
            ),
            step in 0u64..40,
        ) {
            let limits = ReassemblyLimits {
                max_bytes: 600,
                max_datagrams: 3,
                timeout: Duration::from_secs(30),
                max_datagram_len: 65_535,
            };
            let mut r = Reassembler::new(limits);
            let mut out = PacketBuf::with_capacity(400, 16);
            let mut scratch = PacketBuf::new();
            for (k, (kind, mut bytes)) in pkts.into_iter().enumerate() {
                // Steer most inputs towards fragments: a version nibble and,
                // for IPv4, a plausible length and the MF/offset bits.
                if let Some(b) = bytes.first_mut() {
                    *b = if kind == 0 { 0x45 | (*b & 0x0f) } else { 0x60 | (*b & 0x0f) };
                }
                if kind == 0 && bytes.len() >= 20 {
                    let l = bytes.len() as u16;
                    bytes[2..4].copy_from_slice(&l.to_be_bytes());
                    bytes[6] |= 0x20;
                } else if kind == 1 && bytes.len() >= 48 {
                    let l = (bytes.len() - 40) as u16;
                    bytes[4..6].copy_from_slice(&l.to_be_bytes());
                    bytes[6] = 44;
                }
                let now = Timestamp::from_secs(step * k as u64);
                if let Ok(meta) = ip::parse(&bytes) {
                    if meta.frag.is_some() {
                        if let Ok(Reassembly::Complete) = r.handle_fragment(&bytes, &meta, now, &mut out) {
                            prop_assert!(ip::parse(out.data()).is_ok());
                        }
                    }
                }
                prop_assert!(r.bytes_held() <= limits.max_bytes);
                prop_assert!(r.in_progress() <= limits.max_datagrams);
                r.handle_timeout(now);
                let _ = fragment_ipv4(&bytes, 68, &mut scratch, &mut |_| {});
                let _ = fragment_ipv6(&bytes, 100, 1, &mut scratch, &mut |_| {});
                let _ = icmpv4_frag_needed(&bytes, 1000, [10, 0, 0, 1], &mut scratch);
                let _ = icmpv6_packet_too_big(&bytes, 1280, [0x20; 16], &mut scratch);
            }
            if r.in_progress() == 0 {
                prop_assert_eq!(r.bytes_held(), 0);
            }
        }

        #[test]
        fn random_fragment_streams_keep_the_books(
            frags in proptest::collection::vec(
                (0u16..2, 0usize..5, 0usize..4, proptest::bool::weighted(0.7)),
                1..40,
            ),
        ) {
            let limits = ReassemblyLimits {
                max_bytes: 400,
                max_datagrams: 2,
                ..ReassemblyLimits::default()
            };
            let mut r = Reassembler::new(limits);
            let mut out = big_buf();
            let mut accepted = 0u64;
            let mut refused = 0u64;
            for (ident, off, len, more) in frags {
                let data: Vec<u8> = (0..len * 8).map(|i| i as u8).collect();
                let pkt = v4_frag(ident, off * 8, more, &data);
                let Ok(meta) = ip::parse(&pkt) else { continue };
                if meta.frag.is_none() {
                    continue;
                }
                match r.handle_fragment(&pkt, &meta, Timestamp::ZERO, &mut out) {
                    Ok(Reassembly::Complete) => {
                        accepted += 1;
                        let m = ip::parse(out.data()).unwrap();
                        prop_assert_eq!(m.frag, None);
                        prop_assert_eq!(checksum::checksum(&out.data()[..20]), 0);
                    }
                    Ok(Reassembly::Held) => accepted += 1,
                    Err(_) => refused += 1,
                }
                prop_assert!(r.bytes_held() <= limits.max_bytes);
                prop_assert!(r.in_progress() <= limits.max_datagrams);
            }
            let dropped: u64 = FragDrop::ALL.iter().map(|&d| r.dropped(d)).sum();
            prop_assert!(dropped >= refused);
            prop_assert!(dropped <= refused + accepted);
        }
    }
}
