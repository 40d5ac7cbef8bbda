//! The appliance's own host stack on one side, on smoltcp: an
//! [`Interface`] over an in-memory device that queues frames. smoltcp
//! answers ARP, IPv6 neighbor solicitations and ICMP / ICMPv6 echo
//! requests by itself. With [`SmoltcpEndpoint::open_ike`] it has UDP
//! sockets on ports 500 and 4500 whose datagrams go to an IKE thread over
//! bounded channels (drops counted), and whose replies leave from the
//! appliance's own address here, never through the SPD (RFC 4301 5.1: IKE
//! traffic of the gateway itself bypasses IPsec).
//!
//! Which frames are for the appliance is decided here, before smoltcp sees
//! them (see [`SmoltcpEndpoint::is_addressed_to_me`]); the gateway decides
//! which of those it offers at all on the network side
//! (`bitsgw_pipeline::endpoint`).
//!
//! On a raw-IP port (TUN) the stack takes and sends IP packets alone
//! ([`SmoltcpEndpoint::new_raw_ip`]): no link layer, no neighbors to
//! resolve, and every destination reached through the port (a default
//! route per address family), since the port's far side routes.
//!
//! Clones share one interface (one neighbor cache, one set of queues): the
//! runner gives each worker a clone, and whichever worker a request reaches
//! answers it. The lock is only taken for frames that are for the
//! appliance and when polling.

use bitsgw_pipeline::endpoint::ETHERTYPE_ARP;
use bitsgw_pipeline::LocalEndpoint;
use bitsgw_wire::esp::{classify_udp_encap, UdpEncapKind};
use bitsgw_wire::ether::{self, LinkType, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use bitsgw_wire::{icmp, ip, proto, Timestamp};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// IKE's port (RFC 7296 2).
pub const IKE_PORT: u16 = 500;
/// IKE and ESP behind a NAT (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// The non-ESP marker before IKE messages on port 4500 (RFC 3948 2.2).
const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// Datagrams each IKE socket buffers each way.
const IKE_SOCKET_PACKETS: usize = 32;
/// Octets each IKE socket buffers each way.
const IKE_SOCKET_BYTES: usize = 64 * 1024;

/// An IKE message between the endpoint and the IKE thread: without the
/// non-ESP marker (added and removed here for port 4500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeDatagram {
    /// The appliance's address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The IKE message.
    pub data: Vec<u8>,
}

/// IKE datagrams dropped between the endpoint and the IKE thread.
#[derive(Debug, Default)]
pub struct IkeDrops {
    /// Received, but the channel to the IKE thread was full.
    pub to_ike_full: AtomicU64,
    /// Sent by the IKE thread, but the socket's buffer was full (or the
    /// address not the endpoint's).
    pub send_failed: AtomicU64,
    /// On port 4500 without the non-ESP marker (never offered here:
    /// ESP in UDP goes to the IPsec stage).
    pub unmarked: AtomicU64,
}

/// The IKE thread's side: datagrams received, datagrams to send, drops.
#[derive(Debug)]
pub struct IkePort {
    /// Received IKE messages.
    pub received: Receiver<IkeDatagram>,
    /// IKE messages to send.
    pub send: SyncSender<IkeDatagram>,
    /// Drops on the way.
    pub drops: Arc<IkeDrops>,
}

/// The endpoint's side of the IKE channels and its two sockets.
struct IkeSockets {
    sockets: [(u16, SocketHandle); 2],
    to_ike: SyncSender<IkeDatagram>,
    from_ike: Receiver<IkeDatagram>,
    drops: Arc<IkeDrops>,
}

impl IkeSockets {
    /// Hands what the IKE thread wants sent to the sockets.
    fn send(&self, sockets: &mut SocketSet<'static>) {
        while let Ok(d) = self.from_ike.try_recv() {
            let Some((port, h)) = self.sockets.iter().find(|(p, _)| *p == d.local.port()) else {
                self.drops.send_failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let meta = udp::UdpMetadata {
                local_address: Some(IpAddress::from(d.local.ip())),
                ..udp::UdpMetadata::from((IpAddress::from(d.remote.ip()), d.remote.port()))
            };
            let sock = sockets.get_mut::<udp::Socket>(*h);
            // A NAT-keepalive (RFC 3948 2.3) leaves as it is.
            let keepalive = classify_udp_encap(&d.data) == UdpEncapKind::Keepalive;
            let sent = if *port == NAT_T_PORT && !keepalive {
                sock.send(NON_ESP_MARKER.len() + d.data.len(), meta)
                    .map(|buf| {
                        buf[..4].copy_from_slice(&NON_ESP_MARKER);
                        buf[4..].copy_from_slice(&d.data);
                    })
                    .is_ok()
            } else {
                sock.send_slice(&d.data, meta).is_ok()
            };
            if !sent {
                self.drops.send_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Hands what the sockets received to the IKE thread.
    fn receive(&self, sockets: &mut SocketSet<'static>) {
        for (port, h) in self.sockets {
            let sock = sockets.get_mut::<udp::Socket>(h);
            while let Ok((data, meta)) = sock.recv() {
                let ike = if port == NAT_T_PORT {
                    match data.split_first_chunk::<4>() {
                        Some((&NON_ESP_MARKER, rest)) => rest,
                        _ => {
                            self.drops.unmarked.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    data
                };
                let Some(local) = meta.local_address else {
                    continue;
                };
                let d = IkeDatagram {
                    local: SocketAddr::new(local.into(), port),
                    remote: SocketAddr::new(meta.endpoint.addr.into(), meta.endpoint.port),
                    data: ike.to_vec(),
                };
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                    self.to_ike.try_send(d)
                {
                    self.drops.to_ike_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Addresses one endpoint may have, at most (smoltcp's interface is built
/// with room for this many).
pub const MAX_ADDRESSES: usize = 8;

/// Frames the endpoint queues for sending, at most; more are dropped.
const MAX_QUEUED: usize = 64;

/// Why an endpoint can not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A prefix length longer than the address.
    #[error("{addr}/{prefix}: prefix length longer than the address")]
    BadPrefix {
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// More addresses than [`MAX_ADDRESSES`].
    #[error("{count} addresses, at most {MAX_ADDRESSES} are supported")]
    TooMany {
        /// How many were given.
        count: usize,
    },
}

/// The frames between the gateway and smoltcp.
#[derive(Debug)]
struct Queues {
    medium: Medium,
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);

impl RxToken for Rx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl TxToken for Tx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        if self.0.len() < MAX_QUEUED {
            self.0.push_back(frame);
        }
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((Rx(frame), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = self.medium;
        caps.max_transmission_unit = match self.medium {
            Medium::Ip => 1500,
            _ => 1514,
        };
        caps
    }
}

struct Stack {
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    ike: Option<IkeSockets>,
}

impl Stack {
    fn poll(&mut self, now: Timestamp) {
        if let Some(ike) = &self.ike {
            ike.send(&mut self.sockets);
        }
        let _ = self
            .iface
            .poll(instant(now), &mut self.device, &mut self.sockets);
        if let Some(ike) = &self.ike {
            ike.receive(&mut self.sockets);
        }
    }
}

fn instant(now: Timestamp) -> Instant {
    Instant::from_micros(i64::try_from(now.0 / 1000).unwrap_or(i64::MAX))
}

/// The appliance's own host stack on one side. Clones share it.
#[derive(Clone)]
pub struct SmoltcpEndpoint {
    /// All zero on a raw-IP port.
    mac: [u8; 6],
    link: LinkType,
    addresses: Arc<[IpAddr]>,
    stack: Arc<Mutex<Stack>>,
}

impl core::fmt::Debug for SmoltcpEndpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SmoltcpEndpoint")
            .field("mac", &self.mac)
            .field("link", &self.link)
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl SmoltcpEndpoint {
    /// An endpoint answering for `addresses` (address, prefix length) at
    /// the Ethernet address `mac`.
    pub fn new(mac: [u8; 6], addresses: &[(IpAddr, u8)]) -> Result<Self, EndpointError> {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed =
            u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]]);
        Self::build(config, mac, LinkType::Ethernet, addresses)
    }

    /// An endpoint answering for `addresses` on a raw-IP port (TUN): it
    /// takes and sends IP packets alone, and sends every packet through
    /// the port.
    pub fn new_raw_ip(addresses: &[(IpAddr, u8)]) -> Result<Self, EndpointError> {
        let mut config = Config::new(HardwareAddress::Ip);
        // Distinct stacks get distinct seeds (smoltcp's ephemeral ports
        // and TCP sequence numbers): the first address's last octets.
        config.random_seed = addresses.first().map_or(0, |(a, _)| match a {
            IpAddr::V4(a) => u64::from(u32::from(*a)),
            IpAddr::V6(a) => u128::from(*a) as u64,
        });
        let ep = Self::build(config, [0; 6], LinkType::RawIp, addresses)?;
        if let Ok(mut s) = ep.stack.lock() {
            // The port's far side routes: a default route per family, its
            // gateway any address of ours (nothing is resolved on raw IP).
            for (a, _) in addresses {
                let routes = s.iface.routes_mut();
                // Cannot fail: two routes at most, the table holds more.
                let _ = match a {
                    IpAddr::V4(a) => routes.add_default_ipv4_route(*a),
                    IpAddr::V6(a) => routes.add_default_ipv6_route(*a),
                };
            }
        }
        Ok(ep)
    }

    fn build(
        config: Config,
        mac: [u8; 6],
        link: LinkType,
        addresses: &[(IpAddr, u8)],
    ) -> Result<Self, EndpointError> {
        if addresses.len() > MAX_ADDRESSES {
            return Err(EndpointError::TooMany {
                count: addresses.len(),
            });
        }
        let mut cidrs = Vec::with_capacity(addresses.len());
        for &(addr, prefix) in addresses {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(EndpointError::BadPrefix { addr, prefix });
            }
            cidrs.push(IpCidr::new(IpAddress::from(addr), prefix));
        }
        let mut device = Queues {
            medium: match link {
                LinkType::RawIp => Medium::Ip,
                _ => Medium::Ethernet,
            },
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut iface = Interface::new(config, &mut device, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            for c in cidrs {
                // Cannot fail: the count was checked against the capacity.
                let _ = a.push(c);
            }
        });
        Ok(SmoltcpEndpoint {
            mac,
            link,
            addresses: addresses.iter().map(|(a, _)| *a).collect(),
            stack: Arc::new(Mutex::new(Stack {
                iface,
                device,
                sockets: SocketSet::new(Vec::new()),
                ike: None,
            })),
        })
    }

    /// Opens UDP ports 500 and 4500 for IKE (on every address of the
    /// endpoint) and returns the IKE thread's side: channels of `depth`
    /// datagrams each way. Once open, IKE addressed to the appliance here
    /// is taken by the endpoint (see `LocalEndpoint::takes_ike`).
    pub fn open_ike(&self, depth: usize) -> IkePort {
        let (to_ike, received) = sync_channel(depth);
        let (send, from_ike) = sync_channel(depth);
        let drops = Arc::new(IkeDrops::default());
        if let Ok(mut s) = self.stack.lock() {
            let mut handle = |port: u16| {
                let buf = || {
                    udp::PacketBuffer::new(
                        vec![udp::PacketMetadata::EMPTY; IKE_SOCKET_PACKETS],
                        vec![0u8; IKE_SOCKET_BYTES],
                    )
                };
                let mut sock = udp::Socket::new(buf(), buf());
                // Cannot fail: the port is not zero and the socket new.
                let _ = sock.bind(port);
                s.sockets.add(sock)
            };
            let sockets = [
                (IKE_PORT, handle(IKE_PORT)),
                (NAT_T_PORT, handle(NAT_T_PORT)),
            ];
            s.ike = Some(IkeSockets {
                sockets,
                to_ike,
                from_ike,
                drops: Arc::clone(&drops),
            });
        }
        IkePort {
            received,
            send,
            drops,
        }
    }

    /// The Ethernet address it answers with (all zero on a raw-IP port).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Whether an IP packet is to one of its addresses.
    fn ip_is_mine(&self, pkt: &[u8]) -> bool {
        ip::parse(pkt).is_ok_and(|meta| pkt.get(meta.dst_range()).is_some_and(|d| self.is_mine(d)))
    }

    fn is_mine(&self, addr: &[u8]) -> bool {
        self.addresses.iter().any(|a| match a {
            IpAddr::V4(a) => a.octets() == addr,
            IpAddr::V6(a) => a.octets() == addr,
        })
    }
}

impl LocalEndpoint for SmoltcpEndpoint {
    fn takes_ike(&self) -> bool {
        self.stack.lock().is_ok_and(|s| s.ike.is_some())
    }

    fn link(&self) -> LinkType {
        self.link
    }

    fn handle_frame(&mut self, frame: &[u8], now: Timestamp) -> bool {
        if !self.is_addressed_to_me(frame) {
            return false;
        }
        if let Ok(mut s) = self.stack.lock() {
            if s.device.rx.len() < MAX_QUEUED {
                let mut frame = frame.to_vec();
                // An inline bump's address may be reached at another MAC
                // (a host's behind it): a unicast frame to one of its
                // addresses is its own whatever its destination MAC, and
                // smoltcp takes only frames to its MAC.
                if self.link == LinkType::Ethernet && frame[0] & 1 == 0 {
                    frame[..6].copy_from_slice(&self.mac);
                }
                s.device.rx.push_back(frame);
            }
            s.poll(now);
        }
        true
    }

    fn poll_transmit(&mut self, now: Timestamp, emit: &mut dyn FnMut(&[u8])) {
        let out = match self.stack.lock() {
            Ok(mut s) => {
                s.poll(now);
                std::mem::take(&mut s.device.tx)
            }
            Err(_) => return,
        };
        for frame in &out {
            emit(frame);
        }
    }

    /// To its MAC; ARP for one of its IPv4 addresses; a neighbor
    /// solicitation for one of its IPv6 addresses; an IP packet to one of
    /// its addresses. On a raw-IP port: an IP packet to one of its
    /// addresses.
    fn is_addressed_to_me(&self, frame: &[u8]) -> bool {
        if self.link == LinkType::RawIp {
            return self.ip_is_mine(frame);
        }
        if frame.len() < ether::HEADER_LEN {
            return false;
        }
        if frame[..6] == self.mac {
            return true;
        }
        let pkt = &frame[ether::HEADER_LEN..];
        match ether::ethertype(frame) {
            // ARP for IPv4 over Ethernet: the target address is at 24.
            Some(ETHERTYPE_ARP) => pkt.get(24..28).is_some_and(|t| self.is_mine(t)),
            Some(ETHERTYPE_IPV4 | ETHERTYPE_IPV6) => {
                if self.ip_is_mine(pkt) {
                    return true;
                }
                let Ok(meta) = ip::parse(pkt) else {
                    return false;
                };
                // A neighbor solicitation (to a solicited-node group): its
                // target address is at 8 in the message.
                let message = pkt.get(meta.header_len..).unwrap_or(&[]);
                meta.proto == proto::ICMPV6
                    && !meta.is_later_fragment()
                    && message.first() == Some(&icmp::V6_NEIGHBOR_SOLICITATION)
                    && message.get(8..24).is_some_and(|t| self.is_mine(t))
            }
            _ => false,
        }
    }
}
