//! A minimal UDP driver for the IKE core, for interoperability tests and
//! labs: sockets on port 500 and 4500 of one address, the core's deadlines
//! as receive timeouts, events printed one per line on stdout. Not the appliance's integration (that hands
//! CHILD_SAs to the IPsec stage); nothing is installed.
//!
//! ```text
//! ike-udp-peer --role initiator|responder --local IP:PORT --remote IP:PORT
//!     --local-id fqdn:NAME|ipv4:ADDR|ipv6:ADDR|keyid:HEX --remote-id ...
//!     (--psk-file PATH | --cert PEM --key PEM --ca PEM)
//!     --ike PROPOSAL --esp PROPOSAL
//!     --local-ts TS --remote-ts TS [--mode tunnel|transport]
//!     [--extra-child NAME,MODE,LOCAL_TS,REMOTE_TS]
//!     [--liveness SECONDS] [--ike-lifetime SECONDS] [--child-lifetime SECONDS]
//!     [--exit-after SECONDS] [--name NAME]
//!     [--add-peer name=NAME,remote-id=ID,psk-file=PATH,remote-ts=CIDR[;...]]
//!     [--print-keys] [--trace]
//! ```
//!
//! `--add-peer` adds peers to the endpoint, each like the first but for
//! its name, the identity it must prove, its key and its selectors: a
//! responder picks among them by the identity of IKE_AUTH.
//!
//! Proposals use strongSwan's notation: `aes128gcm16-prfsha256-ecp256`,
//! `aes256gcm16-prfsha256-x25519`, `aes128-sha256-prfsha256-ecp256` (IKE);
//! `aes128gcm16`, `aes256-sha256`, `aes128gcm16-x25519` (ESP, the group for
//! PFS in CREATE_CHILD_SA). A selector `TS` is `ADDR/LEN`, optionally
//! with a protocol and port range as strongSwan writes them,
//! `ADDR/LEN[PROTO/LO-HI]`, or an MH type, `ADDR/LEN[mh/TYPE]` (RFC 7296
//! 3.13.1). The first child (`--name`, default `net`) is created in
//! IKE_AUTH, an `--extra-child` with CREATE_CHILD_SA after it. `--print-keys` prints the
//! CHILD_SA keys in hex: a test aid, off by default, never for production
//! keys. `--trace` prints every IKE message received, in hex.

use bitsgw_ike::certs::{
    certificates_from_pem, private_key_from_pem, CredentialError, Credentials,
};
use bitsgw_ike::crypto::{DirectionKeys, Secret};
use bitsgw_ike::names::identity;
use bitsgw_ike::wire::TrafficSelector;
use bitsgw_ike::{
    Authentication, ChildConfig, Endpoint, EndpointConfig, Event, Lifetimes, Mode, PeerConfig,
    Retransmit, Timestamp,
};
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// IKE and ESP behind a NAT (RFC 3948).
const NAT_T_PORT: u16 = 4500;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Result<Args, String> {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            let Some(name) = k.strip_prefix("--") else {
                return Err(format!("unexpected argument {k}"));
            };
            if name == "print-keys" || name == "trace" {
                map.insert(name.to_string(), String::new());
                continue;
            }
            let v = it.next().ok_or(format!("--{name} needs a value"))?;
            map.insert(name.to_string(), v);
        }
        Ok(Args(map))
    }

    fn get(&self, k: &str) -> Result<&str, String> {
        self.0
            .get(k)
            .map(String::as_str)
            .ok_or(format!("--{k} is required"))
    }

    fn opt(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn selector(s: &str) -> Result<TrafficSelector, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{s}: {e}");
    let (prefix, next) = match s.split_once('[') {
        Some((p, rest)) => (p, rest.strip_suffix(']').map(Some).ok_or(bad(&"no ]"))?),
        None => (s, None),
    };
    let (a, l) = prefix
        .split_once('/')
        .ok_or(format!("{s}: expected ADDR/LEN"))?;
    let ts = TrafficSelector::prefix(
        a.parse().map_err(|e| bad(&e))?,
        l.parse().map_err(|e| bad(&e))?,
    );
    let Some(next) = next else {
        return Ok(ts);
    };
    let (proto, ports) = next.split_once('/').unwrap_or((next, ""));
    if proto == "mh" {
        let t: u8 = ports.parse().map_err(|e| bad(&e))?;
        return Ok(ts.with_mh_types(t, t));
    }
    let protocol: u8 = proto.parse().map_err(|e| bad(&e))?;
    let (lo, hi) = match ports.split_once('-') {
        _ if ports.is_empty() => (0, u16::MAX),
        Some((lo, hi)) => (
            lo.parse().map_err(|e| bad(&e))?,
            hi.parse().map_err(|e| bad(&e))?,
        ),
        None => {
            let p = ports.parse().map_err(|e| bad(&e))?;
            (p, p)
        }
    };
    Ok(TrafficSelector {
        protocol,
        start_port: lo,
        end_port: hi,
        ..ts
    })
}

fn mode(m: &str) -> Result<Mode, String> {
    match m {
        "tunnel" => Ok(Mode::Tunnel),
        "transport" => Ok(Mode::Transport),
        m => Err(format!("mode {m}: tunnel or transport")),
    }
}

/// The children: the first of `--name`, `--local-ts`, `--remote-ts` and
/// `--mode`, then `--extra-child NAME,MODE,LOCAL_TS,REMOTE_TS`.
fn children(a: &Args) -> Result<Vec<ChildConfig>, String> {
    let mut out = vec![ChildConfig {
        name: a.opt("name").unwrap_or("net").to_string(),
        local_ts: vec![selector(a.get("local-ts")?)?],
        remote_ts: vec![selector(a.get("remote-ts")?)?],
        mode: mode(a.opt("mode").unwrap_or("tunnel"))?,
    }];
    if let Some(extra) = a.opt("extra-child") {
        let f: Vec<&str> = extra.split(',').collect();
        let [name, m, local, remote] = f[..] else {
            return Err(format!(
                "--extra-child {extra}: NAME,MODE,LOCAL_TS,REMOTE_TS"
            ));
        };
        out.push(ChildConfig {
            name: name.to_string(),
            local_ts: vec![selector(local)?],
            remote_ts: vec![selector(remote)?],
            mode: mode(m)?,
        });
    }
    Ok(out)
}

/// A pre-shared key (`--psk-file`) or certificates (`--cert`, `--key`,
/// `--ca`, each a PEM file).
fn authentication(a: &Args) -> Result<Authentication, String> {
    let read = |k: &str| -> Result<Vec<u8>, String> {
        let path = a.get(k)?;
        std::fs::read(path).map_err(|e| format!("{path}: {e}"))
    };
    if a.opt("psk-file").is_some() {
        let psk = read("psk-file")?;
        return Ok(Authentication::Psk(Secret::new(
            String::from_utf8_lossy(&psk)
                .trim_end_matches('\n')
                .as_bytes()
                .to_vec(),
        )));
    }
    let at = |k: &'static str| move |e: CredentialError| format!("--{k}: {e}");
    let cert = certificates_from_pem(&read("cert")?).map_err(at("cert"))?;
    // The PEM text holds the key too: zeroized when dropped.
    let key_pem = Secret::new(read("key")?);
    let key = private_key_from_pem(key_pem.expose()).map_err(at("key"))?;
    let cas = certificates_from_pem(&read("ca")?).map_err(at("ca"))?;
    // Ours first, then intermediate CAs to send with it.
    let mut chain = cert;
    let intermediates = chain.split_off(chain.len().min(1));
    let first = chain.pop().unwrap_or_default();
    let creds = Credentials::new(first, key, cas)
        .and_then(|c| c.with_intermediates(intermediates))
        .map_err(at("cert"))?;
    Ok(Authentication::Certificate(Box::new(creds)))
}

/// The peers of `--add-peer`: `name=..,remote-id=..,psk-file=..,remote-ts=..`,
/// separated by `;`, each the first peer `first` but for these.
fn more_peers(a: &Args, first: &PeerConfig) -> Result<Vec<PeerConfig>, String> {
    let Some(list) = a.opt("add-peer") else {
        return Ok(Vec::new());
    };
    list.split(';')
        .map(|spec| {
            let fields: HashMap<&str, &str> = spec
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            let get = |k: &str| {
                fields
                    .get(k)
                    .copied()
                    .ok_or(format!("--add-peer {spec}: {k}= is required"))
            };
            let psk = std::fs::read(get("psk-file")?).map_err(|e| format!("--add-peer: {e}"))?;
            Ok(PeerConfig {
                name: get("name")?.to_string(),
                remote_id: identity(get("remote-id")?)?,
                auth: Authentication::Psk(Secret::new(
                    String::from_utf8_lossy(&psk)
                        .trim_end_matches('\n')
                        .as_bytes()
                        .to_vec(),
                )),
                // Every child of the first peer, with this peer's remote
                // selector.
                children: first
                    .children
                    .iter()
                    .map(|c| {
                        Ok(ChildConfig {
                            remote_ts: vec![selector(get("remote-ts")?)?],
                            ..c.clone()
                        })
                    })
                    .collect::<Result<_, String>>()?,
                ..first.clone()
            })
        })
        .collect()
}

/// The time since the Unix epoch, for certificates' validity.
fn wall_clock() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn config(a: &Args) -> Result<EndpointConfig, String> {
    let secs = |k: &str| -> Result<Option<Duration>, String> {
        a.opt(k)
            .map(|v| {
                v.parse::<u64>()
                    .map(Duration::from_secs)
                    .map_err(|e| format!("--{k} {v}: {e}"))
            })
            .transpose()
    };
    let cfg = EndpointConfig {
        peer: PeerConfig {
            name: a.opt("name").unwrap_or("net").to_string(),
            local_id: identity(a.get("local-id")?)?,
            remote_id: identity(a.get("remote-id")?)?,
            auth: authentication(a)?,
            ike_proposals: vec![a.get("ike")?.parse().map_err(|e| format!("--ike: {e}"))?],
            esp_proposals: vec![a.get("esp")?.parse().map_err(|e| format!("--esp: {e}"))?],
            children: children(a)?,
            lifetimes: Lifetimes {
                ike: secs("ike-lifetime")?.unwrap_or(Duration::from_secs(3600)),
                child: secs("child-lifetime")?.unwrap_or(Duration::from_secs(1200)),
                jitter: Duration::ZERO,
            },
            liveness: secs("liveness")?,
            nat_keepalive: Some(Duration::from_secs(20)),
            retransmit: Retransmit::default(),
            initial_contact: true,
        },
        cookie_threshold: 64,
        max_half_open: 4096,
        half_open_timeout: Duration::from_secs(30),
    };
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

fn keys_line(label: &str, k: &DirectionKeys) -> String {
    format!(
        " {label}_enc={} {label}_salt={} {label}_integ={}",
        hex(k.encryption.expose()),
        hex(k.salt.expose()),
        hex(k.integrity.expose())
    )
}

fn print_event(e: &Event, print_keys: bool) -> String {
    match e {
        Event::IkeSaUp {
            peer,
            spi_i,
            spi_r,
            suite,
            nat_local,
            nat_remote,
            ..
        } => format!(
            "IKE_SA_UP peer={peer} spi_i={spi_i:016x} spi_r={spi_r:016x} group={} encr={:?} nat_local={nat_local} nat_remote={nat_remote}",
            suite.group.number(),
            suite.encryption
        ),
        Event::IkeSaDown { reason, .. } => format!("IKE_SA_DOWN reason={reason:?}"),
        Event::IkeSaRekeyed { spi_i, spi_r, .. } => {
            format!("IKE_SA_REKEYED spi_i={spi_i:016x} spi_r={spi_r:016x}")
        }
        Event::ChildSaEstablished(c) => {
            let mut line = format!(
                "CHILD_SA_UP name={} child={} in={:08x} out={:08x} mode={:?} encr={:?} integ={:?} local_ts={}-{}[{}/{}-{}] remote_ts={}-{}[{}/{}-{}] udp_encapsulation={} local={} remote={}",
                c.name,
                c.child,
                c.inbound_spi,
                c.outbound_spi,
                c.mode,
                c.suite.encryption,
                c.suite.integrity,
                c.local_ts[0].start,
                c.local_ts[0].end,
                c.local_ts[0].protocol,
                c.local_ts[0].start_port,
                c.local_ts[0].end_port,
                c.remote_ts[0].start,
                c.remote_ts[0].end,
                c.remote_ts[0].protocol,
                c.remote_ts[0].start_port,
                c.remote_ts[0].end_port,
                c.udp_encapsulation,
                c.local,
                c.remote,
            );
            if let Some(g) = c.suite.group {
                line += &format!(" pfs_group={}", g.number());
            }
            if let Some(old) = c.rekeys {
                line += &format!(" rekeys={old:08x}");
            }
            if print_keys {
                // In the terms of the exchange that made it, as strongSwan
                // logs them.
                let (i2r, r2i) = if c.exchange_initiator {
                    (&c.outbound, &c.inbound)
                } else {
                    (&c.inbound, &c.outbound)
                };
                line += &keys_line("i2r", i2r);
                line += &keys_line("r2i", r2i);
            }
            line
        }
        Event::ChildSaFailed {
            name,
            child,
            notify,
            ..
        } => {
            format!("CHILD_SA_FAILED name={name} child={child} notify={notify:?}")
        }
        Event::ChildSaDeleted {
            child,
            inbound_spi,
            outbound_spi,
            ..
        } => format!("CHILD_SA_DELETED in={inbound_spi:08x} out={outbound_spi:08x} child={child}"),
        e => format!("EVENT {e:?}"),
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse()?;
    let initiator = match a.get("role")? {
        "initiator" => true,
        "responder" => false,
        r => return Err(format!("--role {r}: initiator or responder")),
    };
    let local: SocketAddr = a
        .get("local")?
        .parse()
        .map_err(|e| format!("--local: {e}"))?;
    let remote: SocketAddr = a
        .get("remote")?
        .parse()
        .map_err(|e| format!("--remote: {e}"))?;
    let exit_after = a
        .opt("exit-after")
        .map(|v| v.parse::<u64>().map(Duration::from_secs))
        .transpose()
        .map_err(|e| format!("--exit-after: {e}"))?;
    let print_keys = a.opt("print-keys").is_some();
    let trace = a.opt("trace").is_some();
    let config = config(&a)?;
    let more = more_peers(&a, &config.peer)?;
    let mut ep = Endpoint::new(config).map_err(|e| e.to_string())?;
    for p in more {
        ep.add_peer(p).map_err(|e| e.to_string())?;
    }
    // IKE on `local` and, for NAT traversal (RFC 7296 2.23), on port 4500
    // of the same address, where IKE follows a four-octet zero non-ESP
    // marker (RFC 3948 2.2) and anything else is ESP, not ours here.
    let natt = SocketAddr::new(local.ip(), NAT_T_PORT);
    let sockets = [
        (
            local,
            UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?,
        ),
        (
            natt,
            UdpSocket::bind(natt).map_err(|e| format!("bind {natt}: {e}"))?,
        ),
    ];
    let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr, Vec<u8>)>();
    for (addr, sock) in &sockets {
        let sock = sock.try_clone().map_err(|e| e.to_string())?;
        let (addr, tx) = (*addr, tx.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let data = &buf[..n];
                let ike = if addr.port() == NAT_T_PORT {
                    match data.split_first_chunk::<4>() {
                        Some(([0, 0, 0, 0], rest)) => rest,
                        _ => continue,
                    }
                } else {
                    data
                };
                if tx.send((from, addr, ike.to_vec())).is_err() {
                    return;
                }
            }
        });
    }
    let start = Instant::now();
    let now = || Timestamp(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    say(format!("READY {local}"));
    if initiator {
        ep.initiate(now(), local, remote)
            .map_err(|e| e.to_string())?;
    }
    let mut last_counters = String::new();
    loop {
        while let Some(t) = ep.poll_transmit() {
            let Some((_, sock)) = sockets.iter().find(|(a, _)| *a == t.local) else {
                return Err(format!("no socket for {}", t.local));
            };
            let mut datagram = Vec::with_capacity(4 + t.contents.len());
            if t.local.port() == NAT_T_PORT && !t.is_nat_keepalive() {
                datagram.extend_from_slice(&[0; 4]);
            }
            datagram.extend_from_slice(&t.contents);
            sock.send_to(&datagram, t.remote)
                .map_err(|e| format!("send to {}: {e}", t.remote))?;
        }
        while let Some(e) = ep.poll_event() {
            say(print_event(&e, print_keys));
        }
        let c = ep.counters();
        let counters = format!(
            "COUNTERS notify_sent={:?} notify_received={:?} drops={:?} auth_refused={:?}",
            c.notify_sent, c.notify_received, c.drops, c.auth_refused
        );
        if counters != last_counters {
            say(counters.clone());
            last_counters = counters;
        }
        if exit_after.is_some_and(|d| start.elapsed() >= d) {
            return Ok(());
        }
        let wait = ep
            .poll_timeout()
            .map_or(Duration::from_millis(200), |t| t.saturating_since(now()))
            .clamp(Duration::from_millis(1), Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok((from, to, data)) => {
                if trace {
                    say(format!("RECEIVED {from} {to} {}", hex(&data)));
                }
                ep.set_wall_clock(wall_clock());
                ep.handle_datagram(now(), from, to, &data);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        ep.handle_timeout(now());
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ike-udp-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
