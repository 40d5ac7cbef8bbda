//! Metrics: the report `show` returns (`report::to_json`), in the
//! OpenMetrics text format Prometheus scrapes, over HTTP
//! (`"metrics": {"listen": ...}` in the configuration) and from
//! `bitsgw show counters --prometheus` (the node exporter's textfile
//! collector). One encoder, [`encode`], serves both.
//!
//! What is exported follows the report: port frames and bytes, the IPsec
//! stage's packets, every drop reason with its stage, per SA its packets,
//! bytes, replay drops, ICV failures, state and seconds to expiry, SPD
//! hits per entry, the mobility stage's events. SA and entry names and
//! SPIs are labels; no key and nothing derived from one is exported (the
//! report has none).
//!
//! The server never slows forwarding: it takes no lock the workers take.
//! Scrapes are answered from a cached text that the main loop renews, when
//! a scrape finds it older than [`MAX_AGE`], from one report of the
//! workers: however many clients scrape, the workers make at most one
//! report per [`MAX_AGE`] for them. [`SERVING_THREADS`] threads serve one
//! connection each at a time; others wait in the kernel's backlog, never
//! in a thread of ours, and each client has [`REQUEST_TIME`] to send its
//! request and [`WRITE_TIME`] to take the answer. (A general-purpose
//! server such as tiny_http starts a thread per connection with no limit
//! and no time bound on an idle one, which a scrape storm or a client that
//! sends nothing would turn into threads without end.)

use crate::control::write_by;
use crate::log_limit::SharedLogLimit;
use bitsgw_ipsec::{DropReason, Event};
use bitsgw_mobility::counters::MobilityDrop;
use bitsgw_pipeline::runner::Report;
use bitsgw_pipeline::PipelineDrop;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text, DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// The HTTP Content-Type of [`encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// How old the text a scrape gets may be, at most (when the main loop
/// keeps up); also the shortest time between two reports made for scrapes.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Connections served at once.
pub const SERVING_THREADS: usize = 4;
/// How long a client has to send its request head.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);
/// How long a client has to take its answer.
pub const WRITE_TIME: Duration = Duration::from_secs(5);
/// How long a scrape waits for a fresh text before it takes the last one.
const REFRESH_WAIT: Duration = Duration::from_secs(3);
/// The largest request head read.
const MAX_HEAD: usize = 8192;

type Labels = Vec<(String, String)>;
/// A family's samples: labels and value.
type Samples = Vec<(Labels, u64)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn encode(self, n: u64, sample: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Kind::Counter => ConstCounter::new(n).encode(sample),
            Kind::Gauge => ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX)).encode(sample),
        }
    }
}

/// One metric family, with the report's values.
#[derive(Debug)]
struct MetricFamily {
    name: &'static str,
    help: String,
    unit: Option<Unit>,
    kind: Kind,
    samples: Samples,
}

/// The report's values as metric families, in the order they are added
/// (a collector: the values are the report's, not live instruments).
#[derive(Debug, Default)]
struct Exposition(Vec<MetricFamily>);

impl Exposition {
    /// A family `bitsgw_<name>[_<unit>]`, `_total` on each counter
    /// sample; none when there is nothing to count (a role without the
    /// stage).
    fn add(
        &mut self,
        kind: Kind,
        name: &'static str,
        help: &str,
        unit: Option<Unit>,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let samples: Vec<_> = samples.into_iter().collect();
        if !samples.is_empty() {
            self.0.push(MetricFamily {
                name,
                help: format!("{help}."),
                unit,
                kind,
                samples,
            });
        }
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let kind = match f.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Gauge => MetricType::Gauge,
            };
            let mut family = encoder.encode_descriptor(f.name, &f.help, f.unit.as_ref(), kind)?;
            match f.samples.as_slice() {
                // A family without labels: its one sample has no braces.
                [(labels, n)] if labels.is_empty() => f.kind.encode(*n, family)?,
                samples => {
                    for (labels, n) in samples {
                        f.kind.encode(*n, family.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which stage counts a drop reason of the report.
fn drop_stage(reason: &str) -> &'static str {
    if DropReason::ALL.iter().any(|r| r.name() == reason) {
        "ipsec"
    } else if PipelineDrop::ALL.iter().any(|r| r.name() == reason) {
        "pipeline"
    } else if MobilityDrop::ALL.iter().any(|r| r.name() == reason) {
        "mobility"
    } else {
        "other"
    }
}

/// How a key of the report's `counters.ipsec` is exported: metric name,
/// labels, help.
fn ipsec_metric(key: &str) -> Option<(&'static str, Labels, &'static str)> {
    const PACKETS: &str =
        "Packets the IPsec stage passed, by direction and what it did (RFC 4301 5)";
    Some(match key {
        "outbound_protected" => (
            "ipsec_packets",
            labels(&[("direction", "outbound"), ("action", "protected")]),
            PACKETS,
        ),
        "outbound_bypassed" => (
            "ipsec_packets",
            labels(&[("direction", "outbound"), ("action", "bypassed")]),
            PACKETS,
        ),
        "inbound_decrypted" => (
            "ipsec_packets",
            labels(&[("direction", "inbound"), ("action", "decrypted")]),
            PACKETS,
        ),
        "inbound_bypassed" => (
            "ipsec_packets",
            labels(&[("direction", "inbound"), ("action", "bypassed")]),
            PACKETS,
        ),
        "ike_passed" => (
            "ike_passed_packets",
            Labels::new(),
            "IKE datagrams the IPsec stage let through to the appliance (RFC 4301 5.1)",
        ),
        "fragments_held" => (
            "ipsec_fragments_held",
            Labels::new(),
            "IP fragments held for reassembly before the SPD lookup",
        ),
        "reassembled" => (
            "ipsec_reassembled_packets",
            Labels::new(),
            "Packets reassembled from fragments before the SPD lookup",
        ),
        "fragments_sent" => (
            "ipsec_fragments_sent",
            Labels::new(),
            "Fragments sent of packets too big for the path after ESP",
        ),
        _ => return None,
    })
}

/// The report (`report::to_json`, with what `interfaces::add_counters`
/// adds) in the OpenMetrics text format, ending with `# EOF`.
pub fn encode(v: &Value) -> String {
    let mut x = Exposition::default();
    let c = &v["counters"];
    let u = |v: &Value| v.as_u64();
    let ports = ["host", "network"];
    let per_port = |what: &str| {
        ports
            .iter()
            .flat_map(|p| ["rx", "tx"].map(|d| (*p, d)))
            .filter_map(|(p, d)| {
                let n = u(&c["ports"][p][format!("{d}_{what}")])?;
                Some((labels(&[("port", p), ("direction", d)]), n))
            })
            .collect::<Vec<_>>()
    };
    x.add(
        Kind::Counter,
        "port_frames",
        "Frames received (rx) and sent (tx) on a port",
        None,
        per_port("frames"),
    );
    x.add(
        Kind::Counter,
        "port",
        "Octets of the frames received (rx) and sent (tx) on a port",
        Some(Unit::Bytes),
        per_port("bytes"),
    );
    x.add(
        Kind::Counter,
        "non_ip_passed_frames",
        "Non-IP frames (ARP, allowed EtherTypes) passed between the ports",
        None,
        u(&c["non_ip_passed"]).map(|n| (Labels::new(), n)),
    );
    x.add(
        Kind::Counter,
        "layer2_dropped_frames",
        "Non-IP frames dropped, by EtherType",
        None,
        c["layer2_dropped"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, n)| Some((labels(&[("ethertype", k)]), u(n)?))),
    );
    x.add(
        Kind::Counter,
        "local_delivered_frames",
        "Frames for the appliance's own host stack",
        None,
        u(&c["local_delivered"]).map(|n| (Labels::new(), n)),
    );
    x.add(
        Kind::Counter,
        "handed_over_frames",
        "Frames a receive queue handed to the queue that owns their SA",
        None,
        u(&c["handed_over"]).map(|n| (Labels::new(), n)),
    );
    let mut ipsec: Vec<(&str, &str, Samples)> = Vec::new();
    for (key, n) in c["ipsec"].as_object().into_iter().flatten() {
        let (Some((name, l, help)), Some(n)) = (ipsec_metric(key), u(n)) else {
            continue;
        };
        match ipsec.iter_mut().find(|(m, _, _)| *m == name) {
            Some(entry) => entry.2.push((l, n)),
            None => ipsec.push((name, help, vec![(l, n)])),
        }
    }
    for (name, help, samples) in ipsec {
        x.add(Kind::Counter, name, help, None, samples);
    }
    x.add(
        Kind::Counter,
        "drops",
        "Packets dropped, by the stage that dropped them and the reason",
        None,
        c["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(r, n)| Some((labels(&[("stage", drop_stage(r)), ("reason", r)]), u(n)?))),
    );
    x.add(
        Kind::Counter,
        "mobility_events",
        "Events of the mobility stage: Binding Updates and Acknowledgements, bindings, handovers, NAT detection (RFC 6275, RFC 5555)",
        None,
        c["mobility"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(e, n)| Some((labels(&[("event", e)]), u(n)?))),
    );
    x.add(
        Kind::Counter,
        "link_losses",
        "Times a port's interface was found deleted",
        None,
        u(&c["link_losses"]).map(|n| (Labels::new(), n)),
    );
    x.add(
        Kind::Counter,
        "trace_write_failures",
        "Trace frames or flushes that could not be written",
        None,
        u(&c["trace_write_failures"]).map(|n| (Labels::new(), n)),
    );
    encode_mobility_state(&mut x, &v["bindings"]);
    encode_sas(&mut x, v);
    let spd = ["outbound", "inbound"].into_iter().flat_map(|d| {
        v["spd"][d]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(move |e| {
                let l = labels(&[("direction", d), ("entry", e["name"].as_str()?)]);
                Some((l, u(&e["hits"])?))
            })
    });
    x.add(
        Kind::Counter,
        "spd_hits",
        "Packets an SPD entry matched (RFC 4301 4.4.1)",
        None,
        spd,
    );
    let mut registry = Registry::with_prefix("bitsgw");
    registry.register_collector(Box::new(x));
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = text::encode(&mut out, &registry);
    out
}

/// The mobility stage's state from `show bindings` (added by
/// [`with_bindings`]): the home agent's bindings, the mobile node's
/// registration.
fn encode_mobility_state(x: &mut Exposition, b: &Value) {
    let one = |n: u64| Some((Labels::new(), n));
    match b["role"].as_str() {
        Some("ha") => {
            let list = b["bindings"].as_array().map_or(&[][..], Vec::as_slice);
            x.add(
                Kind::Gauge,
                "mobility_bindings",
                "Bindings in the home agent's binding cache (RFC 6275 10.1)",
                None,
                one(list.len() as u64),
            );
            x.add(
                Kind::Gauge,
                "mobility_nat_bindings",
                "Bindings of mobile nodes found behind a NAT (RFC 5555 4.2)",
                None,
                one(list.iter().filter(|e| e["nat"] == true).count() as u64),
            );
        }
        Some("mn") => {
            x.add(
                Kind::Gauge,
                "mobility_registered",
                "1 while the home agent has accepted the mobile node's current registration",
                None,
                one(u64::from(b["registered"].is_string())),
            );
            x.add(
                Kind::Gauge,
                "mobility_behind_nat",
                "1 while the mobile node is behind a NAT (RFC 5555 4.2)",
                None,
                one(u64::from(b["nat"] == true)),
            );
        }
        _ => {}
    }
}

/// `v` with the answer of `show bindings` (none, or an error, in the
/// gateway role), for [`encode`].
pub fn with_bindings(mut v: Value, bindings: Option<Value>) -> Value {
    if let Some(b) = bindings.filter(|b| b.get("error").is_none()) {
        v["bindings"] = b;
    }
    v
}

/// The per-SA metrics.
fn encode_sas(x: &mut Exposition, v: &Value) {
    let sas: Vec<(Labels, &Value)> = v["sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sa| {
            let spi = format!("{:#010x}", sa["spi"].as_u64()?);
            let l = labels(&[
                ("sa", sa["name"].as_str()?),
                ("spi", &spi),
                ("direction", sa["direction"].as_str()?),
            ]);
            Some((l, sa))
        })
        .collect();
    let field = |key: &'static str| {
        sas.iter()
            .filter_map(move |(l, sa)| Some((l.clone(), sa[key].as_u64()?)))
    };
    x.add(
        Kind::Counter,
        "sa_packets",
        "Packets an SA protected (outbound) or verified (inbound)",
        None,
        field("packets"),
    );
    x.add(
        Kind::Counter,
        "sa",
        "Payload octets an SA protected (outbound) or verified (inbound)",
        Some(Unit::Bytes),
        field("bytes"),
    );
    x.add(
        Kind::Counter,
        "sa_replay_drops",
        "Packets an inbound SA dropped as replayed or too old (RFC 4303 3.4.3)",
        None,
        field("replay_drops"),
    );
    x.add(
        Kind::Counter,
        "sa_icv_failures",
        "Packets an inbound SA dropped for a failed integrity check (RFC 4303 3.4.4)",
        None,
        field("icv_failures"),
    );
    x.add(
        Kind::Counter,
        "sa_other_drops",
        "Packets an SA dropped for another reason (malformed, sequence number exhausted)",
        None,
        field("other_drops"),
    );
    x.add(
        Kind::Gauge,
        "sa_sequence_number",
        "The last sequence number sent (outbound) or the highest received (inbound)",
        None,
        field("seq"),
    );
    x.add(
        Kind::Gauge,
        "sa_state",
        "1 for the state an SA is in (active, soft-expired, stopped), 0 for the others",
        None,
        sas.iter().flat_map(|(l, sa)| {
            crate::report::SA_STATES.iter().map(|s| {
                let mut l = l.clone();
                l.push(("state".into(), (*s).to_string()));
                (l, u64::from(sa["state"].as_str() == Some(s)))
            })
        }),
    );
    x.add(
        Kind::Gauge,
        "sa_expiry",
        "Seconds until an SA's soft or hard time limit falls due, 0 once it has (RFC 4301 4.4.2.1); SAs without a time limit have none",
        Some(Unit::Seconds),
        sas.iter().flat_map(|(l, sa)| {
            [("soft", "soft_expires_in_secs"), ("hard", "expires_in_secs")]
                .into_iter()
                .filter_map(|(limit, key)| {
                    let n = sa[key].as_u64()?;
                    let mut l = l.clone();
                    l.push(("limit".into(), limit.into()));
                    Some((l, n))
                })
        }),
    );
}

/// Events kept, at most, between two `show` requests.
const MAX_HELD_EVENTS: usize = 4096;

/// The IPsec events that reports made for the metrics took from the
/// workers: `show` reports the events since the last report, so they wait
/// here for the next one (the oldest go first past [`MAX_HELD_EVENTS`]).
#[derive(Debug, Default)]
pub struct HeldEvents(Vec<Event>);

impl HeldEvents {
    /// Takes `report`'s events.
    pub fn keep(&mut self, report: &mut Report) {
        self.0.append(&mut report.events);
        let excess = self.0.len().saturating_sub(MAX_HELD_EVENTS);
        self.0.drain(..excess);
    }

    /// Puts the held events in front of `report`'s.
    pub fn give(&mut self, report: &mut Report) {
        self.0.append(&mut report.events);
        report.events = std::mem::take(&mut self.0);
    }
}

/// The cached text and who waits for a fresh one.
#[derive(Debug, Default)]
struct Shared {
    cache: Mutex<Cached>,
    refreshed: Condvar,
    /// A scrape waits for a text younger than [`MAX_AGE`].
    wanted: AtomicBool,
    stop: AtomicBool,
}

#[derive(Debug, Default)]
struct Cached {
    text: Option<Arc<String>>,
    made: Option<Instant>,
}

/// The metrics endpoint of a running appliance.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

static ACCEPT_ERRORS: SharedLogLimit = SharedLogLimit::new(Duration::from_secs(10));
static SLOW_CLIENTS: SharedLogLimit = SharedLogLimit::new(Duration::from_secs(10));

impl MetricsServer {
    /// Listens on `addr` and serves `GET /metrics` from
    /// [`SERVING_THREADS`] threads.
    pub fn start(addr: SocketAddr) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| format!("metrics: can not listen on {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let shared = Arc::new(Shared::default());
        for i in 0..SERVING_THREADS {
            let listener = listener.try_clone().map_err(|e| e.to_string())?;
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("metrics-{i}"))
                .spawn(move || serve(&listener, &shared))
                .map_err(|e| format!("metrics: can not start a thread: {e}"))?;
        }
        Ok(MetricsServer { addr, shared })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a scrape waits for a fresh text (cleared by asking).
    pub fn take_wanted(&self) -> bool {
        self.shared.wanted.swap(false, Ordering::SeqCst)
    }

    /// Serves `text` from now on.
    pub fn publish(&self, text: String) {
        if let Ok(mut c) = self.shared.cache.lock() {
            c.text = Some(Arc::new(text));
            c.made = Some(Instant::now());
        }
        self.shared.refreshed.notify_all();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.refreshed.notify_all();
        // Wakes each thread from `accept`.
        for _ in 0..SERVING_THREADS {
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        }
    }
}

fn serve(listener: &TcpListener, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) if !shared.stop.load(Ordering::SeqCst) => answer(stream, shared),
            Ok(_) => break,
            Err(e) => {
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    warn!(suppressed, "metrics: {e}");
                }
                // Out of descriptors, say: never spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The newest text, waiting for a fresh one when it is older than
/// [`MAX_AGE`]; the last one if none comes in time.
fn snapshot(shared: &Shared) -> Option<Arc<String>> {
    let deadline = Instant::now() + REFRESH_WAIT;
    let mut c = shared.cache.lock().ok()?;
    loop {
        if let (Some(text), Some(made)) = (&c.text, c.made) {
            if made.elapsed() < MAX_AGE {
                return Some(Arc::clone(text));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || shared.stop.load(Ordering::SeqCst) {
            return c.text.clone();
        }
        shared.wanted.store(true, Ordering::SeqCst);
        c = shared.refreshed.wait_timeout(c, left).ok()?.0;
    }
}

/// Reads the request head by `deadline`; none if the client is too slow,
/// closes, or sends more than [`MAX_HEAD`] octets.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || head.len() > MAX_HEAD || stream.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(head)
}

/// What a request gets: status line and body.
fn route(head: &[u8], shared: &Shared) -> (&'static str, &'static str, Arc<String>) {
    let plain = "text/plain; charset=utf-8";
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return ("400 Bad Request", plain, Arc::new("bad request\n".into())),
    }
    if req.method != Some("GET") {
        return (
            "405 Method Not Allowed",
            plain,
            Arc::new("only GET\n".into()),
        );
    }
    if req.path.map(|p| p.split('?').next()) != Some(Some("/metrics")) {
        return ("404 Not Found", plain, Arc::new("see /metrics\n".into()));
    }
    match snapshot(shared) {
        Some(text) => ("200 OK", CONTENT_TYPE, text),
        None => (
            "503 Service Unavailable",
            plain,
            Arc::new("no report from the workers yet\n".into()),
        ),
    }
}

fn answer(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Some(head) = read_head(&mut stream, Instant::now() + REQUEST_TIME) else {
        return;
    };
    let (status, content_type, body) = route(&head, shared);
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    if !write_by(&mut stream, &out, Instant::now() + WRITE_TIME) {
        if let Some(suppressed) = SLOW_CLIENTS.allow() {
            warn!(suppressed, "metrics: a client did not take its answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_policy_file;
    use crate::report;
    use bitsgw_ipsec::sa::{Direction, SaState, SaStats};
    use bitsgw_pipeline::runner::{Report, SaReport};
    use bitsgw_wire::Timestamp;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// A report with every kind of value, through the same `to_json` as
    /// `show`.
    fn fixture() -> Value {
        let policy = load_policy_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies/site-to-site-a.json")
                .as_path(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut r = Report {
            now: Timestamp(100_000_000_000),
            spd_hits_out: vec![7; policy.outbound.len()],
            spd_hits_in: vec![5; policy.inbound.len()],
            ..Report::default()
        };
        r.pipeline.host_rx.frames = 10;
        r.pipeline.host_rx.bytes = 1000;
        r.pipeline.net_tx.frames = 9;
        r.pipeline.net_tx.bytes = 1400;
        r.stage.outbound_protected = 8;
        r.stage.add_drops(DropReason::ALL[0], 3);
        r.pipeline.record_n(PipelineDrop::ALL[0], 2);
        let sa = &policy.sas[0];
        r.sas.push(SaReport {
            name: sa.name.clone(),
            spi: 0x1001,
            direction: Direction::Outbound,
            mode: sa.mode,
            transform: sa.transform,
            backend: bitsgw_ipsec::crypto::GcmBackend::Ring,
            backend_setting: sa.backend,
            state: SaState::Active,
            stats: SaStats {
                packets: 8,
                bytes: 800,
                ..SaStats::default()
            },
            seq: 8,
            soft_expiry: Some(Timestamp(130_000_000_000)),
            hard_expiry: Some(Timestamp(160_000_000_000)),
        });
        let v = report::to_json(&r, &policy);
        crate::interfaces::add_counters(v, &crate::interfaces::LinkWatches::default(), None)
    }

    /// Samples by `name{labels}`, from the text through an independent
    /// parser (the format Prometheus' own parser reads).
    fn parsed(text: &str) -> BTreeMap<String, f64> {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}"));
        scrape
            .samples
            .into_iter()
            .map(|s| {
                let v = match s.value {
                    prometheus_parse::Value::Counter(v)
                    | prometheus_parse::Value::Gauge(v)
                    | prometheus_parse::Value::Untyped(v) => v,
                    other => panic!("unexpected {other:?}"),
                };
                let mut l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                l.sort();
                (format!("{}{{{}}}", s.metric, l.join(",")), v)
            })
            .collect()
    }

    #[test]
    fn encodes_the_report_in_openmetrics_text() {
        let v = fixture();
        let text = encode(&v);
        let sa = v["sas"][0]["name"].as_str().unwrap_or_default().to_string();
        let drop_ipsec = DropReason::ALL[0].name();
        let drop_pipeline = PipelineDrop::ALL[0].name();
        let out_entry = v["spd"]["outbound"][0]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for line in [
            "# HELP bitsgw_port_frames Frames received (rx) and sent (tx) on a port.".to_string(),
            "# TYPE bitsgw_port_frames counter".into(),
            "bitsgw_port_frames_total{port=\"host\",direction=\"rx\"} 10".into(),
            "bitsgw_port_frames_total{port=\"network\",direction=\"tx\"} 9".into(),
            "# UNIT bitsgw_port_bytes bytes".into(),
            "bitsgw_port_bytes_total{port=\"host\",direction=\"rx\"} 1000".into(),
            "bitsgw_ipsec_packets_total{direction=\"outbound\",action=\"protected\"} 8".into(),
            format!("bitsgw_drops_total{{stage=\"ipsec\",reason=\"{drop_ipsec}\"}} 3"),
            format!("bitsgw_drops_total{{stage=\"pipeline\",reason=\"{drop_pipeline}\"}} 2"),
            format!("bitsgw_sa_packets_total{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\"}} 8"),
            format!("bitsgw_sa_bytes_total{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\"}} 800"),
            format!("bitsgw_sa_state{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\",state=\"active\"}} 1"),
            format!("bitsgw_sa_state{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\",state=\"stopped\"}} 0"),
            "# UNIT bitsgw_sa_expiry_seconds seconds".into(),
            format!("bitsgw_sa_expiry_seconds{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\",limit=\"soft\"}} 30"),
            format!("bitsgw_sa_expiry_seconds{{sa=\"{sa}\",spi=\"0x00001001\",direction=\"outbound\",limit=\"hard\"}} 60"),
            format!("bitsgw_spd_hits_total{{direction=\"outbound\",entry=\"{out_entry}\"}} 7"),
            "bitsgw_link_losses_total 0".into(),
            "bitsgw_trace_write_failures_total 0".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // Every family has help text; the gateway role has no mobility.
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# HELP")).count(),
            families
        );
        assert!(!text.contains("mobility_events"));

        // An independent parser reads it, with the report's values.
        let samples = parsed(&text);
        let drops: f64 = samples
            .iter()
            .filter(|(k, _)| k.starts_with("bitsgw_drops_total{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(Some(drops), v["counters"]["drops_total"].as_f64());
        assert_eq!(
            samples.get(&format!(
                "bitsgw_sa_bytes_total{{direction=outbound,sa={sa},spi=0x00001001}}"
            )),
            Some(&800.0)
        );
        // Every drop reason of the report is a sample, each with its stage.
        let reasons = v["counters"]["drops"].as_object().map_or(0, |m| m.len());
        assert_eq!(
            samples
                .keys()
                .filter(|k| k.starts_with("bitsgw_drops_total{"))
                .count(),
            reasons
        );
        assert!(!samples.keys().any(|k| k.contains("stage=other")));
    }

    #[test]
    fn events_a_metrics_report_took_reach_the_next_show_in_order() {
        let policy = load_policy_file(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("policies/site-to-site-a.json")
                .as_path(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut stage = bitsgw_ipsec::IpsecStage::new(bitsgw_ipsec::StageConfig::default());
        policy
            .apply(&mut stage, Timestamp::ZERO)
            .unwrap_or_else(|e| panic!("{e}"));
        let Some((sa, _)) = stage.sad().iter().next() else {
            panic!("no SA")
        };
        let event = |n: u64| Event::SeqOverflow {
            sa,
            name: format!("sa{n}"),
            spi: n as u32,
        };
        let mut held = HeldEvents::default();
        let mut scraped = Report::default();
        scraped.events.push(event(1));
        held.keep(&mut scraped);
        assert!(scraped.events.is_empty());
        let mut shown = Report::default();
        shown.events.push(event(2));
        held.give(&mut shown);
        assert_eq!(
            format!("{:?}", shown.events),
            format!("{:?}", [event(1), event(2)])
        );
        // Given once.
        let mut next = Report::default();
        held.give(&mut next);
        assert!(next.events.is_empty());
        // Bounded: the newest stay.
        let mut many = Report::default();
        many.events
            .extend((0..MAX_HELD_EVENTS as u64 + 10).map(event));
        held.keep(&mut many);
        let mut shown = Report::default();
        held.give(&mut shown);
        assert_eq!(shown.events.len(), MAX_HELD_EVENTS);
        assert_eq!(format!("{:?}", shown.events[0]), format!("{:?}", event(10)));
    }

    #[test]
    fn mobility_state_of_both_roles() {
        let ha = serde_json::json!({"role": "ha", "address": "2001:db8::1", "bindings": [
            {"home": "2001:db8:1::100", "nat": true},
            {"home": "2001:db8:1::101", "nat": false},
        ]});
        let text = encode(&with_bindings(fixture(), Some(ha)));
        assert!(
            text.lines().any(|l| l == "bitsgw_mobility_bindings 2"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "bitsgw_mobility_nat_bindings 1"));
        let mn = serde_json::json!({"role": "mn", "registered": "203.0.113.7", "nat": false});
        let text = encode(&with_bindings(fixture(), Some(mn)));
        assert!(
            text.lines().any(|l| l == "bitsgw_mobility_registered 1"),
            "{text}"
        );
        assert!(text.lines().any(|l| l == "bitsgw_mobility_behind_nat 0"));
        let gateway = serde_json::json!({"error": "no mobility stage"});
        let text = encode(&with_bindings(fixture(), Some(gateway)));
        assert!(!text.contains("bitsgw_mobility"));
    }

    #[test]
    fn every_ipsec_counter_of_the_report_is_exported() {
        let v = fixture();
        for key in v["counters"]["ipsec"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                ipsec_metric(key).is_some(),
                "counters.ipsec.{key} has no metric"
            );
        }
    }

    #[test]
    fn no_key_material_in_the_text() {
        let text = encode(&fixture());
        for word in ["key", "secret", "enc_", "auth_"] {
            assert!(!text.to_lowercase().contains(word), "{word} in\n{text}");
        }
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        use std::io::Write as _;
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn serves_the_cached_text_and_asks_for_a_fresh_one_at_most_once_per_max_age() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = server.addr();
        // The "main loop": renews the text when asked, counting how often.
        let refreshes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let server = Arc::new(server);
        let main = {
            let (server, refreshes, stop) = (
                Arc::clone(&server),
                Arc::clone(&refreshes),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if server.take_wanted() {
                        let n = refreshes.fetch_add(1, Ordering::SeqCst) + 1;
                        server.publish(format!("# refresh {n}\n# EOF\n"));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let started = Instant::now();
        let first = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
        assert!(first.contains(CONTENT_TYPE));
        assert!(first.ends_with("# refresh 1\n# EOF\n"), "{first}");
        // A storm of 200 clients at once: all answered, from few reports.
        let clients: Vec<_> = (0..200)
            .map(|_| std::thread::spawn(move || get(addr, "GET /metrics HTTP/1.0\r\n\r\n")))
            .collect();
        for c in clients {
            let r = c.join().unwrap_or_default();
            assert!(
                r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("# EOF\n"),
                "{r}"
            );
        }
        let elapsed = started.elapsed().as_secs_f64();
        let n = refreshes.load(Ordering::SeqCst);
        assert!(
            (n as f64) <= elapsed / MAX_AGE.as_secs_f64() + 1.0,
            "{n} refreshes in {elapsed} s"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "nonsense\r\n\r\n").starts_with("HTTP/1.1 400"));
        stop.store(true, Ordering::SeqCst);
        let _ = main.join();
    }

    #[test]
    fn a_client_that_sends_nothing_holds_a_thread_only_for_the_request_time() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        server.publish("# EOF\n".into());
        // Every serving thread taken by a silent client.
        let silent: Vec<TcpStream> = (0..SERVING_THREADS)
            .filter_map(|_| TcpStream::connect(server.addr()).ok())
            .collect();
        let started = Instant::now();
        let r = get(server.addr(), "GET / HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");
        assert!(started.elapsed() < REQUEST_TIME + Duration::from_secs(2));
        drop(silent);
    }
}
