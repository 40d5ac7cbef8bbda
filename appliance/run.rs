//! `bitsgw run CONFIG`: the appliance on real interfaces until SIGINT or
//! SIGTERM; SIGHUP reloads the policy file. In the `mn` and `ha` roles the
//! one worker's gateway has the mobility stage; what the mobile node
//! reports (Binding Updates sent, registrations) is logged.

use crate::config::{self, load_policy_file, ApplianceConfig, OwnAddresses, PortConfig};
use crate::control;
use crate::control_request::{ControlRequest, ShowWhat};
use crate::ike::IkeCommand;
use crate::interfaces::{self, LinkWatches};
use crate::metrics::{self, HeldEvents, MetricsServer};
use crate::mobility::{self, MnControl};
use crate::report;
use crate::service::{self, Service};
use crate::trace::PcapTap;
use bitsgw_io::{Fanout, SmoltcpEndpoint};
use bitsgw_ipsec::config::PolicySet;
use bitsgw_ipsec::IpsecStage;
use bitsgw_pipeline::port::Port;
use bitsgw_pipeline::routed::{Route, Routed, RoutedConfig, RoutedSide};
use bitsgw_pipeline::runner::{self, QueueConfig, QueuePorts, RunnerConfig, SharedTap};
use bitsgw_pipeline::{LinkType, LocalEndpoint, Mobility, Side};
use bitsgw_wire::Timestamp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

fn open(p: &PortConfig, cfg: &ApplianceConfig, links: &mut LinkWatches) -> Result<Port, String> {
    let port = match p {
        PortConfig::AfPacket { interface } => {
            bitsgw_io::af_packet_with(interface, cfg.on_link_loss).map(|(port, watch)| {
                links.add(interface, watch);
                port
            })
        }
        PortConfig::Tun { name } => bitsgw_io::tun(name),
        #[cfg(feature = "af-xdp")]
        PortConfig::AfXdp { interface } => bitsgw_io::af_xdp(interface),
        // Refused when the configuration was loaded.
        #[cfg(not(feature = "af-xdp"))]
        PortConfig::AfXdp { interface } => {
            return Err(format!("port {interface}: built without AF_XDP ports"))
        }
    };
    port.map_err(|e| e.to_string())
}

/// `cfg.workers` handles on a port, one per queue (`"pipeline":
/// "queues"`): af_packet sockets in one `PACKET_FANOUT` group, steered by
/// `fanout`, whose first handle reports the interface's losses and returns
/// for all of them; or the queues of a multi-queue TUN device, which the
/// kernel fills by flow hash (what reaches a queue not owning its SA is
/// handed over).
fn open_queues(
    p: &PortConfig,
    cfg: &ApplianceConfig,
    links: &mut LinkWatches,
    fanout: Fanout,
) -> Result<Vec<Port>, String> {
    let interface = match p {
        PortConfig::AfPacket { interface } => interface,
        PortConfig::Tun { name } => {
            return bitsgw_io::tun_queues(name, cfg.workers).map_err(|e| e.to_string())
        }
        // Refused when the configuration was loaded.
        PortConfig::AfXdp { interface } => {
            return Err(format!(
                "port {interface}: queues need af_packet or tun ports"
            ))
        }
    };
    let opened = bitsgw_io::af_packet_fanout(interface, cfg.on_link_loss, cfg.workers, fanout)
        .map_err(|e| e.to_string())?;
    let mut ports = Vec::with_capacity(opened.len());
    for (i, (port, watch)) in opened.into_iter().enumerate() {
        if i == 0 {
            links.add(interface, watch);
        }
        ports.push(port);
    }
    Ok(ports)
}

/// The ports as the pipeline takes them: one handle per port, or one per
/// port and queue.
enum Opened {
    Ports { host: Port, network: Port },
    Queues(Vec<QueuePorts>),
}

impl Opened {
    fn open(cfg: &ApplianceConfig, links: &mut LinkWatches) -> Result<Self, String> {
        if !cfg.queues {
            let host = open(&cfg.host, cfg, links)?;
            let network = open(&cfg.network, cfg, links)?;
            return Ok(Opened::Ports { host, network });
        }
        // Outbound, IPv4 goes to the owner of the first SPD entry its
        // addresses match; inbound, ESP to its SPI's owner.
        let host = open_queues(&cfg.host, cfg, links, Fanout::ByRules)?;
        let network = open_queues(&cfg.network, cfg, links, Fanout::BySpi)?;
        Ok(Opened::Queues(
            host.into_iter()
                .zip(network)
                .map(|(host, network)| QueuePorts { host, network })
                .collect(),
        ))
    }

    /// What frames start with on the host and on the network side.
    fn link_types(&self) -> (LinkType, LinkType) {
        match self {
            Opened::Ports { host, network } => (host.rx.link_type(), network.rx.link_type()),
            Opened::Queues(q) => q
                .first()
                .map_or((LinkType::Ethernet, LinkType::Ethernet), |q| {
                    (q.host.rx.link_type(), q.network.rx.link_type())
                }),
        }
    }
}

/// The appliance's own host stack on a side, if it has addresses there
/// (raw IP on a TUN port). One stack per side: the workers get clones that
/// share it (one neighbor cache; whichever worker a request reaches
/// answers it).
fn endpoint(own: &OwnAddresses, port: &PortConfig) -> Result<Option<SmoltcpEndpoint>, String> {
    if own.addresses.is_empty() {
        return Ok(None);
    }
    let ep = match port {
        PortConfig::Tun { .. } => SmoltcpEndpoint::new_raw_ip(&own.addresses),
        PortConfig::AfPacket { .. } | PortConfig::AfXdp { .. } => {
            SmoltcpEndpoint::new(side_mac(own, port)?, &own.addresses)
        }
    };
    ep.map(Some).map_err(|e| e.to_string())
}

/// The appliance's MAC on a side: the configured one, or the interface's.
fn side_mac(own: &OwnAddresses, port: &PortConfig) -> Result<[u8; 6], String> {
    Ok(match (own.mac, port) {
        (Some(m), _) => m,
        (None, PortConfig::AfPacket { interface } | PortConfig::AfXdp { interface }) => {
            bitsgw_io::interface_mac(interface).map_err(|e| e.to_string())?
        }
        // Routed mode on a TUN port is refused when the configuration is
        // loaded; the host stack there has no MAC.
        (None, PortConfig::Tun { name }) => {
            return Err(format!("port {name}: a TUN port has no MAC"))
        }
    })
}

/// Routed mode's settings (the MACs are the endpoints'), or none inline.
fn routed(cfg: &ApplianceConfig) -> Result<Option<Routed>, String> {
    let Some(routes) = &cfg.routes else {
        return Ok(None);
    };
    let side = |own: &OwnAddresses, port: &PortConfig, routes: &[Route]| {
        side_mac(own, port).map(|mac| RoutedSide {
            mac,
            addresses: own.addresses.clone(),
            routes: routes.to_vec(),
        })
    };
    Ok(Some(Routed::new(RoutedConfig {
        host: side(&cfg.host_addresses, &cfg.host, &routes.host)?,
        network: side(&cfg.network_addresses, &cfg.network, &routes.network)?,
    })))
}

/// A stage with the configuration's policies, as every worker gets one,
/// its SAs installed at `now` (their lifetimes count from then).
pub fn build_stage(
    cfg: &ApplianceConfig,
    policy: &PolicySet,
    now: Timestamp,
) -> Result<IpsecStage, String> {
    let mut stage = IpsecStage::new(cfg.stage.clone());
    policy.apply(&mut stage, now).map_err(|e| e.to_string())?;
    Ok(stage)
}

/// Runs the appliance; returns an error (and a non-zero exit) when it
/// could not start or stopped on its own.
pub fn run(path: &Path, trace: Option<PathBuf>) -> Result<(), String> {
    let mut cfg = config::load(path).map_err(|e| e.to_string())?;
    // Every outbound SA sends only sequence numbers leased in the state
    // directory, so none is sent twice under its key across restarts.
    cfg.stage.sequence_leases = true;
    // SAs configured `auto` take the AES-GCM backend that is faster here.
    let gcm = crate::gcm_calibration::calibrate();
    cfg.stage.gcm = gcm.preference;
    info!(measured = %gcm.summary(), "AES-GCM backend for SAs configured auto");
    for w in &cfg.policy.warnings {
        warn!("{w}");
    }
    // One appliance per interface; then, to refuse to start
    // half-configured, the state directory, both ports and the socket
    // first.
    let _locks = interfaces::lock(&cfg)?;
    let leases = Arc::new(crate::leases::FileLeases::open(&cfg.state_dir)?);
    info!(file = %leases.path().display(), "sequence leases kept here");
    let mut links = LinkWatches::default();
    let opened = Opened::open(&cfg, &mut links)?;
    let (host_link, net_link) = opened.link_types();
    let host_ep = endpoint(&cfg.host_addresses, &cfg.host)?;
    // On a TUN port the network side's stack serves IKE alone: none
    // without peers, and no packet is looked at for it.
    let net_ep = match (&cfg.network, cfg.peers.is_empty()) {
        (PortConfig::Tun { .. }, true) => None,
        _ => endpoint(&cfg.network_addresses, &cfg.network)?,
    };
    // IKE runs on the network side's own addresses (the configuration
    // made sure every peer's local address is one of them).
    let ike_port = match (&net_ep, cfg.peers.is_empty()) {
        (_, true) => None,
        (Some(ep), false) => Some(ep.open_ike(crate::ike::CHANNEL_DEPTH)),
        (None, false) => return Err("peers need addresses.network".into()),
    };
    let routed = routed(&cfg)?;
    let acquires = crate::ike::acquire_signals(&cfg);
    // The policies must install before anything runs.
    build_stage(&cfg, &cfg.policy, Timestamp::ZERO)?;
    let socket = control::bind(&cfg.control_socket, cfg.control_socket_group)?;
    let metrics = cfg.metrics.map(MetricsServer::start).transpose()?;
    let tap: Option<Arc<Mutex<PcapTap>>> = match &trace {
        Some(dir) => Some(Arc::new(Mutex::new(PcapTap::create(
            dir, host_link, net_link,
        )?))),
        None => None,
    };
    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&term)).map_err(|e| e.to_string())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
        .map_err(|e| e.to_string())?;
    // Everything that needs privilege is open; no thread runs yet.
    service::give_up_privileges(&cfg)?;
    let mut service = Service::from_env();

    let mut policy = cfg.policy.clone();
    let runner_cfg = RunnerConfig {
        workers: cfg.workers,
        queue_depth: cfg.queue_depth,
        run_to_completion: cfg.run_to_completion,
    };
    let shared_tap: Option<SharedTap> = tap.clone().map(|t| t as SharedTap);
    let initial = policy.clone();
    let make_stage = || {
        // The same policies installed above: this can not fail now; if it
        // did, an empty stage discards everything (fail closed).
        build_stage(&cfg, &initial, Timestamp::ZERO).unwrap_or_else(|e| {
            error!("{e}");
            IpsecStage::new(cfg.stage.clone())
        })
    };
    let make_endpoint = |side| {
        let ep = match side {
            Side::Host => host_ep.as_ref(),
            Side::Network => net_ep.as_ref(),
        };
        ep.map(|e| Box::new(e.clone()) as Box<dyn LocalEndpoint>)
    };
    // Routed: each worker its own neighbor tables, learning from the others.
    let configure = |gw: &mut bitsgw_pipeline::Gateway| {
        if let Some(r) = &routed {
            gw.set_routed(r.clone());
        }
        gw.set_layer2_policy(cfg.layer2.clone());
        gw.set_lease_keeper(leases.clone());
        for (sa, signal) in &acquires {
            gw.stage_mut().set_acquire(sa, Arc::clone(signal));
        }
    };
    let running = match opened {
        Opened::Ports { host, network } => runner::start_configured(
            &runner_cfg,
            host,
            network,
            &make_stage,
            &make_endpoint,
            // The pipeline's clock starts now: an initial attachment's
            // Binding Update leaves on the worker's first loop.
            &|| {
                cfg.mobility
                    .as_ref()
                    .map(|m| mobility::build(m, Timestamp::ZERO))
            },
            &configure,
            shared_tap,
        ),
        Opened::Queues(queues) => runner::start_queues(
            &QueueConfig {
                inbox_depth: cfg.queue_depth,
            },
            queues,
            &make_stage,
            &make_endpoint,
            &configure,
            shared_tap,
        ),
    };
    let ike = match ike_port
        .map(|p| crate::ike::start(&cfg, p, &acquires))
        .transpose()
    {
        Ok(i) => i,
        Err(e) => {
            running.stop();
            return Err(e);
        }
    };
    info!(
        config = %cfg.file.display(),
        role = cfg.role.name(),
        mode = cfg.mode.name(),
        workers = cfg.workers,
        run_to_completion = cfg.run_to_completion,
        queues = cfg.queues,
        host_addresses = cfg.host_addresses.addresses.len(),
        network_addresses = cfg.network_addresses.addresses.len(),
        socket = %cfg.control_socket.display(),
        metrics = %metrics
            .as_ref()
            .map_or_else(|| "off".to_string(), |m| m.addr().to_string()),
        "bitsgw running"
    );
    // Clients are served by the control thread; this loop sees complete
    // requests only, one per turn, so a signal is never behind a client.
    let requests = match socket.serve() {
        Ok(r) => r,
        Err(e) => {
            running.stop();
            return Err(e);
        }
    };
    service.ready(&format!(
        "forwarding: {} role, {} workers, control socket {}",
        cfg.role.name(),
        cfg.workers,
        cfg.control_socket.display()
    ));
    let mut failure = None;
    let mut keying = mobility::Keying::default();
    let mut last_events = Instant::now();
    let mut held = HeldEvents::default();
    loop {
        match requests.recv_timeout(Duration::from_millis(20)) {
            Ok(req) => {
                let reloading = matches!(req.body, ControlRequest::Reload);
                if reloading {
                    service.reloading();
                }
                let reply = answer(
                    &running,
                    &cfg,
                    &mut policy,
                    &req.body,
                    &mut held,
                    ike.as_ref(),
                );
                if reloading {
                    service.reloaded(match (&reply["ok"], &reply["error"]) {
                        (Value::String(done), _) => Ok(done),
                        (_, Value::String(why)) => Err(why),
                        _ => Err("no answer"),
                    });
                }
                req.answer(interfaces::add_counters(reply, &links, tap.as_deref()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The control thread is gone (it never ends on its own): keep
            // forwarding, and the loop's pace.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(20)),
        }
        // At most once per `metrics::MAX_AGE`, and only when scraped.
        if let Some(m) = metrics.as_ref().filter(|m| m.take_wanted()) {
            let mut last = running.report(Duration::from_secs(2));
            held.keep(&mut last);
            let state = cfg.mobility.is_some().then(|| bindings(&running, &cfg));
            let v = metrics::with_bindings(report::to_json(&last, &policy), state);
            m.publish(metrics::encode(&interfaces::add_counters(
                v,
                &links,
                tap.as_deref(),
            )));
        }
        if let Some(ike) = &ike {
            while let Ok((change, done)) = ike.changes.try_recv() {
                apply_sa_change(&running, change);
                let _ = done.try_send(());
            }
            if cfg.mobility.is_some() {
                keying.follow(&running, ike);
            }
        }
        links.log_changes();
        if last_events.elapsed() >= Duration::from_secs(1) {
            last_events = Instant::now();
            if cfg.role == config::Role::MobileNode {
                running.apply(Arc::new(log_mn_events));
            }
            // A killed appliance leaves captures with every frame up to
            // here.
            if let Some(mut t) = tap.as_ref().and_then(|t| t.lock().ok()) {
                t.flush();
            }
        }
        if hup.swap(false, Ordering::SeqCst) {
            service.reloading();
            match reload(&running, &cfg, &mut policy) {
                Ok(done) => {
                    info!("{done}");
                    service.reloaded(Ok(&done));
                }
                Err(e) => {
                    warn!("{e}");
                    service.reloaded(Err(&e.to_string()));
                }
            }
        }
        service.tick(&running);
        if term.load(Ordering::SeqCst) {
            info!("stopping");
            service.stopping();
            break;
        }
        if !running.is_running() {
            failure = running.failure();
            break;
        }
    }
    drop(metrics);
    drop(ike);
    let (last, stop_failure) = running.stop();
    drop(socket);
    if let Some(t) = &tap {
        if let Ok(mut t) = t.lock() {
            let lost = t.finish();
            for p in t.paths() {
                info!(file = %p.display(), "trace written");
            }
            if lost != 0 {
                warn!(frames = lost, "trace frames could not be written");
            }
        }
    }
    links.log_changes();
    let v = interfaces::add_counters(report::to_json(&last, &policy), &links, tap.as_deref());
    println!("final counters:\n{}", report::counters_text(&v));
    match failure.or(stop_failure) {
        Some(f) => Err(f.to_string()),
        None => Ok(()),
    }
}

/// Logs (and so drains) what the mobile node reported.
fn log_mn_events(gw: &mut bitsgw_pipeline::Gateway) {
    if let Some(Mobility::MobileNode(mn)) = gw.mobility_mut() {
        while let Some(e) = mn.poll_event() {
            info!(event = ?e, "mobile node");
        }
    }
}

/// How long the main loop waits for the workers to confirm a change.
const WORKER_TIME: Duration = Duration::from_secs(2);

/// Runs `f` on every gateway (the workers' and the receive threads'
/// dispatch copies) and collects what each returns, waiting at most
/// [`WORKER_TIME`].
fn on_every_gateway<T: Send + 'static>(
    running: &runner::Running,
    f: impl Fn(&mut bitsgw_pipeline::Gateway) -> T + Send + Sync + 'static,
) -> Result<Vec<T>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    running.apply(Arc::new(move |gw| {
        let out = f(gw);
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(out);
        }
    }));
    let deadline = Instant::now() + WORKER_TIME;
    (0..running.gateways())
        .map(|_| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .map_err(|_| {
                    format!(
                        "the workers did not confirm within {} s",
                        WORKER_TIME.as_secs()
                    )
                })
        })
        .collect()
}

/// Why a reload did not (or not visibly) happen.
#[derive(Debug)]
enum ReloadError {
    /// Refused before any worker saw it: nothing changed.
    Refused(String),
    /// Handed to the workers, which did not all confirm it.
    Unconfirmed(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::Refused(e) => write!(f, "reload refused, nothing changed: {e}"),
            ReloadError::Unconfirmed(e) => write!(
                f,
                "reload handed to the workers, not confirmed by all of them: {e}"
            ),
        }
    }
}

/// Reloads the policy file into every worker, all or nothing; says what
/// changed, or why nothing did.
fn reload(
    running: &runner::Running,
    cfg: &ApplianceConfig,
    policy: &mut PolicySet,
) -> Result<String, ReloadError> {
    let new =
        load_policy_file(&cfg.policy_file).map_err(|e| ReloadError::Refused(e.to_string()))?;
    // The receive side recognises UDP-encapsulated ESP by the ports known
    // at start; an SA on another port would install and never receive.
    for sa in &new.sas {
        if let Some(port) = sa.udp_encap.map(|u| u.local_port) {
            if !cfg.stage.udp_encap_ports.contains(&port) {
                return Err(ReloadError::Refused(format!(
                    "{}: SA \"{}\": UDP encapsulation port {port} is not one the running appliance receives on; restart it to add a port",
                    new.file, sa.name
                )));
            }
        }
    }
    // The peers are read at start: the IKE-keyed SAs must stay the ones
    // they key.
    if let Some(problem) = crate::config::peers_mismatch(&cfg.peers, &new) {
        return Err(ReloadError::Refused(format!(
            "{}: {problem}; restart to change the peers",
            new.file
        )));
    }
    // The IKE thread keys them as they were at start.
    if let Some(sa) = new
        .ike_sas
        .iter()
        .find(|sa| cfg.policy.ike_sa(&sa.name) != Some(*sa))
    {
        return Err(ReloadError::Refused(format!(
            "{}: IKE-keyed SA \"{}\" changed; restart to change IKE-keyed SAs",
            new.file, sa.name
        )));
    }
    // One SA, one owner (docs/ownership.md): an SA that stays keeps its
    // worker, so its bundle may not change under it.
    if let Some((sa, was, will)) = new.owner_changes(policy) {
        return Err(ReloadError::Refused(format!(
            "{}: SA \"{sa}\" would move to another worker (its bundle now starts with \"{will}\", not \"{was}\"); reload once without it, then with it",
            new.file
        )));
    }
    let now = running.now();
    // Built completely once here: what a reload can refuse does not depend
    // on the SAs a stage has (see `PolicySet::reload`), so a set that
    // builds here reloads on every worker, and one that does not changes
    // nothing anywhere.
    build_stage(cfg, &new, now).map_err(ReloadError::Refused)?;
    for w in &new.warnings {
        warn!("{w}");
    }
    let for_workers = new.clone();
    let outcomes = on_every_gateway(running, move |gw| {
        for_workers
            .reload(gw.stage_mut(), now)
            .map_err(|e| e.to_string())
    });
    // The workers have the new set (or will, if late): so does `show`.
    *policy = new;
    let summary = outcomes
        .and_then(|o| o.into_iter().collect::<Result<Vec<_>, _>>())
        .map_err(ReloadError::Unconfirmed)?;
    let s = summary.first().copied().unwrap_or_default();
    Ok(format!(
        "policies reloaded from {}: {} SAs kept, {} installed, {} removed",
        cfg.policy_file.display(),
        s.kept,
        s.installed,
        s.removed
    ))
}

/// The bindings of the worker that has the mobility stage.
fn bindings(running: &runner::Running, cfg: &ApplianceConfig) -> Value {
    if cfg.mobility.is_none() {
        return json!({"error": format!("the {} role has no bindings (no mobility stage)", cfg.role.name())});
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let now = running.now();
    running.apply(Arc::new(move |gw| {
        if let Some(m) = gw.mobility() {
            if let Ok(tx) = tx.lock() {
                let _ = tx.send(mobility::bindings_json(m, now));
            }
        }
    }));
    rx.recv_timeout(Duration::from_secs(2))
        .unwrap_or_else(|_| json!({"error": "the worker did not answer"}))
}

fn answer(
    running: &runner::Running,
    cfg: &ApplianceConfig,
    policy: &mut PolicySet,
    req: &ControlRequest,
    held: &mut HeldEvents,
    ike: Option<&crate::ike::IkeThread>,
) -> Value {
    let no_peers = || json!({"error": "no IKE peers are configured (\"peers\")"});
    match req {
        ControlRequest::Show(ShowWhat::Ike) => ike.map_or_else(no_peers, |i| i.status()),
        ControlRequest::Initiate(peer) => {
            ike.map_or_else(no_peers, |i| i.command(IkeCommand::Initiate(peer.clone())))
        }
        ControlRequest::Terminate(peer) => {
            ike.map_or_else(no_peers, |i| i.command(IkeCommand::Terminate(peer.clone())))
        }
        ControlRequest::Show(ShowWhat::Bindings) => bindings(running, cfg),
        ControlRequest::Show(ShowWhat::All) => {
            let mut last = running.report(Duration::from_secs(2));
            held.give(&mut last);
            report::to_json(&last, policy)
        }
        ControlRequest::Move { to, break_first } => move_to(running, cfg, to, !break_first, ike),
        ControlRequest::Refresh => refresh(running, cfg),
        ControlRequest::RemoveSa(name) => remove_sa(running, policy, name),
        ControlRequest::Reload => match reload(running, cfg, policy) {
            Ok(done) => {
                info!("{done} (by control request)");
                json!({ "ok": done })
            }
            Err(e) => {
                warn!("{e}");
                json!({ "error": e.to_string() })
            }
        },
    }
}

/// `ctl move`: the mobile node's movement, which its IKE follows.
fn move_to(
    running: &runner::Running,
    cfg: &ApplianceConfig,
    to: &str,
    keep_old: bool,
    ike: Option<&crate::ike::IkeThread>,
) -> Value {
    let attachment = match mobility::parse_move(cfg, to) {
        Ok(a) => a,
        Err(e) => return json!({ "error": e }),
    };
    let op = MnControl::Move {
        attachment,
        keep_old,
    };
    let now = running.now();
    info!(%attachment, keep_old, "movement by control request");
    running.apply(Arc::new(move |gw| mobility::control(gw, op, now)));
    if let Some(ike) = ike {
        let care_of = config::care_of_address(attachment);
        ike.tell(crate::ike::MobilityChange::MovedTo(care_of));
    }
    let how = if keep_old {
        "make-before-break"
    } else {
        "break-before-make"
    };
    json!({"ok": format!("moving to {attachment} ({how})")})
}

/// `ctl refresh`: the mobile node registers again now.
fn refresh(running: &runner::Running, cfg: &ApplianceConfig) -> Value {
    if let Err(e) = mobility::check_refresh(cfg) {
        return json!({ "error": e });
    }
    let now = running.now();
    running.apply(Arc::new(move |gw| {
        mobility::control(gw, MnControl::Refresh, now)
    }));
    json!({"ok": "refresh requested"})
}

/// `ctl remove-sa`: the SA goes from every gateway.
fn remove_sa(running: &runner::Running, policy: &PolicySet, name: &str) -> Value {
    if policy.sa_direction_mode(name).is_none() {
        return json!({"error": format!("no SA named \"{name}\"")});
    }
    // Like `ip xfrm state delete`: the SA goes, its policies stay, so
    // what they protect is discarded from now on.
    let owned = name.to_string();
    let removed = on_every_gateway(running, move |gw| {
        let id = gw.stage().sad().by_name(&owned);
        id.and_then(|id| gw.stage_mut().remove_sa(id)).is_some()
    });
    match removed {
        Ok(r) if r.contains(&true) => {
            info!(sa = %name, "SA removed by control request");
            json!({ "ok": format!("SA \"{name}\" removed") })
        }
        Ok(_) => {
            json!({ "error": format!("SA \"{name}\" is not installed (removed already?)") })
        }
        Err(e) => json!({ "error": e }),
    }
}

/// Applies what IKE decided to every gateway and waits until all have
/// it, through the stage's install path (each SA keyed only in its owner's
/// stage): in order, so a CHILD_SA's inbound SA before its outbound one; a
/// removal only of the SA that IKE deleted, not of the one a rekey put
/// under the same name. A fresh outbound SA gets its sequence lease at
/// once, so its first packet does not wait for the worker's next turn.
fn apply_sa_change(running: &runner::Running, change: crate::ike::SaChange) {
    use crate::ike::SaChange;
    let now = running.now();
    let done = match change {
        SaChange::Install { peer, sas } => on_every_gateway(running, move |gw| {
            for params in &sas {
                if let Err(e) = gw.stage_mut().install_sa(params.clone(), now) {
                    error!(%peer, sa = %params.name, error = %e, "IKE: SA not installed");
                }
            }
            gw.serve_leases(now);
        }),
        SaChange::Encapsulate { peer, sas, encap } => on_every_gateway(running, move |gw| {
            let stage = gw.stage_mut();
            for name in &sas {
                if let Some(id) = stage.sad().by_name(name) {
                    if !stage.set_udp_encap(id, encap) {
                        warn!(%peer, sa = %name, "IKE: SA without UDP encapsulation not moved");
                    }
                }
            }
        }),
        SaChange::Remove { peer, sas } => {
            info!(%peer, sas = ?sas.iter().map(|(n, _)| n).collect::<Vec<_>>(), "IKE: SAs removed");
            on_every_gateway(running, move |gw| {
                for (name, spi) in &sas {
                    let stage = gw.stage_mut();
                    let id = stage.sad().by_name(name).filter(|id| {
                        spi.is_none_or(|spi| stage.sad().get(*id).is_some_and(|sa| sa.spi() == spi))
                    });
                    if let Some(id) = id {
                        stage.remove_sa(id);
                    }
                }
            })
        }
    };
    if let Err(e) = done {
        warn!("IKE: {e}");
    }
}
