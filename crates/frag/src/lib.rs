//! IP fragmentation, reassembly and the ICMP errors that stand in for
//! fragmentation, for the packet path around bitsgw's ESP engine.
//!
//! Inbound, fragments of ESP packets are reassembled before SA lookup
//! (RFC 4303 3.4.1: "reassembly is performed prior to IPsec processing"),
//! with bounded memory and time (RFC 791, RFC 8200 4.5) and every discarded
//! fragment counted under a [`FragDrop`] reason ([`reassembly`]).
//!
//! Outbound, a packet that is too large for the MTU after encapsulation is
//! either fragmented ([`fragment_ipv4`], [`fragment_ipv6`]) or, when the
//! inner packet may not be fragmented, answered with ICMP Fragmentation
//! Needed ([`icmpv4_frag_needed`]) or ICMPv6 Packet Too Big
//! ([`icmpv6_packet_too_big`]), as RFC 4301 section 8 describes. Rate
//! limiting of those ICMP messages (RFC 1812 4.3.2.8, RFC 4443 2.4(f)) is
//! the caller's job.
//!
//! Everything is sans-IO: time is a [`bitsgw_wire::Timestamp`] handed in,
//! packets are slices and caller-owned [`bitsgw_wire::PacketBuf`]s. IP
//! headers are read with [`bitsgw_wire::ip`] (one walk over the IPv6
//! extension headers) and protocol numbers come from [`bitsgw_wire::proto`].

pub mod fragment;
pub mod icmp;
pub mod reassembly;

pub use fragment::{fragment_ipv4, fragment_ipv6};
pub use icmp::{icmpv4_frag_needed, icmpv6_packet_too_big};
pub use reassembly::{Reassembler, Reassembly, ReassemblyLimits};

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

#[cfg(test)]
mod tests;
