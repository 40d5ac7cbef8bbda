//! `bitsgw`: the appliance's command line.

mod bench;
mod check;
mod config;
mod control;
mod control_request;
mod docs;
mod event;
mod gcm_calibration;
mod ike;
mod interfaces;
mod lab;
mod leases;
mod log_limit;
mod logging;
mod metrics;
mod mobility;
mod replay;
mod report;
mod run;
mod service;
mod trace;

use clap::{Parser, Subcommand, ValueEnum};
use control_request::ControlRequest;
use std::path::PathBuf;
use std::process::ExitCode;

/// bitsgw: a bump-in-the-stack IPsec gateway with a Dual-Stack Mobile IPv6
/// tunnel stage.
#[derive(Debug, Parser)]
#[command(name = "bitsgw", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LabScenario {
    /// The mobile node's journey.
    Mobility,
    /// Two sites behind two gateways.
    SiteToSite,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ShowWhat {
    /// Security associations with their counters.
    Sa,
    /// Security policies with their hit counts.
    Sp,
    /// Port, stage, mobility and drop counters.
    Counters,
    /// The home agent's binding cache, or the mobile node's registration
    /// (the ha and mn roles).
    Bindings,
    /// IKEv2 peers: their IKE SAs and CHILD_SAs, algorithms, SPIs,
    /// counters (never keys).
    Ike,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the appliance on real interfaces (SIGINT/SIGTERM stop it and
    /// print the final counters; SIGHUP reloads the policy file).
    Run {
        /// The appliance configuration (JSON).
        config: PathBuf,
        /// Write a pcap per stage boundary (host, after IPsec, wire) here.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Validate an appliance configuration or a policy file and print the
    /// resolved ports, SPD and SAD (keys masked).
    Check {
        /// The appliance configuration or policy file (JSON).
        file: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Run the pipeline over capture files, deterministically.
    Replay {
        /// The appliance configuration (its ports are not opened).
        config: PathBuf,
        /// Frames arriving on a port: host=FILE.pcap or network=FILE.pcap.
        #[arg(long = "in", value_name = "PORT=FILE")]
        inputs: Vec<String>,
        /// Where to write the frames that left a port.
        #[arg(long = "out", value_name = "PORT=FILE")]
        outputs: Vec<String>,
        /// A control event at a time in seconds after the first frame:
        /// "1.5:remove-sa NAME", "2:reload", and in the mn role
        /// "0:move ATTACHMENT" (home, an IPv6 or IPv4 care-of address;
        /// add " --break" for break-before-make) or "30:refresh".
        #[arg(long = "event", value_name = "SECONDS:COMMAND")]
        events: Vec<String>,
        /// Write a pcap per stage boundary here.
        #[arg(long)]
        trace: Option<PathBuf>,
    },
    /// Change a running appliance: `remove-sa NAME` (its traffic is then
    /// discarded, never sent in clear), `reload` (the policy file, all or
    /// nothing), and in the mn role `move ATTACHMENT` (home, an IPv6 or
    /// IPv4 care-of address; make-before-break unless --break) or
    /// `refresh`. Prints the appliance's answer; exits with 1 when it
    /// refused (a reload that changed nothing, an SA not installed).
    Ctl {
        /// The command and its argument.
        #[arg(num_args = 1..=2, required = true)]
        command: Vec<String>,
        /// With `move`: break-before-make (the old network is gone at once;
        /// data waits, counted as dropped, for the Binding Acknowledgement).
        #[arg(long = "break")]
        break_first: bool,
        /// The appliance's control socket.
        #[arg(long, default_value = "/run/bitsgw/bitsgw.sock")]
        socket: PathBuf,
    },
    /// The whole story in network namespaces (needs root): `mobility` (a
    /// mobile host behind an `mn` appliance moving between IPv6, public
    /// IPv4 and a NAT, a home agent, a correspondent) or `site-to-site`.
    Lab {
        /// Which lab.
        #[arg(value_enum, default_value_t = LabScenario::Mobility)]
        scenario: LabScenario,
        /// Shorter traffic phases.
        #[arg(long)]
        short: bool,
        /// Keep traces, captures and logs in this folder.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Mobility: every SA keyed by hand from the policy files (for
        /// comparison) instead of by IKEv2.
        #[arg(long)]
        manual_keys: bool,
        /// End with the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure throughput and latency of the threaded pipeline with
    /// synthetic traffic, next to the raw crypto ceiling measured in the
    /// same run.
    Bench {
        /// Inner packet sizes in octets, or imix (7:4:1 of 64/576/1500).
        #[arg(long, value_delimiter = ',', default_value = "64,256,512,1400,imix", value_parser = bench::Size::parse)]
        sizes: Vec<bench::Size>,
        /// Transforms ("null" is NULL with HMAC-SHA-256-128).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "aes-gcm-128,aes-gcm-256,chacha20-poly1305,aes-cbc-128-hmac-sha256,null-hmac-sha256",
            value_parser = bench::parse_transform
        )]
        transforms: Vec<bitsgw_ipsec::crypto::TransformId>,
        /// ESP modes: tunnel, transport.
        #[arg(long, value_delimiter = ',', default_value = "tunnel,transport", value_parser = bench::BenchMode::parse)]
        modes: Vec<bench::BenchMode>,
        /// Directions: encrypt, decrypt.
        #[arg(long, value_delimiter = ',', default_value = "encrypt,decrypt", value_parser = bench::Dir::parse)]
        direction: Vec<bench::Dir>,
        /// Worker thread counts to measure, rtc: run to completion (each
        /// port's receive thread handles its own frames), or q and a count
        /// of receive queues, each running to completion with a generator
        /// of its own (q1, q2).
        #[arg(long, value_delimiter = ',', default_value = "1", value_parser = bench::Threads::parse)]
        workers: Vec<bench::Threads>,
        /// Packets per configuration, after a warm-up.
        #[arg(long, default_value_t = 200_000, conflicts_with = "seconds")]
        packets: u64,
        /// Seconds per configuration instead of a packet count.
        #[arg(long)]
        seconds: Option<f64>,
        /// SA pairs (inner host pairs) the traffic is spread over.
        #[arg(long, default_value_t = 4)]
        flows: usize,
        /// Frames in flight at most (generated and not yet emitted).
        #[arg(long, default_value_t = 256)]
        window: u64,
        /// With queues (q2): spread encrypted flows by a hash of their
        /// addresses, as the kernel's flow hash would, instead of steering
        /// each to its SA's owner; frames of other queues' SAs are then
        /// handed over.
        #[arg(long)]
        flow_hash: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Write an SVG plot of throughput against packet size here.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Write the man pages and shell completions into a folder (for
    /// packaging).
    #[command(hide = true)]
    GenerateDocs {
        /// Where: DIR/man and DIR/completions.
        dir: PathBuf,
    },
    /// Show SAs, policies, counters or bindings of a running appliance.
    Show {
        /// What to show.
        what: ShowWhat,
        /// The appliance's control socket.
        #[arg(long, default_value = "/run/bitsgw/bitsgw.sock")]
        socket: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// With `counters`: print every metric once in the OpenMetrics
        /// text format the metrics endpoint serves (for the node
        /// exporter's textfile collector).
        #[arg(long, conflicts_with = "json")]
        prometheus: bool,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => {
            let style = logging::HumanStyle::detect();
            let builder = builder.with_ansi(style.colours);
            if style.timestamps {
                builder.init()
            } else {
                builder.without_time().init()
            }
        }
        LogFormat::Json => builder.json().init(),
    }
}

fn show(
    what: ShowWhat,
    socket: &std::path::Path,
    json: bool,
    prometheus: bool,
) -> Result<String, String> {
    if prometheus && !matches!(what, ShowWhat::Counters) {
        return Err("--prometheus goes with counters".into());
    }
    let request = match what {
        ShowWhat::Bindings => control_request::ShowWhat::Bindings,
        ShowWhat::Ike => control_request::ShowWhat::Ike,
        _ => control_request::ShowWhat::All,
    };
    let v = control::request(socket, &ControlRequest::Show(request))?;
    if let Some(e) = v.get("error") {
        return Err(e.as_str().map_or_else(|| e.to_string(), str::to_string));
    }
    if prometheus {
        let state = control::request(
            socket,
            &ControlRequest::Show(control_request::ShowWhat::Bindings),
        )?;
        return Ok(metrics::encode(&metrics::with_bindings(v, Some(state))));
    }
    Ok(match (what, json) {
        (ShowWhat::Sa, true) => format!("{:#}\n", v["sas"]),
        (ShowWhat::Sp, true) => format!("{:#}\n", v["spd"]),
        (ShowWhat::Counters, true) => format!("{:#}\n", v["counters"]),
        (ShowWhat::Bindings | ShowWhat::Ike, true) => format!("{v:#}\n"),
        (ShowWhat::Sa, false) => report::sa_text(&v),
        (ShowWhat::Sp, false) => report::sp_text(&v),
        (ShowWhat::Counters, false) => report::counters_text(&v),
        (ShowWhat::Bindings, false) => report::bindings_text(&v),
        (ShowWhat::Ike, false) => crate::ike::status_text(&v),
    })
}

fn ctl(command: &[String], break_first: bool, socket: &std::path::Path) -> Result<String, String> {
    if break_first && command.first().map(String::as_str) != Some("move") {
        return Err("--break goes with move".into());
    }
    let req = match command {
        [c, name] if c == "remove-sa" => ControlRequest::RemoveSa(name.clone()),
        [c] if c == "reload" => ControlRequest::Reload,
        [c, to] if c == "move" => ControlRequest::Move {
            to: to.clone(),
            break_first,
        },
        [c] if c == "refresh" => ControlRequest::Refresh,
        [c, peer] if c == "initiate" => ControlRequest::Initiate(peer.clone()),
        [c, peer] if c == "terminate" => ControlRequest::Terminate(peer.clone()),
        _ => return Err(
            "unknown command (known: remove-sa NAME, reload, move ATTACHMENT [--break], refresh, initiate PEER, terminate PEER)"
                .into(),
        ),
    };
    let v = control::request(socket, &req)?;
    match v.get("error") {
        Some(e) => Err(e.as_str().unwrap_or("error").to_string()),
        None => Ok(format!("{}\n", v["ok"].as_str().unwrap_or("ok"))),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // Before any key is read: no core dump, and no other process without
    // CAP_SYS_PTRACE, can see the keys in this process's memory.
    if let Err(e) = bitsgw_io::process::forbid_core_dumps() {
        eprintln!(
            "error: can not make the process non-dumpable (keys could reach a core dump): {e}"
        );
        return ExitCode::from(1);
    }
    let result = match cli.command {
        Command::Check { file, json } => check::run(&file, json)
            .map(|t| print!("{t}"))
            .map_err(|e| (2, e.to_string())),
        Command::Run { config, trace } => run::run(&config, trace).map_err(|e| (1, e)),
        Command::Replay {
            config,
            inputs,
            outputs,
            events,
            trace,
        } => replay::run(&config, &inputs, &outputs, &events, trace).map_err(|e| (1, e)),
        Command::Ctl {
            command,
            break_first,
            socket,
        } => ctl(&command, break_first, &socket)
            .map(|t| print!("{t}"))
            .map_err(|e| (1, e)),
        Command::Lab {
            scenario,
            short,
            keep,
            manual_keys,
            json,
        } => {
            let opts = lab::LabOptions {
                scenario: match scenario {
                    LabScenario::Mobility => lab::Scenario::Mobility,
                    LabScenario::SiteToSite => lab::Scenario::SiteToSite,
                },
                short,
                keep,
                manual_keys,
            };
            lab::run(&opts, &mut |s| {
                use std::io::Write as _;
                print!("{s}");
                let _ = std::io::stdout().flush();
            })
            .map(|report| {
                if json {
                    println!("{}", report.to_json());
                }
            })
            .map_err(|e| (1, e.to_string()))
        }
        Command::Bench {
            sizes,
            transforms,
            modes,
            direction,
            workers,
            packets,
            seconds,
            flows,
            window,
            flow_hash,
            json,
            plot,
        } => bench::run(&bench::Options {
            sizes,
            transforms,
            modes,
            directions: direction,
            workers,
            packets,
            seconds,
            flows,
            window,
            flow_hash,
            json,
            plot,
        })
        .map(|t| print!("{t}"))
        .map_err(|e| (1, e)),
        Command::GenerateDocs { dir } => docs::generate(&dir)
            .map(|t| print!("{t}"))
            .map_err(|e| (1, e)),
        Command::Show {
            what,
            socket,
            json,
            prometheus,
        } => show(what, &socket, json, prometheus)
            .map(|t| print!("{t}"))
            .map_err(|e| (1, e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, e)) => {
            eprintln!("bitsgw: {e}");
            ExitCode::from(code)
        }
    }
}
