//! `bitsgw replay`: the appliance's pipeline over capture files, time taken
//! from the captures, control events at capture times. Deterministic.
//! Events: `remove-sa NAME`, `reload`, and in the `mn` role
//! `move ATTACHMENT [--break]` and `refresh`. An `mn` configuration's
//! initial attachment is taken when the capture starts.
//!
//! Replay keeps no sequence lease: its SAs start at sequence number 1 on
//! every run, as determinism requires, and its output goes to capture
//! files only, never to a network, so no nonce it repeats ever reaches a
//! peer.

use crate::config;
use crate::config::load_policy_file;
use crate::event::{self, EventCommand};
use crate::mobility::{self, MnControl};
use crate::report;
use crate::run::build_stage;
use crate::trace::PcapTap;
use bitsgw_io::pcap::{PcapReader, PcapWriter};
use bitsgw_pipeline::replay::{self, ReplayInput, ScheduledEvent};
use bitsgw_pipeline::{Gateway, LinkType, NoTap, Side};
use bitsgw_wire::Timestamp;
use std::path::{Path, PathBuf};

fn side(name: &str) -> Result<Side, String> {
    match name {
        "host" => Ok(Side::Host),
        "network" => Ok(Side::Network),
        other => Err(format!(
            "unknown port \"{other}\" (the ports are host and network)"
        )),
    }
}

fn split(arg: &str, what: &str) -> Result<(Side, PathBuf), String> {
    let (p, f) = arg
        .split_once('=')
        .ok_or_else(|| format!("{what} {arg}: expected PORT=FILE"))?;
    Ok((side(p)?, PathBuf::from(f)))
}

/// Refuses an `--out` file that is one of the `--in` files (by device and
/// inode, so also through a symbolic or hard link): writing it would
/// destroy the capture being replayed.
fn refuse_output_over_input(inputs: &[String], outputs: &[String]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mut read = Vec::new();
    for arg in inputs {
        let (_, file) = split(arg, "--in")?;
        if let Ok(m) = std::fs::metadata(&file) {
            read.push(((m.dev(), m.ino()), file));
        }
    }
    for arg in outputs {
        let (_, file) = split(arg, "--out")?;
        let Ok(m) = std::fs::metadata(&file) else {
            continue;
        };
        if let Some((_, input)) = read.iter().find(|(id, _)| *id == (m.dev(), m.ino())) {
            return Err(format!(
                "--out {arg}: {} is the input capture {}; writing it would destroy it",
                file.display(),
                input.display()
            ));
        }
    }
    Ok(())
}

/// Runs a replay; prints where the output went and the counters.
pub fn run(
    config_path: &Path,
    inputs: &[String],
    outputs: &[String],
    events: &[String],
    trace: Option<PathBuf>,
) -> Result<(), String> {
    let cfg = config::load(config_path).map_err(|e| e.to_string())?;
    refuse_output_over_input(inputs, outputs)?;
    let mut replay_inputs = Vec::new();
    let mut link: Option<LinkType> = None;
    for arg in inputs {
        let (side, file) = split(arg, "--in")?;
        let mut r = PcapReader::open(&file).map_err(|e| e.to_string())?;
        let l = r.link_type();
        if link.is_some_and(|k| k != l) {
            return Err(format!(
                "{}: all captures of one replay must have the same link type",
                file.display()
            ));
        }
        link = Some(l);
        let mut frames = Vec::new();
        while let Some(f) = r.next_packet().map_err(|e| e.to_string())? {
            frames.push(f);
        }
        replay_inputs.push(ReplayInput {
            side,
            link: l,
            frames,
        });
    }
    let link = link.ok_or("give at least one --in PORT=FILE")?;
    let start = replay_inputs
        .iter()
        .filter_map(|i| i.frames.first().map(|f| f.0))
        .min()
        .unwrap_or(Timestamp::ZERO);
    let mut scheduled = Vec::new();
    for e in events {
        let event = event::parse(e)?;
        let at = start.saturating_add(event.after);
        let action: Box<dyn FnOnce(&mut Gateway)> = match event.command {
            EventCommand::RemoveSa(name) => Box::new(move |gw: &mut Gateway| {
                if let Some(id) = gw.stage().sad().by_name(&name) {
                    gw.stage_mut().remove_sa(id);
                }
            }),
            EventCommand::Reload => {
                let set = load_policy_file(&cfg.policy_file).map_err(|e| e.to_string())?;
                Box::new(move |gw: &mut Gateway| {
                    let _ = set.reload(gw.stage_mut(), at);
                })
            }
            EventCommand::Move { to, keep_old } => {
                let attachment =
                    mobility::parse_move(&cfg, &to).map_err(|m| format!("--event {e}: {m}"))?;
                let op = MnControl::Move {
                    attachment,
                    keep_old,
                };
                Box::new(move |gw: &mut Gateway| mobility::control(gw, op, at))
            }
            EventCommand::Refresh => {
                mobility::check_refresh(&cfg).map_err(|m| format!("--event {e}: {m}"))?;
                Box::new(move |gw: &mut Gateway| mobility::control(gw, MnControl::Refresh, at))
            }
        };
        scheduled.push(ScheduledEvent { at, action });
    }
    // SAs are installed when the capture starts, so lifetimes count from
    // the first frame.
    tracing::info!(
        "replay keeps no sequence lease (its SAs start at 1 on every run) and writes capture files only: it can not reach a network"
    );
    let mut gw = Gateway::new(build_stage(&cfg, &cfg.policy, start)?);
    gw.set_layer2_policy(cfg.layer2.clone());
    if let Some(m) = &cfg.mobility {
        gw.set_mobility(mobility::build(m, start));
    }
    let mut tap = match &trace {
        Some(dir) => Some(PcapTap::create(dir, link, link)?),
        None => None,
    };
    let out = match tap.as_mut() {
        Some(t) => replay::run(&mut gw, &replay_inputs, scheduled, t),
        None => replay::run(&mut gw, &replay_inputs, scheduled, &mut NoTap),
    };
    for arg in outputs {
        let (side, file) = split(arg, "--out")?;
        let frames = match side {
            Side::Host => &out.host,
            Side::Network => &out.network,
        };
        let mut w = PcapWriter::create(&file, link).map_err(|e| e.to_string())?;
        for (t, f) in frames {
            w.write(*t, f).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())?;
        println!(
            "{}: {} frames to {}",
            side.name(),
            frames.len(),
            file.display()
        );
    }
    if let Some(t) = tap.as_mut() {
        let failures = t.finish();
        if failures != 0 {
            return Err(format!(
                "trace: {failures} frames or flushes could not be written; the captures in {} are incomplete",
                trace.as_deref().unwrap_or(Path::new("")).display()
            ));
        }
        for p in t.paths() {
            println!("trace: {}", p.display());
        }
    }
    let report = bitsgw_pipeline::runner::Report {
        stage: gw.stage().counters().clone(),
        pipeline: gw.counters().clone(),
        spd_hits_out: gw
            .stage()
            .spd(bitsgw_ipsec::sa::Direction::Outbound)
            .hits()
            .to_vec(),
        spd_hits_in: gw
            .stage()
            .spd(bitsgw_ipsec::sa::Direction::Inbound)
            .hits()
            .to_vec(),
        mobility: gw.mobility().map(|m| m.counters().clone()),
        ..Default::default()
    };
    let v = report::to_json(&report, &cfg.policy);
    print!("{}", report::counters_text(&v));
    Ok(())
}
