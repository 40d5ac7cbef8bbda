//! The running appliance's hold on its interfaces: one appliance per
//! interface (a second one would forward every frame again), and what it
//! does when an interface is deleted under it.

use crate::config::{ApplianceConfig, PortConfig};
use crate::trace::PcapTap;
use bitsgw_io::process::{InterfaceLock, LOCK_DIR};
use bitsgw_io::LinkWatch;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Mutex;
use tracing::{info, warn};

fn interface(p: &PortConfig) -> &str {
    match p {
        PortConfig::AfPacket { interface } | PortConfig::AfXdp { interface } => interface,
        PortConfig::Tun { name } => name,
    }
}

/// Claims both ports' interfaces in this network namespace for as long as
/// the locks live; refuses if another appliance holds one.
pub fn lock(cfg: &ApplianceConfig) -> Result<Vec<InterfaceLock>, String> {
    [&cfg.host, &cfg.network]
        .into_iter()
        .map(|p| {
            InterfaceLock::acquire(Path::new(LOCK_DIR), interface(p)).map_err(|e| e.to_string())
        })
        .collect()
}

/// The af_packet ports' link watches, and what the log has said of them.
#[derive(Debug, Default)]
pub struct LinkWatches {
    watched: Vec<Watched>,
}

#[derive(Debug)]
struct Watched {
    interface: String,
    watch: LinkWatch,
    losses: u64,
    returns: u64,
}

impl LinkWatches {
    /// Watches the interface of a port.
    pub fn add(&mut self, interface: &str, watch: LinkWatch) {
        self.watched.push(Watched {
            interface: interface.to_owned(),
            watch,
            losses: 0,
            returns: 0,
        });
    }

    /// Logs each loss and return of an interface once, as it happens.
    pub fn log_changes(&mut self) {
        for w in &mut self.watched {
            let (losses, returns) = (w.watch.losses(), w.watch.returns());
            if losses != w.losses {
                w.losses = losses;
                warn!(
                    interface = %w.interface,
                    losses,
                    "the interface is gone (deleted); receiving on it stopped"
                );
            }
            if returns != w.returns {
                w.returns = returns;
                info!(interface = %w.interface, "the interface is back; receiving again");
            }
        }
    }

    /// Times an interface was found gone.
    pub fn losses(&self) -> u64 {
        self.watched.iter().map(|w| w.watch.losses()).sum()
    }
}

/// Adds what the appliance counts outside the pipeline (interface losses,
/// trace frames that could not be written) to a `show counters` answer.
pub fn add_counters(mut v: Value, links: &LinkWatches, tap: Option<&Mutex<PcapTap>>) -> Value {
    if let Some(c) = v.get_mut("counters").and_then(Value::as_object_mut) {
        let trace = tap.and_then(|t| t.lock().ok()).map(|t| t.failures());
        c.insert("link_losses".into(), json!(links.losses()));
        c.insert("trace_write_failures".into(), json!(trace.unwrap_or(0)));
    }
    v
}
