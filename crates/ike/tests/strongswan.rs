//! Interoperability with strongSwan's charon (5.9.8, userspace ESP through
//! kernel-libipsec, as in `make bench-e2e`): bitsgw's IKE core, driven over
//! UDP by `ike-udp-peer`, as initiator and as responder, with PSK, AES-GCM
//! and AES-CBC+HMAC IKE proposals and groups 19 and 31. Each case checks
//! that `swanctl --list-sas` shows the IKE SA ESTABLISHED and the CHILD_SA
//! INSTALLED with the SPIs bitsgw reported, and that the CHILD_SA keys
//! charon logged (at level 4) are bitsgw's. CHILD_SA rekeys (with and
//! without PFS) and IKE SA rekeys started by either side replace the SAs
//! on both. Wrong PSKs are refused both ways with AUTHENTICATION_FAILED,
//! proposals that do not meet with NO_PROPOSAL_CHOSEN. Certificates made
//! at test time (ECDSA P-256 and Ed25519, RFC 7427 signatures) authenticate
//! both ways, and a charon certificate from a CA bitsgw does not trust is
//! refused. tshark, given the IKE SAs' keys charon logged, decrypts every
//! IKE message captured on bitsgw's link of the established and rekeying
//! cases and finds each Encrypted payload's checksum correct and the
//! payloads each exchange needs (and nothing verifies with the keys
//! changed). Two children on one IKE SA, the second created with
//! CREATE_CHILD_SA and selecting Mobility Header types, are both
//! installed by charon.
//!
//! Two namespaces joined by a veth pair: `us` (192.0.2.1, bitsgw) and
//! `swan` (192.0.2.2, charon). Needs root; skipped, saying so, only when
//! charon is not installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/pki.rs"]
mod pki;

use common::tshark::{self, logged_key};
use common::{wait_for, wait_line, Lab};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHARON: &str = "/usr/lib/ipsec/charon";
const US: &str = "192.0.2.1";
const SWAN: &str = "192.0.2.2";
const PSK: &str = "strongswan-interop-only-not-a-secret";
const US_NET: &str = "203.0.113.0/24";
const SWAN_NET: &str = "198.51.100.0/24";

fn charon_missing() -> bool {
    if Path::new(CHARON).exists() {
        return false;
    }
    eprintln!("SKIPPED: strongSwan's charon is not installed at {CHARON} (scripts/setup-test-deps.sh installs it)");
    true
}

/// How charon authenticates: with a pre-shared key, or with its
/// certificate and key (PEM files) trusting a CA's certificate file.
enum CharonAuth<'a> {
    Psk(&'a str),
    Certificates {
        cert: &'a Path,
        key: &'a Path,
        ca: &'a Path,
        /// RFC 7427 signatures (charon's default); without them charon
        /// sends no SIGNATURE_HASH_ALGORITHMS and signs with the
        /// classic methods (RFC 4754 for ECDSA).
        rfc7427: bool,
        /// charon's identity is its certificate's subject (ID_DER_ASN1_DN,
        /// swanctl's default), not swan.example.
        subject_id: bool,
    },
}

impl CharonAuth<'_> {
    /// The connection's local and remote auth settings and its secrets.
    fn swanctl(&self) -> (String, String, String) {
        match self {
            CharonAuth::Psk(psk) => (
                "auth = psk\n      id = swan.example".into(),
                "auth = psk".into(),
                format!(
                    r#"ike-bitsgw {{
    id-a = swan.example
    id-b = bitsgw.example
    secret = "{psk}"
  }}"#
                ),
            ),
            CharonAuth::Certificates {
                cert,
                ca,
                subject_id,
                ..
            } => (
                format!(
                    "auth = pubkey\n      certs = {}{}",
                    cert.display(),
                    if *subject_id {
                        ""
                    } else {
                        "\n      id = swan.example"
                    }
                ),
                format!("auth = pubkey\n      cacerts = {}", ca.display()),
                // swanctl loads private keys from private/ beside the
                // configuration file.
                String::new(),
            ),
        }
    }
}

/// Starts charon in namespace `swan` with its own strongswan.conf, vici
/// socket, /run and log (IKE and CHILD_SA debug at level 4, which logs the
/// derived keys), and loads one connection `bitsgw` to 192.0.2.1 with the
/// child `net` and any `more_children` (swanctl's syntax).
fn start_charon(
    lab: &mut Lab,
    ike: &str,
    esp: &str,
    auth: &CharonAuth<'_>,
    extra: (&str, &str, &str),
) -> PathBuf {
    let (ike_extra, child_extra, more_children) = extra;
    let (local_auth, remote_auth, secrets) = auth.swanctl();
    let dir = lab.dir.join("swan");
    std::fs::create_dir_all(dir.join("run")).unwrap();
    if let CharonAuth::Certificates { key, .. } = auth {
        std::fs::create_dir_all(dir.join("private")).unwrap();
        std::fs::copy(key, dir.join("private/swan.pem")).unwrap();
    }
    let d = dir.display();
    let signature_authentication = match auth {
        CharonAuth::Certificates { rfc7427: false, .. } => "no",
        _ => "yes",
    };
    // kernel-libipsec before kernel-netlink, or installing SAs fails (this
    // kernel has no ESP).
    let conf = format!(
        r#"charon {{
  load_modular = no
  load = random nonce openssl gcm aes sha1 sha2 hmac kdf pem pkcs1 pkcs8 x509 pubkey kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
  signature_authentication = {signature_authentication}
  retransmit_tries = 2
  retransmit_timeout = 2
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {d}/charon.log
      flush_line = yes
      default = 1
      ike = 4
      chd = 4
    }}
  }}
}}
"#
    );
    std::fs::write(dir.join("strongswan.conf"), conf).unwrap();
    let connections = format!(
        r#"connections {{
  bitsgw {{
    version = 2
    local_addrs = {SWAN}
    remote_addrs = {US}
    proposals = {ike}
    mobike = no
    {ike_extra}
    local {{
      {local_auth}
    }}
    remote {{
      {remote_auth}
      id = bitsgw.example
    }}
    children {{
      net {{
        local_ts = {SWAN_NET}
        remote_ts = {US_NET}
        mode = tunnel
        esp_proposals = {esp}
        {child_extra}
      }}
      {more_children}
    }}
  }}
}}
secrets {{
  {secrets}
}}
"#
    );
    std::fs::write(dir.join("swanctl.conf"), connections).unwrap();
    // Its own mount namespace (ip netns exec makes one), so charon's fixed
    // pid file lands in this instance's /run.
    let script = format!("mount --bind {d}/run /run && exec {CHARON} >{d}/charon.out 2>&1");
    let env = format!("STRONGSWAN_CONF={d}/strongswan.conf");
    lab.spawn("swan", &["env", &env, "sh", "-c", &script]);
    wait_for(&dir.join("charon.vici"));
    let file = dir.join("swanctl.conf");
    swanctl(lab, &dir, &["--load-all", "--file", file.to_str().unwrap()]).unwrap();
    dir
}

/// Runs swanctl against the lab's charon; its output, or the output and
/// the charon log on failure.
fn swanctl(lab: &Lab, dir: &Path, args: &[&str]) -> Result<String, String> {
    let uri = format!("unix://{}/charon.vici", dir.display());
    let mut full = vec!["swanctl"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--uri", &uri]);
    let out = lab.try_exec("swan", &full);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "swanctl {args:?}: {text}\ncharon log:\n{}",
            log(dir)
        ))
    }
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("charon.log")).unwrap_or_default()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(pat.as_str()))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

struct Run {
    lab: Lab,
    swan: PathBuf,
    /// dumpcap on bitsgw's link, and its file.
    capture: usize,
    pcap: PathBuf,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Run {
    fn transcript(&self) -> String {
        format!(
            "bitsgw:\n{}\ncharon log:\n{}",
            self.seen.join("\n"),
            log(&self.swan)
        )
    }
}

/// Starts charon and bitsgw's peer (initiating or responding) with the
/// given proposals and PSKs.
/// One interoperability run: who initiates, the proposals, and extra
/// settings for charon's CHILD_SA and for bitsgw's peer.
struct Case<'a> {
    tag: &'a str,
    bitsgw_initiates: bool,
    ike: &'a str,
    esp: &'a str,
    psk: &'a str,
    /// bitsgw's IKE proposal when it differs from charon's.
    bitsgw_ike: Option<&'a str>,
    charon_ike: &'a str,
    charon_child: &'a str,
    /// More children of charon's connection, in swanctl's syntax.
    charon_children: &'a str,
    /// An IPv6 address of charon's IPv6 selectors, which kernel-libipsec
    /// routes them from (IPv6 is then on in its namespace but for the
    /// veth link).
    charon_v6: Option<&'a str>,
    bitsgw_args: &'a [&'a str],
    /// More addresses of charon's (its CHILD_SAs' routes need one in
    /// their local selectors), besides 198.51.100.1.
    swan_addresses: &'a [&'a str],
    /// Certificates instead of the PSK.
    certs: Option<Certs>,
}

/// Certificates made for a run: both sides' keys of `alg`, from one CA,
/// unless charon's comes from a CA bitsgw does not trust.
#[derive(Debug, Clone, Copy)]
struct Certs {
    alg: pki::Alg,
    charon_alg: pki::Alg,
    charon_from_another_ca: bool,
    charon_rfc7427: bool,
    /// charon's identity is its certificate's subject DN.
    charon_subject_id: bool,
}

impl Certs {
    /// Both sides' keys and the CA's of `alg`, one CA.
    fn of(alg: pki::Alg) -> Certs {
        Certs {
            alg,
            charon_alg: alg,
            charon_from_another_ca: false,
            charon_rfc7427: true,
            charon_subject_id: false,
        }
    }
}

/// The PEM files of a run's certificates.
struct CertFiles {
    ca: PathBuf,
    us_cert: PathBuf,
    us_key: PathBuf,
    swan_cert: PathBuf,
    swan_key: PathBuf,
}

impl Certs {
    fn write(self, dir: &Path) -> CertFiles {
        let ca = pki::Ca::new(self.alg, "bitsgw interop CA");
        let other = pki::Ca::new(self.alg, "bitsgw interop CA");
        let us = ca.leaf(self.alg, &["bitsgw.example"]);
        let swan_ca = if self.charon_from_another_ca {
            &other
        } else {
            &ca
        };
        let swan = swan_ca.leaf(self.charon_alg, &["swan.example"]);
        let f = CertFiles {
            ca: dir.join("ca.pem"),
            us_cert: dir.join("us.pem"),
            us_key: dir.join("us.key"),
            swan_cert: dir.join("swan.pem"),
            swan_key: dir.join("swan.key"),
        };
        for (path, text) in [
            (&f.ca, &ca.pem),
            (&f.us_cert, &us.pem),
            (&f.us_key, &us.key_pem),
            (&f.swan_cert, &swan.pem),
            (&f.swan_key, &swan.key_pem),
        ] {
            std::fs::write(path, text).unwrap();
        }
        f
    }
}

impl<'a> Case<'a> {
    fn new(tag: &'a str, bitsgw_initiates: bool, ike: &'a str, esp: &'a str) -> Case<'a> {
        Case {
            tag,
            bitsgw_initiates,
            ike,
            esp,
            psk: PSK,
            bitsgw_ike: None,
            charon_ike: "",
            charon_child: "",
            charon_children: "",
            charon_v6: None,
            bitsgw_args: &[],
            swan_addresses: &[],
            certs: None,
        }
    }
}

fn start(case: &Case<'_>) -> Run {
    let Case {
        tag,
        bitsgw_initiates,
        ike,
        esp,
        psk: our_psk,
        ..
    } = *case;
    let mut lab = Lab::new(tag, &["us", "swan"]);
    lab.link(
        "us",
        "ike0",
        &format!("{US}/24"),
        "swan",
        "ike1",
        &format!("{SWAN}/24"),
    );
    let pcap = lab.dir.join("ike.pcapng");
    let capture = lab.capture("us", "ike0", &pcap);
    // kernel-libipsec routes the remote selectors into its TUN device from
    // an address of the local ones.
    for a in ["198.51.100.1/32"].iter().chain(case.swan_addresses) {
        lab.exec("swan", &["ip", "addr", "add", a, "dev", "lo"]);
    }
    if let Some(v6) = case.charon_v6 {
        for on in ["lo", "default"] {
            let key = format!("net.ipv6.conf.{on}.disable_ipv6=0");
            lab.exec("swan", &["sysctl", "-qw", &key]);
        }
        let host = format!("{v6}/128");
        lab.exec("swan", &["ip", "addr", "add", &host, "dev", "lo"]);
    }
    let files = case.certs.map(|c| c.write(&lab.dir));
    let charon_auth = match &files {
        None => CharonAuth::Psk(PSK),
        Some(f) => CharonAuth::Certificates {
            cert: &f.swan_cert,
            key: &f.swan_key,
            ca: &f.ca,
            rfc7427: case.certs.is_none_or(|c| c.charon_rfc7427),
            subject_id: case.certs.is_some_and(|c| c.charon_subject_id),
        },
    };
    let swan = start_charon(
        &mut lab,
        ike,
        esp,
        &charon_auth,
        (case.charon_ike, case.charon_child, case.charon_children),
    );
    let psk_file = lab.dir.join("psk");
    std::fs::write(&psk_file, our_psk).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let auth_args: Vec<String> = match &files {
        None => vec!["--psk-file".into(), path(&psk_file)],
        Some(f) => vec![
            "--cert".into(),
            path(&f.us_cert),
            "--key".into(),
            path(&f.us_key),
            "--ca".into(),
            path(&f.ca),
        ],
    };
    let role = if bitsgw_initiates {
        "initiator"
    } else {
        "responder"
    };
    let (local, remote) = (format!("{US}:500"), format!("{SWAN}:500"));
    let remote_id = if case.certs.is_some_and(|c| c.charon_subject_id) {
        let dn = pki::common_name_dn("swan.example");
        let hex: String = dn.iter().map(|b| format!("{b:02x}")).collect();
        format!("dn:{hex}")
    } else {
        "fqdn:swan.example".to_string()
    };
    let mut args = vec![
        env!("CARGO_BIN_EXE_ike-udp-peer"),
        "--role",
        role,
        "--local",
        &local,
        "--remote",
        &remote,
        "--local-id",
        "fqdn:bitsgw.example",
        "--remote-id",
        &remote_id,
        "--ike",
        case.bitsgw_ike.unwrap_or(ike),
        "--esp",
        esp,
        "--local-ts",
        US_NET,
        "--remote-ts",
        SWAN_NET,
        "--print-keys",
        "--trace",
        "--exit-after",
        "60",
    ];
    args.extend_from_slice(case.bitsgw_args);
    args.extend(auth_args.iter().map(String::as_str));
    let lines = lab.spawn_lines("us", &args);
    let mut run = Run {
        lab,
        swan,
        capture,
        pcap,
        lines,
        seen: Vec::new(),
    };
    let ready = wait_line(
        &run.lines,
        &["READY"],
        Duration::from_secs(10),
        &mut run.seen,
    );
    assert!(
        ready.is_some(),
        "ike-udp-peer did not start: {}",
        run.transcript()
    );
    if !bitsgw_initiates {
        // swanctl waits for the outcome; with a wrong PSK it fails, which
        // the caller checks through the logs.
        let _ = swanctl(
            &run.lab,
            &run.swan,
            &["--initiate", "--child", "net", "--timeout", "20"],
        );
    }
    run
}

/// Both established: charon lists the SAs with bitsgw's SPIs, and its
/// logged CHILD_SA keys are bitsgw's.
fn interoperates(tag: &str, bitsgw_initiates: bool, ike: &str, esp: &str, group: u16) {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case::new(tag, bitsgw_initiates, ike, esp));
    let (up, child) = established(&mut run, group);
    agrees_with_charon(&run, &up, &child);
    let counts = tshark_decodes(&mut run, ike, &[&up]);
    // IKE_SA_INIT and IKE_AUTH, a request and a response each.
    assert_eq!(counts.get(&tshark::exchange::IKE_SA_INIT), Some(&2));
    assert_eq!(counts.get(&tshark::exchange::IKE_AUTH), Some(&2));
}

/// tshark decrypts every IKE message captured on bitsgw's link with the
/// keys charon logged for the IKE SAs of `sas` (lines naming `spi_i` and
/// `spi_r`, in the order they were made): no malformed message, every
/// Encrypted payload's checksum (ICV) correct, each exchange's payloads
/// those RFC 7296 1.2-1.4 list. With the keys changed no Encrypted payload
/// verifies, so the check is tshark's and not a formality. The number of
/// IKE messages of each exchange type.
fn tshark_decodes(run: &mut Run, ike: &str, sas: &[&str]) -> BTreeMap<u8, usize> {
    run.lab.stop_capture(run.capture);
    let log = log(&run.swan);
    let keys: Vec<_> = sas
        .iter()
        .enumerate()
        .map(|(nth, sa)| {
            tshark::IkeSaKeys::from_charon_log(
                &log,
                nth,
                field(sa, "spi_i"),
                field(sa, "spi_r"),
                ike,
            )
            .unwrap_or_else(|| panic!("charon logged no keys of {sa}: {}", run.transcript()))
        })
        .collect();
    let decoded = tshark::decode(&run.pcap, &keys, &[]);
    let counts =
        tshark::check_ike(&decoded).unwrap_or_else(|e| panic!("tshark: {e}\n{}", run.transcript()));
    let mut wrong = keys;
    for k in &mut wrong {
        for key in [&mut k.sk_ei, &mut k.sk_er, &mut k.sk_ai, &mut k.sk_ar] {
            tshark::corrupt(key);
        }
    }
    let refused = tshark::decode(&run.pcap, &wrong, &[]);
    let encrypted: Vec<_> = refused.iter().filter(|d| d.decrypted).collect();
    assert!(!encrypted.is_empty(), "{refused:?}");
    assert!(
        encrypted.iter().all(|d| d.malformed || !d.icd_correct),
        "a wrong key verified: {refused:?}"
    );
    counts
}

/// Waits for the IKE SA and the first CHILD_SA; their lines.
fn established(run: &mut Run, group: u16) -> (String, String) {
    let limit = Duration::from_secs(25);
    let up = wait_line(
        &run.lines,
        &["IKE_SA_UP", "IKE_SA_DOWN"],
        limit,
        &mut run.seen,
    );
    let up = up.unwrap_or_else(|| panic!("no IKE SA: {}", run.transcript()));
    assert!(up.starts_with("IKE_SA_UP"), "{}", run.transcript());
    assert_eq!(field(&up, "group"), group.to_string());
    let child = wait_line(
        &run.lines,
        &["CHILD_SA_UP", "CHILD_SA_FAILED"],
        limit,
        &mut run.seen,
    );
    let child = child.unwrap_or_else(|| panic!("no CHILD_SA: {}", run.transcript()));
    assert!(child.starts_with("CHILD_SA_UP"), "{}", run.transcript());
    (up, child)
}

/// charon lists the IKE SA ESTABLISHED and the CHILD_SA INSTALLED with
/// the SPIs bitsgw reported, and the CHILD_SA keys it logged last are
/// bitsgw's.
fn agrees_with_charon(run: &Run, up: &str, child: &str) {
    let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
    let ctx = || format!("swanctl --list-sas:\n{sas}\n{}", run.transcript());
    // kernel-libipsec makes charon fake a NAT ("faking NAT situation to
    // enforce UDP encapsulation"): bitsgw detects it and both sides move
    // IKE to port 4500 (RFC 7296 2.23); the CHILD_SA is UDP-encapsulated.
    assert_eq!(field(child, "udp_encapsulation"), "true", "{}", ctx());
    assert_eq!(field(child, "local"), format!("{US}:4500"), "{}", ctx());
    assert_eq!(field(child, "remote"), format!("{SWAN}:4500"), "{}", ctx());
    assert!(field(up, "nat_remote") == "true", "{}", ctx());
    assert!(sas.contains("ESTABLISHED"), "{}", ctx());
    assert!(sas.contains("INSTALLED"), "{}", ctx());
    // IKE SPIs as "<spi_i>_i ... <spi_r>_r", charon's local one starred.
    assert!(
        sas.contains(&format!("{}_i", field(up, "spi_i"))),
        "{}",
        ctx()
    );
    assert!(
        sas.contains(&format!("{}_r", field(up, "spi_r"))),
        "{}",
        ctx()
    );
    // charon's inbound SPI is our outbound and the other way round.
    assert!(
        sas.contains(&format!("in  {}", field(child, "out"))),
        "{}",
        ctx()
    );
    assert!(
        sas.contains(&format!("out {}", field(child, "in"))),
        "{}",
        ctx()
    );
    let log = log(&run.swan);
    for (label, ours) in [
        ("encryption initiator key", "i2r"),
        ("encryption responder key", "r2i"),
    ] {
        // strongSwan's encryption key of an AEAD carries the salt.
        let expect = format!(
            "{}{}",
            field(child, &format!("{ours}_enc")),
            field(child, &format!("{ours}_salt"))
        );
        assert_eq!(
            logged_key(&log, label).as_deref(),
            Some(expect.as_str()),
            "{label}: {}",
            ctx()
        );
    }
    for (label, ours) in [
        ("integrity initiator key", "i2r_integ"),
        ("integrity responder key", "r2i_integ"),
    ] {
        let integ = field(child, ours);
        if integ.is_empty() {
            assert!(logged_key(&log, label).is_none(), "{label}: {}", ctx());
        } else {
            assert_eq!(
                logged_key(&log, label).as_deref(),
                Some(integ),
                "{label}: {}",
                ctx()
            );
        }
    }
}

/// Two children on one IKE SA (RFC 7296 1.3.1): the initiator creates
/// `net` in IKE_AUTH and `mh` in CREATE_CHILD_SA after it (bitsgw right
/// after, charon when told), the second selecting
/// the Mobility Header of a mobile node's home address (Binding Updates,
/// type 5) and its home agent's (Binding Acknowledgements, type 6), the
/// type in the high octet of the port fields (RFC 4301 4.4.1.1, RFC 7296
/// 3.13.1), which charon writes as the port number itself (1280, 1536).
/// bitsgw proposes every MH type on the home agent's side and charon
/// narrows it to its own; as responder bitsgw picks the child charon's
/// selectors fit and narrows them likewise. Both are INSTALLED on
/// charon's side. The `mh`
/// child is tunnel mode here, where RFC 4877 has transport: charon's
/// userspace ESP (kernel-libipsec), the only one these machines can run,
/// installs tunnel-mode SAs only.
fn two_children_one_of_mobility_header_types(tag: &str, bitsgw_initiates: bool) {
    if charon_missing() {
        return;
    }
    let mh = r#"mh {
        local_ts = 2001:db8:1::1/128[mobility-header/1536]
        remote_ts = 2001:db8:1::100/128[mobility-header/1280]
        mode = tunnel
        esp_proposals = aes128gcm16
      }"#;
    let extra = [
        "--extra-child",
        "mh,tunnel,2001:db8:1::100/128[mh/5],2001:db8:1::1/128[135]",
    ];
    let case = Case {
        charon_children: mh,
        charon_v6: Some("2001:db8:1::1"),
        bitsgw_args: &extra,
        ..Case::new(
            tag,
            bitsgw_initiates,
            "aes128gcm16-prfsha256-ecp256",
            "aes128gcm16",
        )
    };
    let mut run = start(&case);
    let (up, net) = established(&mut run, 19);
    if !bitsgw_initiates {
        let initiate = ["--initiate", "--child", "mh", "--timeout", "20"];
        swanctl(&run.lab, &run.swan, &initiate).unwrap();
    }
    assert_eq!(field(&net, "child"), "net", "{}", run.transcript());
    let limit = Duration::from_secs(25);
    let mh = wait_line(
        &run.lines,
        &["CHILD_SA_UP", "CHILD_SA_FAILED"],
        limit,
        &mut run.seen,
    );
    let mh = mh.unwrap_or_else(|| panic!("no second CHILD_SA: {}", run.transcript()));
    assert!(mh.starts_with("CHILD_SA_UP"), "{}", run.transcript());
    assert_eq!(field(&mh, "child"), "mh");
    assert_eq!(
        field(&mh, "local_ts"),
        "2001:db8:1::100-2001:db8:1::100[135/1280-1280]"
    );
    assert_eq!(
        field(&mh, "remote_ts"),
        "2001:db8:1::1-2001:db8:1::1[135/1536-1536]",
        "charon narrowed the home agent's side to its type"
    );
    // The keys charon logged last are the second child's.
    agrees_with_charon(&run, &up, &mh);
    let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
    let ctx = || format!("swanctl --list-sas:\n{sas}\n{}", run.transcript());
    assert_eq!(sas.matches("INSTALLED").count(), 2, "{}", ctx());
    // Each child by name, with charon's inbound SPI our outbound and the
    // other way round.
    let listed = |name: &str, line: &str| {
        [
            format!("{name}: #"),
            format!("in  {}", field(line, "out")),
            format!("out {}", field(line, "in")),
        ]
        .iter()
        .all(|s| sas.contains(s))
    };
    assert!(listed("net", &net) && listed("mh", &mh), "{}", ctx());
    assert!(
        sas.contains("2001:db8:1::1/128[mobility-header/1536]"),
        "{}",
        ctx()
    );
    assert!(
        sas.contains("2001:db8:1::100/128[mobility-header/1280]"),
        "{}",
        ctx()
    );
}

#[test]
fn bitsgw_keys_two_children_one_of_mobility_header_types() {
    two_children_one_of_mobility_header_types("mh2", true);
}

#[test]
fn charon_keys_two_children_one_of_mobility_header_types() {
    two_children_one_of_mobility_header_types("rmh2", false);
}

#[test]
fn bitsgw_initiates_aes128gcm_ecp256() {
    interoperates(
        "ig19",
        true,
        "aes128gcm16-prfsha256-ecp256",
        "aes128gcm16",
        19,
    );
}

#[test]
fn bitsgw_initiates_aes256gcm_x25519() {
    interoperates(
        "ig31",
        true,
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        31,
    );
}

#[test]
fn bitsgw_initiates_aes128cbc_sha256_ecp256() {
    interoperates(
        "ic19",
        true,
        "aes128-sha256-prfsha256-ecp256",
        "aes128-sha256",
        19,
    );
}

#[test]
fn charon_initiates_aes128gcm_ecp256() {
    interoperates(
        "rg19",
        false,
        "aes128gcm16-prfsha256-ecp256",
        "aes128gcm16",
        19,
    );
}

#[test]
fn charon_initiates_aes256gcm_x25519() {
    interoperates(
        "rg31",
        false,
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16",
        31,
    );
}

#[test]
fn charon_initiates_aes256cbc_sha256_x25519() {
    interoperates(
        "rc31",
        false,
        "aes256-sha256-prfsha256-x25519",
        "aes256-sha256",
        31,
    );
}

#[test]
fn wrong_psk_is_refused_when_bitsgw_initiates() {
    if charon_missing() {
        return;
    }
    let ike = "aes128gcm16-prfsha256-ecp256";
    let mut run = start(&Case {
        psk: "a-different-psk-of-some-length",
        ..Case::new("iw", true, ike, "aes128gcm16")
    });
    let down = wait_line(
        &run.lines,
        &["IKE_SA_UP", "IKE_SA_DOWN"],
        Duration::from_secs(25),
        &mut run.seen,
    );
    let down = down.unwrap_or_else(|| panic!("no outcome: {}", run.transcript()));
    assert_eq!(
        down,
        "IKE_SA_DOWN reason=PeerNotify(AuthenticationFailed)",
        "{}",
        run.transcript()
    );
    let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
    assert!(!sas.contains("ESTABLISHED"), "{sas}");
    assert!(
        log(&run.swan).contains("generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]"),
        "{}",
        run.transcript()
    );
}

#[test]
fn wrong_psk_is_refused_when_charon_initiates() {
    if charon_missing() {
        return;
    }
    let ike = "aes256gcm16-prfsha256-x25519";
    let mut run = start(&Case {
        psk: "a-different-psk-of-some-length",
        ..Case::new("rw", false, ike, "aes256gcm16")
    });
    let counters = wait_line(
        &run.lines,
        &["COUNTERS notify_sent={AuthenticationFailed: 1,"],
        Duration::from_secs(25),
        &mut run.seen,
    );
    assert!(counters.is_some(), "{}", run.transcript());
    assert!(
        !run.seen.iter().any(|l| l.starts_with("IKE_SA_UP")),
        "{}",
        run.transcript()
    );
    assert!(
        log(&run.swan).contains("received AUTHENTICATION_FAILED notify error"),
        "{}",
        run.transcript()
    );
    let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
    assert!(!sas.contains("ESTABLISHED"), "{sas}");
}

/// Both sides authenticate by certificates with keys of `alg` (RFC 7427
/// signatures): established as with a PSK, and charon's log says it
/// verified bitsgw's signature with `charon_says` ("ECDSA_WITH_SHA256_DER",
/// "ED25519") and its certificate chain to the CA, and matched bitsgw's
/// CERTREQ to the CA.
fn interoperates_by_certificates(
    tag: &str,
    bitsgw_initiates: bool,
    alg: pki::Alg,
    charon_says: &str,
) {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        certs: Some(Certs::of(alg)),
        ..Case::new(
            tag,
            bitsgw_initiates,
            "aes128gcm16-prfsha256-ecp256",
            "aes128gcm16",
        )
    });
    let (up, child) = established(&mut run, 19);
    agrees_with_charon(&run, &up, &child);
    let log = log(&run.swan);
    let verified = format!("authentication of 'bitsgw.example' with {charon_says} successful");
    assert!(log.contains(&verified), "{verified}: {}", run.transcript());
    assert!(
        log.contains("reached self-signed root ca with a path length of 0"),
        "{}",
        run.transcript()
    );
    // Our CERTREQ's hash of the CA's public key (RFC 7296 3.7) is the one
    // charon computes for its CA.
    let asked = "received cert request for \"CN=bitsgw interop CA\"";
    assert!(log.contains(asked), "{asked}: {}", run.transcript());
}

#[test]
fn bitsgw_initiates_with_ecdsa_p256_certificates() {
    interoperates_by_certificates("ie", true, pki::Alg::P256, "ECDSA_WITH_SHA256_DER");
}

#[test]
fn charon_initiates_with_ecdsa_p256_certificates() {
    interoperates_by_certificates("re", false, pki::Alg::P256, "ECDSA_WITH_SHA256_DER");
}

#[test]
fn bitsgw_initiates_with_ed25519_certificates() {
    interoperates_by_certificates("ied", true, pki::Alg::Ed25519, "ED25519");
}

#[test]
fn charon_initiates_with_ed25519_certificates() {
    interoperates_by_certificates("red", false, pki::Alg::Ed25519, "ED25519");
}

#[test]
fn bitsgw_verifies_charon_s_rsa_signature() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        certs: Some(Certs {
            charon_alg: pki::Alg::Rsa,
            ..Certs::of(pki::Alg::P256)
        }),
        ..Case::new("irsa", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let (up, child) = established(&mut run, 19);
    agrees_with_charon(&run, &up, &child);
    // charon signs with PKCS#1 v1.5 and a SHA-2 hash bitsgw announced
    // (RFC 7427 appendix A), and verified bitsgw's ECDSA signature.
    let log = log(&run.swan);
    assert!(
        log.contains("authentication of 'swan.example' (myself) with RSA_EMSA_PKCS1_SHA2_"),
        "{}",
        run.transcript()
    );
    assert!(
        log.contains("authentication of 'bitsgw.example' with ECDSA_WITH_SHA256_DER successful"),
        "{}",
        run.transcript()
    );
}

#[test]
fn rfc_4754_ecdsa_signatures_with_a_charon_without_rfc_7427() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        certs: Some(Certs {
            charon_rfc7427: false,
            ..Certs::of(pki::Alg::P256)
        }),
        ..Case::new("i4754", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let (up, child) = established(&mut run, 19);
    agrees_with_charon(&run, &up, &child);
    // Both sides sign by RFC 4754 (AUTH method 9), charon having sent no
    // SIGNATURE_HASH_ALGORITHMS.
    let log = log(&run.swan);
    for who in ["'swan.example' (myself)", "'bitsgw.example'"] {
        let said = format!("authentication of {who} with ECDSA-256 signature successful");
        assert!(log.contains(&said), "{said}: {}", run.transcript());
    }
}

#[test]
fn charon_s_subject_dn_as_its_identity_matches_its_certificate() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        certs: Some(Certs {
            charon_subject_id: true,
            ..Certs::of(pki::Alg::P256)
        }),
        ..Case::new("idn", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let (up, child) = established(&mut run, 19);
    agrees_with_charon(&run, &up, &child);
    let said = "authentication of 'CN=swan.example' (myself) with ECDSA_WITH_SHA256_DER successful";
    assert!(
        log(&run.swan).contains(said),
        "{said}: {}",
        run.transcript()
    );
}

#[test]
fn a_charon_certificate_from_an_untrusted_ca_is_refused() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        certs: Some(Certs {
            charon_from_another_ca: true,
            ..Certs::of(pki::Alg::P256)
        }),
        ..Case::new("iu", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let down = wait_line(
        &run.lines,
        &["IKE_SA_UP", "IKE_SA_DOWN"],
        Duration::from_secs(25),
        &mut run.seen,
    );
    assert_eq!(
        down.as_deref(),
        Some("IKE_SA_DOWN reason=AuthenticationFailed"),
        "{}",
        run.transcript()
    );
    let refused = wait_line(
        &run.lines,
        &["COUNTERS"],
        Duration::from_secs(5),
        &mut run.seen,
    );
    assert!(
        run.seen
            .iter()
            .chain(refused.iter())
            .any(|l| l.contains("auth_refused={UntrustedChain: 1}")),
        "{}",
        run.transcript()
    );
    // bitsgw says so in an INFORMATIONAL (RFC 7296 2.21.2), and charon
    // takes down the IKE SA it had established.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
        if !sas.contains("ESTABLISHED") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "charon keeps the IKE SA: {sas}\n{}",
            run.transcript()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = log(&run.swan);
    for said in [
        "parsed INFORMATIONAL request 2 [ N(AUTH_FAILED) ]",
        "IKE_SA deleted",
    ] {
        assert!(log.contains(said), "{said}: {}", run.transcript());
    }
}

/// tshark decoded a rekey: its CREATE_CHILD_SA request and response and
/// the old SA's deletion (an INFORMATIONAL request and response).
fn rekey_decoded(counts: &BTreeMap<u8, usize>) {
    assert!(
        counts.get(&tshark::exchange::CREATE_CHILD_SA) >= Some(&2),
        "{counts:?}"
    );
    assert!(
        counts.get(&tshark::exchange::INFORMATIONAL) >= Some(&2),
        "{counts:?}"
    );
}

/// A rekeyed CHILD_SA replaces the first one on both sides: bitsgw
/// reports the new one and the old one's deletion, and charon lists only
/// the new one, with the keys it logged last.
fn rekeys(case: &Case<'_>) -> Option<String> {
    if charon_missing() {
        return None;
    }
    let mut run = start(case);
    let (up, first) = established(&mut run, 19);
    let limit = Duration::from_secs(25);
    let second = wait_line(&run.lines, &["CHILD_SA_UP"], limit, &mut run.seen);
    let second = second.unwrap_or_else(|| panic!("no rekey: {}", run.transcript()));
    assert_eq!(
        field(&second, "rekeys"),
        field(&first, "in"),
        "{}",
        run.transcript()
    );
    let gone = format!(
        "CHILD_SA_DELETED in={} out={}",
        field(&first, "in"),
        field(&first, "out")
    );
    let deleted = wait_line(&run.lines, &[gone.as_str()], limit, &mut run.seen);
    assert!(deleted.is_some(), "{}", run.transcript());
    agrees_with_charon(&run, &up, &second);
    // charon lists the old one as DELETED for a moment, then not at all.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
        if !sas.contains(field(&first, "in")) && !sas.contains(field(&first, "out")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old CHILD_SA stays: {sas}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let counts = tshark_decodes(&mut run, case.bitsgw_ike.unwrap_or(case.ike), &[&up]);
    rekey_decoded(&counts);
    Some(second)
}

#[test]
fn charon_rekeys_the_child_sa() {
    let second = rekeys(&Case {
        charon_child: "rekey_time = 3s\n        life_time = 60s\n        rand_time = 0s",
        ..Case::new("ck", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    assert!(second.is_none_or(|l| !l.contains("pfs_group")));
}

#[test]
fn bitsgw_rekeys_the_child_sa() {
    let second = rekeys(&Case {
        bitsgw_args: &["--child-lifetime", "3"],
        ..Case::new("bk", false, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    assert!(second.is_none_or(|l| !l.contains("pfs_group")));
}

/// A rekeyed IKE SA replaces the first one on both sides and keeps the
/// CHILD_SA: charon lists the new IKE SPIs bitsgw reported, ESTABLISHED,
/// with the same CHILD_SA INSTALLED.
fn rekeys_ike(case: &Case<'_>) {
    if charon_missing() {
        return;
    }
    let mut run = start(case);
    let (up, child) = established(&mut run, 19);
    let limit = Duration::from_secs(25);
    let new = wait_line(
        &run.lines,
        &["IKE_SA_REKEYED", "IKE_SA_DOWN"],
        limit,
        &mut run.seen,
    );
    let new = new.unwrap_or_else(|| panic!("no rekey: {}", run.transcript()));
    assert!(new.starts_with("IKE_SA_REKEYED"), "{}", run.transcript());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
        let spis = [
            format!("{}_i", field(&new, "spi_i")),
            format!("{}_r", field(&new, "spi_r")),
        ];
        // Only the new IKE SA, with the CHILD_SA.
        if spis.iter().all(|s| sas.contains(s.as_str())) && sas.matches("IKEv2").count() == 1 {
            assert!(sas.contains("ESTABLISHED"), "{sas}");
            assert!(sas.contains("INSTALLED"), "{sas}");
            assert!(
                sas.contains(&format!("in  {}", field(&child, "out"))),
                "{sas}"
            );
            assert!(
                sas.contains(&format!("out {}", field(&child, "in"))),
                "{sas}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "charon does not show the new IKE SA: {sas}\n{}",
            run.transcript()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !run.seen
            .iter()
            .any(|l| l.starts_with("IKE_SA_DOWN") || l.starts_with("CHILD_SA_DELETED")),
        "{}",
        run.transcript()
    );
    let counts = tshark_decodes(&mut run, case.ike, &[&up, &new]);
    rekey_decoded(&counts);
}

#[test]
fn charon_rekeys_the_ike_sa() {
    rekeys_ike(&Case {
        charon_ike: "rekey_time = 3s\n    over_time = 60s\n    rand_time = 0s",
        ..Case::new("cr", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
}

#[test]
fn bitsgw_rekeys_the_ike_sa() {
    rekeys_ike(&Case {
        bitsgw_args: &["--ike-lifetime", "3"],
        ..Case::new("br", false, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
}

#[test]
fn charon_rekeys_the_child_sa_with_pfs() {
    let second = rekeys(&Case {
        charon_child: "rekey_time = 3s\n        life_time = 60s\n        rand_time = 0s",
        ..Case::new(
            "cp",
            true,
            "aes128gcm16-prfsha256-ecp256",
            "aes128gcm16-x25519",
        )
    });
    assert_eq!(second.as_deref().map(|l| field(l, "pfs_group")), Some("31"));
}

#[test]
fn bitsgw_rekeys_the_child_sa_with_pfs() {
    let second = rekeys(&Case {
        bitsgw_args: &["--child-lifetime", "3"],
        ..Case::new(
            "bp",
            false,
            "aes128gcm16-prfsha256-ecp256",
            "aes256gcm16-ecp256",
        )
    });
    assert_eq!(second.as_deref().map(|l| field(l, "pfs_group")), Some("19"));
}

#[test]
fn proposal_mismatch_is_refused_when_bitsgw_initiates() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        bitsgw_ike: Some("aes256gcm16-prfsha256-x25519"),
        ..Case::new("im", true, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let limit = Duration::from_secs(25);
    let down = wait_line(
        &run.lines,
        &["IKE_SA_UP", "IKE_SA_DOWN"],
        limit,
        &mut run.seen,
    );
    assert_eq!(
        down.as_deref(),
        Some("IKE_SA_DOWN reason=PeerNotify(NoProposalChosen)"),
        "{}",
        run.transcript()
    );
}

#[test]
fn proposal_mismatch_is_refused_when_charon_initiates() {
    if charon_missing() {
        return;
    }
    let mut run = start(&Case {
        bitsgw_ike: Some("aes256gcm16-prfsha256-x25519"),
        ..Case::new("rm", false, "aes128gcm16-prfsha256-ecp256", "aes128gcm16")
    });
    let counters = wait_line(
        &run.lines,
        &["COUNTERS notify_sent={NoProposalChosen: 1}"],
        Duration::from_secs(25),
        &mut run.seen,
    );
    assert!(counters.is_some(), "{}", run.transcript());
    assert!(
        log(&run.swan).contains("received NO_PROPOSAL_CHOSEN notify error"),
        "{}",
        run.transcript()
    );
}

/// A file removed when dropped, test or not.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One bitsgw responder endpoint with two peers, told apart by the
/// identity charon proves: `mn1` (charon's `swan.example`, home address
/// 198.51.100.100) and `mn2` (`mn2.example`, its own PSK, 198.51.100.200).
/// Each of charon's two connections gets its CHILD_SA for its own
/// address; a third connection proving mn1's identity but asking for
/// mn2's address gets no CHILD_SA: TS_UNACCEPTABLE (RFC 7296 2.9, RFC
/// 4877 4.4). mn2 asking, in IDr, for an identity bitsgw's mn2 peer does
/// not have gets AUTHENTICATION_FAILED (RFC 7296 3.5).
#[test]
fn one_responder_keys_two_charon_identities_each_for_its_own_address_only() {
    if charon_missing() {
        return;
    }
    let ike = "aes128gcm16-prfsha256-ecp256";
    let mn2_psk = "strongswan-interop-mn2-not-a-secret";
    let mn2_file =
        TempFile(std::env::temp_dir().join(format!("bitsgw-mn2-{}.psk", std::process::id())));
    std::fs::write(&mn2_file.0, mn2_psk).unwrap();
    let add_peer = format!(
        "name=mn2,remote-id=fqdn:mn2.example,psk-file={},remote-ts=198.51.100.200/32",
        mn2_file.0.display()
    );
    let args = [
        "--name",
        "mn1",
        "--remote-ts",
        "198.51.100.100/32",
        "--add-peer",
        &add_peer,
    ];
    // charon's connection `bitsgw` (swan.example) asks for its /24 and is
    // narrowed to mn1's address.
    let mut run = start(&Case {
        bitsgw_args: &args,
        swan_addresses: &["198.51.100.100/32", "198.51.100.200/32"],
        ..Case::new("sp", false, ike, "aes128gcm16")
    });
    let (up, child) = established(&mut run, 19);
    assert_eq!(field(&up, "peer"), "mn1", "{}", run.transcript());
    assert_eq!(field(&child, "name"), "mn1", "{}", run.transcript());
    assert_eq!(
        field(&child, "remote_ts"),
        "198.51.100.100-198.51.100.100[0/0-65535]"
    );

    // mn2, and mn1's identity asking for mn2's address, as two more
    // connections of charon's.
    let connection = |name: &str, (id, theirs): (&str, &str), child: &str| {
        format!(
            r#"  {name} {{
    version = 2
    local_addrs = {SWAN}
    remote_addrs = {US}
    proposals = {ike}
    mobike = no
    local {{
      auth = psk
      id = {id}
    }}
    remote {{
      auth = psk
      id = {theirs}
    }}
    children {{
      {child} {{
        local_ts = 198.51.100.200/32
        remote_ts = {US_NET}
        mode = tunnel
        esp_proposals = aes128gcm16
      }}
    }}
  }}
"#
        )
    };
    let file = run.swan.join("swanctl.conf");
    let conf = std::fs::read_to_string(&file).unwrap();
    let bitsgw = "bitsgw.example";
    let more = connection("mn2", ("mn2.example", bitsgw), "home2")
        + &connection("steal", ("swan.example", bitsgw), "steal-home")
        + &connection("elsewhere", ("mn2.example", "other.example"), "other-home");
    let secret = format!(
        "  ike-mn2 {{\n    id-a = mn2.example\n    id-b = bitsgw.example\n    id-c = other.example\n    secret = \"{mn2_psk}\"\n  }}\n"
    );
    let tail = "\n}\nsecrets {\n";
    assert!(conf.contains(tail), "{conf}");
    let conf = conf.replacen(tail, &format!("\n{more}}}\nsecrets {{\n{secret}"), 1);
    std::fs::write(&file, conf).unwrap();
    let f = file.to_str().unwrap();
    swanctl(&run.lab, &run.swan, &["--load-all", "--file", f]).unwrap();

    let initiate = |run: &Run, child: &str| {
        let _ = swanctl(
            &run.lab,
            &run.swan,
            &["--initiate", "--child", child, "--timeout", "20"],
        );
    };
    initiate(&run, "home2");
    let (up, child) = established(&mut run, 19);
    assert_eq!(field(&up, "peer"), "mn2", "{}", run.transcript());
    assert_eq!(field(&child, "name"), "mn2", "{}", run.transcript());
    assert_eq!(
        field(&child, "remote_ts"),
        "198.51.100.200-198.51.100.200[0/0-65535]"
    );

    // charon asks on the IKE SA it has with these identities (its
    // connection differs only in name): a CREATE_CHILD_SA on mn1's IKE SA.
    initiate(&run, "steal-home");
    let limit = Duration::from_secs(25);
    let refused = wait_line(
        &run.lines,
        &["CHILD_SA_UP", "CHILD_SA_FAILED"],
        limit,
        &mut run.seen,
    );
    assert_eq!(
        refused.as_deref(),
        Some("CHILD_SA_FAILED name=mn1 child= notify=TsUnacceptable"),
        "{}",
        run.transcript()
    );

    // mn2 naming in IDr an identity bitsgw's peer for mn2 does not have
    // (RFC 7296 3.5): no peer matches, AUTHENTICATION_FAILED.
    initiate(&run, "other-home");
    let deadline = std::time::Instant::now() + limit;
    let refused_identity = "auth_refused={IdentityMismatch: 1}";
    while !run.seen.iter().any(|l| l.contains(refused_identity)) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = wait_line(&run.lines, &["COUNTERS"], left, &mut run.seen);
        assert!(line.is_some(), "{}", run.transcript());
    }

    let sas = swanctl(&run.lab, &run.swan, &["--list-sas"]).unwrap();
    let ctx = || format!("swanctl --list-sas:\n{sas}\n{}", run.transcript());
    assert!(!sas.contains("elsewhere: #"), "{}", ctx());
    assert!(
        log(&run.swan).contains("received AUTHENTICATION_FAILED notify error"),
        "{}",
        ctx()
    );
    for installed in ["bitsgw: #", "net: #", "mn2: #", "home2: #"] {
        assert!(sas.contains(installed), "{installed}: {}", ctx());
    }
    assert_eq!(sas.matches("INSTALLED").count(), 2, "{}", ctx());
    assert!(!sas.contains("steal-home: #"), "{}", ctx());
    assert!(
        log(&run.swan).contains("received TS_UNACCEPTABLE notify"),
        "{}",
        ctx()
    );
}
