//! `bitsgw run CONFIG`: the appliance on real interfaces until SIGINT or
//! SIGTERM; SIGHUP reloads the policy file. In the `mn` and `ha` roles the
//! one worker's gateway has the mobility stage; what the mobile node
//! reports (Binding Updates sent, registrations) is logged.

use crate::config::{self, ApplianceConfig, OwnAddresses, PortConfig};
use crate::control;
use crate::mobility::{self, MnControl};
use crate::report;
use crate::trace::PcapTap;
use bitsgw_io::SmoltcpEndpoint;
use bitsgw_ipsec::config::{load_policy_file, PolicySet};
use bitsgw_ipsec::IpsecStage;
use bitsgw_pipeline::port::Port;
use bitsgw_pipeline::routed::{Route, Routed, RoutedConfig, RoutedSide};
use bitsgw_pipeline::runner::{self, RunnerConfig, SharedTap};
use bitsgw_pipeline::{LocalEndpoint, Mobility, Side};
use bitsgw_wire::Timestamp;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

fn open(p: &PortConfig) -> Result<Port, String> {
    let port = match p {
        PortConfig::AfPacket { interface } => bitsgw_io::af_packet(interface),
        PortConfig::Tun { name } => bitsgw_io::tun(name),
    };
    port.map_err(|e| e.to_string())
}

/// The appliance's own host stack on a side, if it has addresses there.
/// One stack per side: the workers get clones that share it (one neighbor
/// cache; whichever worker a request reaches answers it).
fn endpoint(own: &OwnAddresses, port: &PortConfig) -> Result<Option<SmoltcpEndpoint>, String> {
    if own.addresses.is_empty() {
        return Ok(None);
    }
    let mac = side_mac(own, port)?;
    SmoltcpEndpoint::new(mac, &own.addresses)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// The appliance's MAC on a side: the configured one, or the interface's.
fn side_mac(own: &OwnAddresses, port: &PortConfig) -> Result<[u8; 6], String> {
    Ok(match (own.mac, port) {
        (Some(m), _) => m,
        (None, PortConfig::AfPacket { interface }) => {
            bitsgw_io::interface_mac(interface).map_err(|e| e.to_string())?
        }
        // Refused when the configuration was loaded.
        (None, PortConfig::Tun { name }) => {
            return Err(format!("port {name}: own addresses need an Ethernet port"))
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
    let leases = Arc::new(crate::leases::FileLeases::open(&cfg.state_dir)?);
    info!(file = %leases.path().display(), "sequence leases kept here");
    for w in &cfg.policy.warnings {
        warn!("{w}");
    }
    // Refuse to start half-configured: both ports and the socket first.
    let host = open(&cfg.host)?;
    let network = open(&cfg.network)?;
    let host_ep = endpoint(&cfg.host_addresses, &cfg.host)?;
    let net_ep = endpoint(&cfg.network_addresses, &cfg.network)?;
    let routed = routed(&cfg)?;
    // The policies must install before anything runs.
    build_stage(&cfg, &cfg.policy, Timestamp::ZERO)?;
    let listener = control::bind(&cfg.control_socket)?;
    let tap: Option<Arc<Mutex<PcapTap>>> = match &trace {
        Some(dir) => Some(Arc::new(Mutex::new(PcapTap::create(
            dir,
            host.rx.link_type(),
            network.rx.link_type(),
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

    let mut policy = cfg.policy.clone();
    let runner_cfg = RunnerConfig {
        workers: cfg.workers,
        queue_depth: cfg.queue_depth,
        run_to_completion: cfg.run_to_completion,
    };
    let shared_tap: Option<SharedTap> = tap.clone().map(|t| t as SharedTap);
    let initial = policy.clone();
    let running = runner::start_configured(
        &runner_cfg,
        host,
        network,
        // The same policies installed above: this can not fail now; if it
        // did, an empty stage discards everything (fail closed).
        &|| {
            build_stage(&cfg, &initial, Timestamp::ZERO).unwrap_or_else(|e| {
                error!("{e}");
                IpsecStage::new(cfg.stage.clone())
            })
        },
        &|side| {
            let ep = match side {
                Side::Host => host_ep.as_ref(),
                Side::Network => net_ep.as_ref(),
            };
            ep.map(|e| Box::new(e.clone()) as Box<dyn LocalEndpoint>)
        },
        // The pipeline's clock starts now: an initial attachment's Binding
        // Update leaves on the worker's first loop.
        &|| {
            cfg.mobility
                .as_ref()
                .map(|m| mobility::build(m, Timestamp::ZERO))
        },
        // Routed: the workers share one set of neighbor tables.
        &|gw| {
            if let Some(r) = &routed {
                gw.set_routed(r.clone());
            }
            gw.set_lease_keeper(leases.clone());
        },
        shared_tap,
    );
    info!(
        config = %cfg.file.display(),
        role = cfg.role.name(),
        mode = cfg.mode.name(),
        workers = cfg.workers,
        run_to_completion = cfg.run_to_completion,
        host_addresses = cfg.host_addresses.addresses.len(),
        network_addresses = cfg.network_addresses.addresses.len(),
        socket = %cfg.control_socket.display(),
        "bitsgw running"
    );
    let mut failure = None;
    let mut last_events = Instant::now();
    loop {
        control::serve_pending(&listener, &mut |req: &Value| {
            if req.get("reload").is_some() {
                hup.store(true, Ordering::SeqCst);
                return json!({"ok": "reload requested"});
            }
            answer(&running, &cfg, &policy, req)
        });
        if last_events.elapsed() >= Duration::from_secs(1) {
            last_events = Instant::now();
            if cfg.role == config::Role::MobileNode {
                running.apply(Arc::new(log_mn_events));
            }
        }
        if hup.swap(false, Ordering::SeqCst) {
            match load_policy_file(&cfg.policy_file) {
                Ok(new) => {
                    let now = running.now();
                    let for_workers = new.clone();
                    running.apply(Arc::new(move |gw| {
                        if let Err(e) = for_workers.reload(gw.stage_mut(), now) {
                            error!("reload: {e}");
                        }
                    }));
                    info!(policy = %cfg.policy_file.display(), "policies reloaded");
                    policy = new;
                }
                Err(e) => warn!("reload refused, the old policies stay: {e}"),
            }
        }
        if term.load(Ordering::SeqCst) {
            info!("stopping");
            break;
        }
        if !running.is_running() {
            failure = running.failure();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (last, stop_failure) = running.stop();
    let _ = std::fs::remove_file(&cfg.control_socket);
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
    let v = report::to_json(&last, &policy);
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
    policy: &PolicySet,
    req: &Value,
) -> Value {
    if req.get("show").and_then(Value::as_str) == Some("bindings") {
        return bindings(running, cfg);
    }
    if req.get("show").is_some() {
        return report::to_json(&running.report(Duration::from_secs(2)), policy);
    }
    if let Some(to) = req.get("move").and_then(Value::as_str) {
        let attachment = match mobility::parse_move(cfg, to) {
            Ok(a) => a,
            Err(e) => return json!({ "error": e }),
        };
        let keep_old = req.get("break").and_then(Value::as_bool) != Some(true);
        let op = MnControl::Move {
            attachment,
            keep_old,
        };
        let now = running.now();
        info!(%attachment, keep_old, "movement by control request");
        running.apply(Arc::new(move |gw| mobility::control(gw, op, now)));
        let how = if keep_old {
            "make-before-break"
        } else {
            "break-before-make"
        };
        return json!({"ok": format!("moving to {attachment} ({how})")});
    }
    if req.get("refresh").is_some() {
        if let Err(e) = mobility::check_refresh(cfg) {
            return json!({ "error": e });
        }
        let now = running.now();
        running.apply(Arc::new(move |gw| {
            mobility::control(gw, MnControl::Refresh, now)
        }));
        return json!({"ok": "refresh requested"});
    }
    if let Some(name) = req.get("remove_sa").and_then(Value::as_str) {
        if !policy.sas.iter().any(|s| s.name == name) {
            return json!({"error": format!("no SA named \"{name}\"")});
        }
        // Like `ip xfrm state delete`: the SA goes, its policies stay, so
        // what they protect is discarded from now on.
        let name = name.to_string();
        info!(sa = %name, "SA removed by control request");
        running.apply(Arc::new(move |gw| {
            if let Some(id) = gw.stage().sad().by_name(&name) {
                gw.stage_mut().remove_sa(id);
            }
        }));
        return json!({"ok": "removed"});
    }
    json!({"error": "unknown request (known: show, remove_sa, reload, move, refresh)"})
}
