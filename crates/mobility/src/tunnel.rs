//! The mobility tunnel stage, below IPsec (the seed's "DSMIPv6 tunnel
//! interface module"): encapsulation and decapsulation, the Home Address
//! option and the type 2 routing header, HoA <-> CoA re-addressing, NAT
//! detection bookkeeping, and classification of ESP packets.
//!
//! Of the IPsec stage it uses the read-only query API and nothing else:
//! this module is the only one in the crate that imports it.

use crate::binding::{BindingCache, CareOf, UdpPath};
use crate::classify::{EspClass, Heuristic};
use crate::counters::MobilityDrop;
use bitsgw_ipsec_query::sa::{Direction, Mode};
use bitsgw_ipsec_query::selector::{Addr, AddrSel, Family, FlowKey, NextLayer, ProtoSel};
use bitsgw_ipsec_query::IpsecQuery;
use bitsgw_wire::encap::{self, Outer, DSMIP_UDP_PORT};
use bitsgw_wire::ip::{self, IpMeta, IpVersion};
use bitsgw_wire::mh::mh_type;
use bitsgw_wire::mip6::{self, ICMPV6_MPA, ICMPV6_MPS};
use bitsgw_wire::proto;
use bitsgw_wire::{PacketBuf, Timestamp};
use rustc_hash::FxHashMap;

fn v6(a: [u8; 16]) -> Addr {
    Addr {
        family: Family::V6,
        bits: u128::from_be_bytes(a),
    }
}

/// The 16 bytes at `at`, if the packet has them.
fn addr16(pkt: &[u8], at: usize) -> Option<[u8; 16]> {
    pkt.get(at..at + 16)?.try_into().ok()
}

fn addr4(pkt: &[u8], at: usize) -> Option<[u8; 4]> {
    pkt.get(at..at + 4)?.try_into().ok()
}

/// The SPI of an ESP packet (after the IPv6 extension headers), if it is
/// one: ESP itself, never a UDP datagram (the tunnel stage takes UDP 4191
/// off first), and never a fragment other than the first.
fn esp_spi(pkt: &[u8], meta: &IpMeta) -> Option<u32> {
    bitsgw_wire::esp::esp_spi(pkt, meta, &[])
}

/// What the query API says about the signalling between two addresses,
/// seen from `local`: the SPI of the SA that protects the BU (MN) or BA
/// (HA) now, and the SPIs of the transport-mode SAs whose packets need a
/// Home Address option or a type 2 routing header (RFC 3776 3.1, 3.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signalling {
    binding: Option<u32>,
    transport: [Option<u32>; 2],
    /// The binding SA also protects other Mobility Header messages (BRR,
    /// BE): its SPI alone does not tell the BU or BA, which alone may
    /// carry a Home Address option or type 2 routing header (RFC 6275 6.1).
    binding_shared: bool,
}

/// Answers of the query API, kept until its generation changes (so the
/// per-packet cost is a hash lookup, and nothing is allocated once every
/// pair of addresses has been seen).
#[derive(Debug, Default)]
struct QueryCache {
    generation: u64,
    pairs: FxHashMap<([u8; 16], [u8; 16]), Signalling>,
    /// Inbound SPI -> the home address whose BUs its SA carries (Req #4);
    /// only SPIs the SAD holds are kept, so hostile SPIs can not grow it.
    bu_homes: FxHashMap<u32, Option<[u8; 16]>>,
}

impl QueryCache {
    /// Forgets every answer once the query generation moved on.
    fn follow(&mut self, q: &impl IpsecQuery) {
        if self.generation != q.generation() {
            self.pairs.clear();
            self.bu_homes.clear();
            self.generation = q.generation();
        }
    }

    /// [`bu_sa_home`], asked once per SPI and generation.
    fn bu_home(&mut self, q: &impl IpsecQuery, spi: u32) -> Option<[u8; 16]> {
        self.follow(q);
        if let Some(h) = self.bu_homes.get(&spi) {
            return *h;
        }
        q.inbound_sa(spi)?;
        let home = bu_sa_home(q, spi);
        self.bu_homes.insert(spi, home);
        home
    }

    /// The signalling SPIs from `local` to `remote`: `mh` is the MH type
    /// that carries the binding message that way (BU or BA), `icmp` the
    /// prefix discovery message (MPS or MPA).
    fn signalling(
        &mut self,
        q: &impl IpsecQuery,
        local: [u8; 16],
        remote: [u8; 16],
        mh: u8,
        icmp: u8,
    ) -> Signalling {
        self.follow(q);
        *self.pairs.entry((local, remote)).or_insert_with(|| {
            let key = |p: u8, next: NextLayer| FlowKey {
                local: v6(local),
                remote: v6(remote),
                proto: p,
                next,
            };
            let binding = q.outbound_sa_for_flow(&key(proto::MH, NextLayer::Mh { ty: mh }));
            let prefix =
                q.outbound_sa_for_flow(&key(proto::ICMPV6, NextLayer::Icmp { ty: icmp, code: 0 }));
            let transport = |sa: Option<bitsgw_ipsec_query::SaView<'_>>| {
                sa.filter(|s| s.mode == Mode::Transport).map(|s| s.spi)
            };
            let binding_shared = binding.is_some_and(|b| {
                [mh_type::BRR, mh_type::BE].iter().any(|&ty| {
                    q.outbound_sa_for_flow(&key(proto::MH, NextLayer::Mh { ty }))
                        .is_some_and(|other| other.spi == b.spi)
                })
            });
            Signalling {
                binding: binding.map(|s| s.spi),
                transport: [transport(binding), transport(prefix)],
                binding_shared,
            }
        })
    }
}

/// Req #4 of the seed: whether the inbound SA with this SPI protects
/// Binding Updates, and for which home address. The answer comes from the
/// SA's traffic selectors (RFC 4301 4.4.2.1: an inbound SAD entry holds the
/// selectors it was negotiated with): proto MH, an MH type range holding
/// BU, and a single remote address, the home address.
fn bu_sa_home(q: &impl IpsecQuery, spi: u32) -> Option<[u8; 16]> {
    let sa = q.inbound_sa(spi)?;
    sa.selectors.iter().find_map(|s| {
        let carries_bu =
            s.proto == ProtoSel::Is(proto::MH) && s.mh_type.contains(mh_type::BU.into());
        match s.remote {
            AddrSel::Range {
                family: Family::V6,
                lo,
                hi,
            } if carries_bu && lo == hi => Some(lo.to_be_bytes()),
            _ => None,
        }
    })
}

/// RFC 3776 4.2 (the draft's section 4, "returns home"): at home, the SPD
/// entries that protect the tunnel between the home address and the home
/// agent are inactive. Whether `pkt` is traffic such an entry takes: the
/// outbound SPD entry its flow (or, for a packet received, the flow back)
/// matches first is protected by a tunnel-mode SA from `local` to
/// `remote`. Every other entry (bypass, discard, a transport-mode SA, a
/// tunnel elsewhere) still applies, so nothing else leaves in clear.
pub(crate) fn in_home_tunnel(
    q: &impl IpsecQuery,
    pkt: &[u8],
    received: bool,
    local: [u8; 16],
    remote: [u8; 16],
) -> bool {
    let Ok(meta) = ip::parse(pkt) else {
        return false;
    };
    if received && matches!(meta.proto, proto::ESP | proto::AH) {
        // What IPsec protected is for IPsec to open.
        return false;
    }
    let direction = if received {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    // Inbound, the key's local and remote are those of the flow back, and
    // the outbound SPD holds the tunnel's SA.
    let key = FlowKey::of_packet(pkt, &meta, direction);
    let tunnel = Mode::Tunnel {
        local: v6(local),
        remote: v6(remote),
    };
    q.lookup(Direction::Outbound, &key)
        .and_then(|entry| q.outbound_sa(entry))
        .is_some_and(|sa| sa.mode == tunnel)
}

/// Whether the tunnel stage encapsulated a packet it passed on (an IPv4
/// outer header, or IPv6 carrying IP) or re-addressed it.
pub(crate) fn what_was_done(pkt: &[u8]) -> crate::counters::MobilityEvent {
    use crate::counters::MobilityEvent;
    match (pkt.first().map(|b| b >> 4), pkt.get(6)) {
        (Some(4), _) | (Some(6), Some(&(proto::IPV6 | proto::IPV4))) => MobilityEvent::Encapsulated,
        _ => MobilityEvent::Readdressed,
    }
}

/// A Binding Update's outer IPv4 source, noted before IPsec (Req #4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatObservation {
    /// The outer source address and UDP port.
    pub udp: UdpPath,
    /// When it arrived.
    pub at: Timestamp,
}

/// The home agent's tunnel stage.
#[derive(Debug, Default)]
pub struct HaTunnel {
    cache: QueryCache,
    observations: FxHashMap<[u8; 16], Option<NatObservation>>,
}

/// The home agent's addresses, as the tunnel stage needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaAddresses {
    /// IPv6 home agent address.
    pub v6: [u8; 16],
    /// IPv4 address, for IPv4 care-of addresses (RFC 5555).
    pub v4: Option<[u8; 4]>,
}

/// What the home agent's inbound tunnel stage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaInbound {
    /// Pass the packet (now as IPsec expects it) to the IPsec stage.
    Pass,
    /// Drop it; for [`MobilityDrop::HaoWithoutBinding`], answer with a
    /// Binding Error (RFC 6275 9.3.1) to `care_of` about `home`.
    Drop {
        /// Why.
        reason: MobilityDrop,
        /// For a Binding Error: the home address in the HAO and the source.
        binding_error: Option<([u8; 16], [u8; 16])>,
    },
}

impl HaTunnel {
    /// Inbound, before IPsec: decapsulates IPv4 and UDP (port 4191), notes
    /// the outer source of Binding Updates (Req #4: the SPI's selectors
    /// tell a BU without decrypting it), and processes the Home Address
    /// option (RFC 3776 6.2 step 2: the home address becomes the source
    /// IPsec sees).
    pub fn handle_inbound(
        &mut self,
        q: &impl IpsecQuery,
        bindings: &BindingCache,
        ha: &HaAddresses,
        buf: &mut PacketBuf,
        now: Timestamp,
    ) -> HaInbound {
        let drop = |reason| HaInbound::Drop {
            reason,
            binding_error: None,
        };
        let Ok(meta) = ip::parse(buf.data()) else {
            return drop(MobilityDrop::Malformed);
        };
        let mut udp_outer = None;
        if meta.version == IpVersion::V4 {
            if ha.v4.is_none() || addr4(buf.data(), 16) != ha.v4 {
                return HaInbound::Pass;
            }
            match encap::decapsulate(buf, DSMIP_UDP_PORT) {
                Ok(d) => {
                    if let Outer::V4Udp { src, src_port, .. } = d.outer {
                        udp_outer = Some(UdpPath {
                            addr: src,
                            port: src_port,
                        });
                    }
                }
                Err(encap::EncapError::NotEncapsulated) => return HaInbound::Pass,
                Err(_) => return drop(MobilityDrop::BadEncapsulation),
            }
        }
        let Ok(mut meta) = ip::parse(buf.data()) else {
            return drop(MobilityDrop::BadEncapsulation);
        };
        if meta.version != IpVersion::V6 {
            return HaInbound::Pass;
        }
        if meta.proto == proto::IPV6 && addr16(buf.data(), 24) == Some(ha.v6) {
            // RFC 6275 10.4.5: a packet the mobile node tunnelled to the home
            // agent (signalling that may carry no Home Address option, RFC
            // 6275 6.1) is taken only from the care-of address of the binding
            // of its inner source; what is inside goes to IPsec.
            let outer_src = addr16(buf.data(), 8);
            if encap::decapsulate(buf, DSMIP_UDP_PORT).is_err() {
                return drop(MobilityDrop::BadEncapsulation);
            }
            let from_care_of = addr16(buf.data(), 8)
                .and_then(|home| bindings.get(&home))
                .is_some_and(|b| outer_src.is_some_and(|s| b.care_of == CareOf::V6(s)));
            if !from_care_of {
                return drop(MobilityDrop::UnknownTunnelPeer);
            }
            let Ok(inner) = ip::parse(buf.data()) else {
                return drop(MobilityDrop::BadEncapsulation);
            };
            meta = inner;
        }
        let bu_home = esp_spi(buf.data(), &meta).and_then(|spi| self.cache.bu_home(q, spi));
        if let Some(home) = bu_home {
            // Noted for the protocol module, which compares it with the IPv4
            // care-of address option after IPsec; a BU that came another
            // way clears it, so no stale note is ever used.
            self.observations
                .insert(home, udp_outer.map(|udp| NatObservation { udp, at: now }));
        }
        match mip6::find_home_address_option(buf.data()) {
            Ok(None) => HaInbound::Pass,
            Ok(Some(at)) => {
                let (Some(home), Some(src)) = (addr16(buf.data(), at), addr16(buf.data(), 8))
                else {
                    return drop(MobilityDrop::BadMobilityExtension);
                };
                // RFC 6275 9.3.1: only a BU, or a packet from the care-of
                // address of an existing binding, may carry the option.
                let allowed = bu_home == Some(home)
                    || bindings
                        .get(&home)
                        .is_some_and(|b| b.care_of == CareOf::V6(src));
                if !allowed {
                    return HaInbound::Drop {
                        reason: MobilityDrop::HaoWithoutBinding,
                        binding_error: Some((home, src)),
                    };
                }
                match mip6::swap_home_address(buf.data_mut()) {
                    Ok(_) => HaInbound::Pass,
                    Err(_) => drop(MobilityDrop::BadMobilityExtension),
                }
            }
            Err(_) => drop(MobilityDrop::BadMobilityExtension),
        }
    }

    /// The outer source noted for the last Binding Update of `home`, taken
    /// (so it is used once).
    pub fn take_observation(&mut self, home: &[u8; 16]) -> Option<NatObservation> {
        self.observations.get_mut(home).and_then(Option::take)
    }

    /// Outbound, after IPsec (Req #1): a packet for a home address with a
    /// binding goes to the care-of address. Transport-mode signalling (BA,
    /// MPA) gets a type 2 routing header (RFC 3776 6.3 step 5), a tunnel-mode
    /// ESP packet a new outer destination (RFC 3776 6.7 step 4), anything
    /// else an IPv6 tunnel (RFC 6275 10.4.1); an IPv4 care-of address
    /// takes the packet in IPv4, or in UDP when a NAT is on the path, and
    /// signalling always in UDP, back to where the BU came from (RFC 5555
    /// 4.2). No SA is touched. Without a binding the packet is left as it
    /// is, for the home link. `own_ba` says the packet is the protocol
    /// module's BA: when the BA's SA also carries other MH messages (the
    /// RFC 3776 pair), only the BA gets the routing header (RFC 6275 6.1)
    /// and the others go in an IPv6 tunnel like data.
    pub fn handle_outbound(
        &mut self,
        q: &impl IpsecQuery,
        bindings: &BindingCache,
        extra: Option<&CareOf>,
        ha: &HaAddresses,
        own_ba: bool,
        buf: &mut PacketBuf,
    ) -> Result<bool, MobilityDrop> {
        let meta = ip::parse(buf.data()).map_err(|_| MobilityDrop::Malformed)?;
        let pkt = buf.data();
        let spi = esp_spi(pkt, &meta);
        let from_us = meta.version == IpVersion::V6 && addr16(pkt, 8) == Some(ha.v6);
        let mut tunnelled_signalling = false;
        let (home, care_of, signalling) = match meta.version {
            IpVersion::V6 => {
                let dst = addr16(pkt, 24).ok_or(MobilityDrop::Malformed)?;
                let signalling = match spi {
                    Some(spi) if from_us => {
                        let s = self
                            .cache
                            .signalling(q, ha.v6, dst, mh_type::BA, ICMPV6_MPA);
                        let other_mh = s.binding_shared && s.binding == Some(spi) && !own_ba;
                        tunnelled_signalling = other_mh;
                        s.transport.contains(&Some(spi)) && !other_mh
                    }
                    _ => false,
                };
                // RFC 6275 9.5.4: a BA goes to where its BU came from, so
                // signalling takes the reply route (a refused or
                // de-registering BU's care-of address) over the binding.
                let route = if signalling {
                    extra.or(bindings.get(&dst).map(|b| &b.care_of))
                } else {
                    bindings.get(&dst).map(|b| &b.care_of)
                };
                match route {
                    Some(c) => (dst, *c, signalling),
                    None => return Ok(false),
                }
            }
            IpVersion::V4 => {
                let dst = addr4(pkt, 16).ok_or(MobilityDrop::Malformed)?;
                match bindings.get_v4(&dst) {
                    Some(b) => (b.home, b.care_of, false),
                    None => return Ok(false),
                }
            }
        };
        match care_of {
            CareOf::V6(coa) => {
                if signalling {
                    mip6::insert_type2_routing_header(buf, home)
                        .map_err(|_| MobilityDrop::NoBufferRoom)?;
                    buf.data_mut()[24..40].copy_from_slice(&coa);
                } else if spi.is_some() && from_us && !tunnelled_signalling {
                    buf.data_mut()[24..40].copy_from_slice(&coa);
                } else {
                    encap::encapsulate(
                        buf,
                        &Outer::V6 {
                            src: ha.v6,
                            dst: coa,
                        },
                    )
                    .map_err(|_| MobilityDrop::NoBufferRoom)?;
                }
            }
            CareOf::V4 { addr, udp, use_udp } => {
                let ha4 = ha.v4.ok_or(MobilityDrop::NoCareOf)?;
                let outer = if signalling || use_udp {
                    Outer::V4Udp {
                        src: ha4,
                        dst: udp.addr,
                        src_port: DSMIP_UDP_PORT,
                        dst_port: udp.port,
                        tlv: false,
                    }
                } else {
                    Outer::V4 {
                        src: ha4,
                        dst: addr,
                    }
                };
                encap::encapsulate(buf, &outer).map_err(|_| MobilityDrop::NoBufferRoom)?;
            }
        }
        Ok(true)
    }
}

/// A path from the mobile node to its home agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Via an IPv6 care-of address.
    V6 {
        /// The care-of address.
        coa: [u8; 16],
    },
    /// Via an IPv4 care-of address.
    V4 {
        /// The care-of address.
        coa: [u8; 4],
        /// The local UDP port of the encapsulation.
        port: u16,
        /// Whether data goes in UDP (a NAT is on the path, or the home
        /// agent forces UDP); signalling always does.
        udp: bool,
    },
}

/// What the mobile node's tunnel stage needs to know of the protocol
/// module's state, per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MnPaths {
    /// IPv6 home address.
    pub home: [u8; 16],
    /// Home agent's IPv6 address.
    pub ha: [u8; 16],
    /// Home agent's IPv4 address.
    pub ha_v4: Option<[u8; 4]>,
    /// The registered path data uses (None at home or before the first
    /// registration).
    pub active: Option<Path>,
    /// The path being registered (its BU is in flight).
    pub registering: Option<Path>,
    /// The packet leaving now is the protocol module's own Binding Update
    /// (when the BU's SA carries any MH type, only that one gets a Home
    /// Address option, RFC 6275 6.1).
    pub own_bu: bool,
}

/// The mobile node's tunnel stage.
#[derive(Debug, Default)]
pub struct MnTunnel {
    cache: QueryCache,
    heuristic: Heuristic,
    /// The last inbound SPI asked about, with the generation of the answer
    /// and whether its SA serves Binding Acknowledgements.
    ba_sa: Option<(u64, u32, bool)>,
}

impl MnTunnel {
    /// The heuristic classifier (armed by the protocol module before it
    /// sends a BU).
    pub fn heuristic_mut(&mut self) -> &mut Heuristic {
        &mut self.heuristic
    }

    /// Whether the inbound SA with this SPI is the one for Binding
    /// Acknowledgements (RFC 3776 4.1, RFC 6275 11.7.3: a BA counts only
    /// under the SA the policies give BAs): the SPD entry the flow "MH BA
    /// from the home agent to the home address" matches is among the
    /// entries the SA serves. Data arrives under one SPI, so the last
    /// answer is kept and the per-packet cost is a comparison.
    pub fn under_ba_sa(&mut self, q: &impl IpsecQuery, paths: &MnPaths, spi: u32) -> bool {
        let generation = q.generation();
        if let Some((g, s, answer)) = self.ba_sa {
            if g == generation && s == spi {
                return answer;
            }
        }
        let key = FlowKey {
            local: v6(paths.home),
            remote: v6(paths.ha),
            proto: proto::MH,
            next: NextLayer::Mh { ty: mh_type::BA },
        };
        let answer = match (q.lookup(Direction::Inbound, &key), q.inbound_sa(spi)) {
            (Some(entry), Some(sa)) => sa.spd_entries.contains(&entry.index),
            _ => false,
        };
        self.ba_sa = Some((generation, spi, answer));
        answer
    }

    /// Classifies an outbound ESP packet from the home address to the
    /// home agent.
    pub fn classify(
        &mut self,
        q: &impl IpsecQuery,
        paths: &MnPaths,
        spi: u32,
        mode: crate::classify::ClassifierMode,
    ) -> EspClass {
        let s = self
            .cache
            .signalling(q, paths.home, paths.ha, mh_type::BU, ICMPV6_MPS);
        let by_api = if s.binding == Some(spi) {
            EspClass::BindingUpdate
        } else if s.transport.contains(&Some(spi)) {
            EspClass::TransportSignalling
        } else {
            EspClass::Data
        };
        let class = match mode {
            crate::classify::ClassifierMode::Api => by_api,
            crate::classify::ClassifierMode::Heuristic => match self.heuristic.classify(spi) {
                // The heuristic knows nothing of other transport-mode
                // signalling: it tells only the BU from the rest.
                EspClass::Data if by_api == EspClass::TransportSignalling => by_api,
                c => c,
            },
        };
        if class == EspClass::BindingUpdate && s.binding_shared && !paths.own_bu {
            EspClass::TunnelledSignalling
        } else {
            class
        }
    }

    /// Outbound, after IPsec (Req #3): ESP of the home address leaves by
    /// the path its class says, the BU by the care-of address being
    /// registered and data by the registered one until the BA arrives (by
    /// the new one at once when no care-of address is registered). An
    /// IPv6 care-of address replaces the home address as source (with a
    /// Home Address option for transport mode, RFC 3776 6.1 step 5); an
    /// IPv4 one carries the packet in IPv4, or in UDP to port 4191 (RFC
    /// 5555 4.1; the draft's "MN sends BU over IPv4" step 4). At home the
    /// packet is left as it is.
    pub fn handle_outbound(
        &mut self,
        q: &impl IpsecQuery,
        paths: &MnPaths,
        mode: crate::classify::ClassifierMode,
        buf: &mut PacketBuf,
    ) -> Result<Option<EspClass>, MobilityDrop> {
        let meta = ip::parse(buf.data()).map_err(|_| MobilityDrop::Malformed)?;
        if meta.version != IpVersion::V6 || addr16(buf.data(), 8) != Some(paths.home) {
            return Ok(None);
        }
        if paths.active.is_none() && paths.registering.is_none() {
            // At home: the home link carries the packet as it is.
            return Ok(None);
        }
        let class = if meta.is_later_fragment() && meta.proto == proto::ESP {
            // Only the first fragment carries the ESP header (RFC 8200
            // 4.5): the rest has no SPI to classify. A Binding Update is
            // never that large, so a fragmented ESP packet is data, and
            // its later fragments follow the first on the registered path.
            EspClass::Data
        } else {
            let Some(spi) = esp_spi(buf.data(), &meta) else {
                return Err(MobilityDrop::ClearFromHome);
            };
            self.classify(q, paths, spi, mode)
        };
        // RFC 3776 4.3: once the BU is sent the node uses the new care-of
        // address; data stays on the registered one while that network is
        // still there (make-before-break, Req #3) and takes the new one at
        // once when the old one is gone (break-before-make).
        let path = match class {
            EspClass::BindingUpdate => paths.registering.or(paths.active),
            _ => paths.active.or(paths.registering),
        };
        let Some(path) = path else {
            return Err(MobilityDrop::NoCareOf);
        };
        let transport = matches!(
            class,
            EspClass::BindingUpdate | EspClass::TransportSignalling
        );
        match path {
            Path::V6 { coa } if class == EspClass::TunnelledSignalling => {
                encap::encapsulate(
                    buf,
                    &Outer::V6 {
                        src: coa,
                        dst: paths.ha,
                    },
                )
                .map_err(|_| MobilityDrop::NoBufferRoom)?;
            }
            Path::V6 { coa } => {
                if transport {
                    mip6::insert_home_address_option(buf, paths.home)
                        .map_err(|_| MobilityDrop::NoBufferRoom)?;
                }
                buf.data_mut()[8..24].copy_from_slice(&coa);
            }
            Path::V4 { coa, port, udp } => {
                let ha4 = paths.ha_v4.ok_or(MobilityDrop::NoCareOf)?;
                let outer = if udp || class == EspClass::BindingUpdate {
                    Outer::V4Udp {
                        src: coa,
                        dst: ha4,
                        src_port: port,
                        dst_port: DSMIP_UDP_PORT,
                        tlv: false,
                    }
                } else {
                    Outer::V4 { src: coa, dst: ha4 }
                };
                encap::encapsulate(buf, &outer).map_err(|_| MobilityDrop::NoBufferRoom)?;
            }
        }
        Ok(Some(class))
    }

    /// Inbound, before IPsec: strips the IPv4 (and UDP) encapsulation of
    /// packets from the home agent, processes a type 2 routing header (RFC
    /// 3776 6.4 step 2), and gives tunnel-mode ESP sent to a care-of
    /// address its home address back as destination, so IPsec sees what
    /// the home agent's IPsec produced. `care_ofs` are the addresses the
    /// node owns on visited networks; `port` its UDP port. Answers the SPI
    /// of the ESP packet it passes on from the home agent, if it is one.
    pub fn handle_inbound(
        &mut self,
        paths: &MnPaths,
        care_ofs: &[Path],
        buf: &mut PacketBuf,
    ) -> Result<Option<u32>, MobilityDrop> {
        let meta = ip::parse(buf.data()).map_err(|_| MobilityDrop::Malformed)?;
        if meta.version == IpVersion::V4 {
            let dst = addr4(buf.data(), 16);
            let port = care_ofs.iter().find_map(|p| match p {
                Path::V4 { coa, port, .. } if Some(*coa) == dst => Some(*port),
                _ => None,
            });
            let Some(port) = port else {
                return Ok(None);
            };
            let src = addr4(buf.data(), 12);
            match encap::decapsulate(buf, port) {
                Ok(_) if src != paths.ha_v4 || paths.ha_v4.is_none() => {
                    return Err(MobilityDrop::UnknownTunnelPeer)
                }
                Ok(_) => {}
                Err(encap::EncapError::NotEncapsulated) => return Ok(None),
                Err(_) => return Err(MobilityDrop::BadEncapsulation),
            }
        }
        let meta = ip::parse(buf.data()).map_err(|_| MobilityDrop::BadEncapsulation)?;
        if meta.version != IpVersion::V6 || addr16(buf.data(), 8) != Some(paths.ha) {
            return Ok(None);
        }
        match mip6::find_type2_routing_header(buf.data()) {
            Ok(Some(_)) => {
                let home = mip6::process_type2_routing_header(buf.data_mut())
                    .map_err(|_| MobilityDrop::BadMobilityExtension)?;
                if home != paths.home {
                    return Err(MobilityDrop::BadMobilityExtension);
                }
                Ok(esp_spi(buf.data(), &meta))
            }
            Ok(None) => {
                let dst = addr16(buf.data(), 24);
                let to_care_of = care_ofs
                    .iter()
                    .any(|p| matches!(p, Path::V6 { coa } if Some(*coa) == dst));
                if to_care_of && meta.proto == proto::ESP {
                    buf.data_mut()[24..40].copy_from_slice(&paths.home);
                } else if to_care_of && matches!(meta.proto, proto::IPV6 | proto::IPV4) {
                    // RFC 6275 11.3.4 / RFC 2473: a packet the home agent
                    // tunnelled in IPv6 without IPsec; what is inside goes
                    // to IPsec, whose SPD decides about it.
                    encap::decapsulate(buf, DSMIP_UDP_PORT)
                        .map_err(|_| MobilityDrop::BadEncapsulation)?;
                    let inner =
                        ip::parse(buf.data()).map_err(|_| MobilityDrop::BadEncapsulation)?;
                    return Ok(esp_spi(buf.data(), &inner));
                }
                Ok(esp_spi(buf.data(), &meta))
            }
            Err(_) => Err(MobilityDrop::BadMobilityExtension),
        }
    }
}
