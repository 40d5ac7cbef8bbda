//! Checks of a policy set as a whole, after each entry parsed: references
//! between SPD and SAD, shadowed entries, SPI reuse, transport-mode
//! endpoints, and keys (RFC 4106 8.1, RFC 4543 8, RFC 7634 4).

use super::*;

/// Checks the file as a whole: references, directions, shadowed entries,
/// SPI reuse, transport-mode endpoints.
pub(super) fn validate(set: &mut PolicySet) -> Result<(), ConfigError> {
    let file = set.file.clone();
    let err = |entry: String, field: &str, problem: String| ConfigError {
        file: file.clone(),
        entry,
        field: field.to_string(),
        problem,
    };
    for (dir, list) in [
        (Direction::Outbound, &set.outbound),
        (Direction::Inbound, &set.inbound),
    ] {
        for (i, e) in list.iter().enumerate() {
            let label = format!("spd.{}[{i}] {}", dir.name(), Shown(&e.name));
            // RFC 4301 4.4.1: an entry wholly covered by an earlier one can
            // never match; that is almost always an ordering mistake.
            if let Some(j) = list[..i]
                .iter()
                .position(|earlier| e.selector.is_shadowed_by(&earlier.selector))
            {
                return Err(err(
                    label,
                    "",
                    format!(
                        "can never match: entry {j} {} before it covers all its traffic",
                        Shown(&list[j].name)
                    ),
                ));
            }
            if let ActionConfig::Protect(names) = &e.action {
                for n in names {
                    let Some((sa_direction, sa_mode)) = set.sa_direction_mode(n) else {
                        return Err(err(label, "sa", format!("unknown SA name {}", Shown(n))));
                    };
                    if sa_direction != dir {
                        return Err(err(
                            label,
                            "sa",
                            format!(
                                "SA {} is {}, this SPD is {}",
                                Shown(n),
                                sa_direction.name(),
                                dir.name()
                            ),
                        ));
                    }
                    if sa_mode == Mode::Transport {
                        // RFC 4301 4.1: transport mode protects traffic
                        // between the SA's two endpoints only.
                        let single =
                            |a: &AddrSel| matches!(a, AddrSel::Range { lo, hi, .. } if lo == hi);
                        if !single(&e.selector.local) || !single(&e.selector.remote) {
                            let field = if single(&e.selector.local) {
                                "remote"
                            } else {
                                "local"
                            };
                            return Err(err(
                                label,
                                field,
                                format!(
                                    "SA {} is transport mode, which runs between two single addresses, not between {} and {}",
                                    Shown(n),
                                    e.selector.local, e.selector.remote
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    // A transport-mode SA runs between the single addresses of the entries
    // that use it: the peer's is the SA's destination outbound, ours is the
    // destination inbound packets must carry (RFC 4301 4.1).
    let endpoint = |list: &[EntryConfig], name: &str, inbound: bool| {
        list.iter().find_map(|e| {
            match (
                &e.action,
                if inbound {
                    e.selector.local
                } else {
                    e.selector.remote
                },
            ) {
                (ActionConfig::Protect(n), AddrSel::Range { family, lo, hi })
                    if lo == hi && n.iter().any(|x| x == name) =>
                {
                    Some(Addr { family, bits: lo })
                }
                _ => None,
            }
        })
    };
    let mut dests = Vec::with_capacity(set.sas.len());
    for sa in &mut set.sas {
        let dest = match (sa.mode, sa.direction) {
            (Mode::Tunnel { remote, .. }, Direction::Outbound) => Some(remote),
            (Mode::Tunnel { local, .. }, Direction::Inbound) => Some(local),
            (Mode::Transport, Direction::Outbound) => endpoint(&set.outbound, &sa.name, false),
            (Mode::Transport, Direction::Inbound) => endpoint(&set.inbound, &sa.name, true),
        };
        if sa.direction == Direction::Inbound {
            sa.destination = dest;
        }
        dests.push(dest);
    }
    for sa in &mut set.ike_sas {
        sa.destination = match (sa.mode, sa.direction) {
            (Mode::Tunnel { local, .. }, Direction::Inbound) => Some(local),
            (Mode::Transport, Direction::Inbound) => endpoint(&set.inbound, &sa.name, true),
            (_, Direction::Outbound) => None,
        };
    }
    for sa in &set.ike_sas {
        if !set.protects_with(sa.direction, &sa.name) {
            return Err(err(
                format!("sad {}", Shown(&sa.name)),
                "name",
                format!(
                    "no {} SPD entry protects with this IKE-keyed SA",
                    sa.direction.name()
                ),
            ));
        }
    }
    check_static_keys(set)?;
    // SPI reuse: inbound SPIs select the SA, so they must be unique
    // (RFC 4301 4.1); an outbound SPI must be unique per destination.
    for (i, sa) in set.sas.iter().enumerate() {
        let label = format!("sad[{i}] {}", Shown(&sa.name));
        if let Some(j) = set.sas[..i].iter().enumerate().position(|(j, o)| {
            o.spi == sa.spi
                && o.direction == sa.direction
                && (sa.direction == Direction::Inbound || dests[j] == dests[i])
        }) {
            return Err(err(
                label,
                "spi",
                format!(
                    "SPI {:#x} is already used by sad[{j}] {}",
                    sa.spi,
                    Shown(&set.sas[j].name)
                ),
            ));
        }
        if !set.protects_with(sa.direction, &sa.name) {
            if sa.direction == Direction::Inbound {
                return Err(err(
                    label,
                    "name",
                    "no inbound SPD entry protects with this SA, so it would have no selectors (RFC 4301 4.4.2)".into(),
                ));
            }
            set.warnings.push(format!(
                "{}: {label}: no outbound SPD entry uses this SA",
                set.file
            ));
        }
    }
    check_bundles_apart(set)
}

impl PolicySet {
    /// Whether an entry of the `direction` SPD protects with SA `name`.
    fn protects_with(&self, direction: Direction, name: &str) -> bool {
        match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        }
        .iter()
        .any(|e| matches!(&e.action, ActionConfig::Protect(n) if n.iter().any(|x| x == name)))
    }

    /// The SA whose owner SA `name` has (see [`crate::ownership`]): the
    /// first SA of the bundle it is in, or itself. A reload that keeps an
    /// SA must keep this, or the SA would change owners.
    pub fn ownership_anchor<'a>(&'a self, name: &'a str) -> &'a str {
        self.outbound
            .iter()
            .chain(&self.inbound)
            .find_map(|e| match &e.action {
                ActionConfig::Protect(names)
                    if names.len() > 1 && names.iter().any(|n| n == name) =>
                {
                    names.first().map(String::as_str)
                }
                _ => None,
            })
            .unwrap_or(name)
    }

    /// The first SA of this set that `old` has too but whose owner would
    /// change (its bundle changed), with its anchors before and after.
    pub fn owner_changes<'a>(&'a self, old: &'a PolicySet) -> Option<(&'a str, &'a str, &'a str)> {
        self.sas.iter().find_map(|sa| {
            let name = sa.name.as_str();
            if !old.sas.iter().any(|o| o.name == name) {
                return None;
            }
            let (was, will) = (old.ownership_anchor(name), self.ownership_anchor(name));
            (was != will).then_some((name, was, will))
        })
    }
}

/// A bundle is owned as a whole by one worker (see
/// [`crate::ownership`]), so an SA may belong to one bundle only: two
/// bundles sharing an SA would need two owners for it.
fn check_bundles_apart(set: &PolicySet) -> Result<(), ConfigError> {
    let mut bundles: Vec<(String, &[String])> = Vec::new();
    for (dir, list) in [
        (Direction::Outbound, &set.outbound),
        (Direction::Inbound, &set.inbound),
    ] {
        for (i, e) in list.iter().enumerate() {
            let ActionConfig::Protect(names) = &e.action else {
                continue;
            };
            if names.len() < 2 {
                continue;
            }
            let label = format!("spd.{}[{i}] {}", dir.name(), Shown(&e.name));
            for (other, other_names) in &bundles {
                let shared = names.iter().find(|n| other_names.contains(n));
                if let (Some(n), true) = (shared, *other_names != &names[..]) {
                    return Err(ConfigError {
                        file: set.file.clone(),
                        entry: label,
                        field: "sa".into(),
                        problem: format!(
                            "SA {} is also in the bundle of {other}; an SA can be in one bundle only (a bundle is owned by one worker)",
                            Shown(n)
                        ),
                    });
                }
            }
            bundles.push((label, names));
        }
    }
    Ok(())
}

/// Static (manually configured) keys: counter-mode transforms need the
/// file's explicit opt-in, and no key is used by two SAs.
pub(super) fn check_static_keys(set: &mut PolicySet) -> Result<(), ConfigError> {
    let err = |i: usize, field: &str, problem: String| ConfigError {
        file: set.file.clone(),
        entry: format!("sad[{i}] {}", Shown(&set.sas[i].name)),
        field: field.to_string(),
        problem,
    };
    let mut counter_mode = Vec::new();
    for (i, sa) in set.sas.iter().enumerate() {
        if let Some(rfc) = sa.transform.static_key_rfc() {
            if !set.danger_static_keys_for_counter_mode {
                return Err(err(
                    i,
                    "transform",
                    format!(
                        "{} with a static key is refused ({rfc}): its nonce is the sequence number, \
                         which starts again at 1 whenever the SA is installed anew (restart, reload), \
                         and a reused nonce gives the key stream and the authentication key away. \
                         Use dynamic keying (IKEv2: \"keyed_by\": \"ike\" and a peer), or a CBC+HMAC \
                         transform (aes-cbc-128-hmac-sha256, aes-cbc-256-hmac-sha256), or, for \
                         labs, replay and benchmarks only, set \"{DANGER_STATIC_KEYS}\": true at \
                         the top level of the file (bitsgw run then leases sequence numbers in \
                         its state directory so that none is used twice)",
                        sa.transform
                    ),
                ));
            }
            counter_mode.push(sa.name.as_str());
        }
    }
    // One key on two SAs is one nonce space used twice (the same sequence
    // numbers, the same IVs), or an attacker's way to move packets from
    // one SA to the other.
    for (i, sa) in set.sas.iter().enumerate() {
        for (field, key) in [("enc_key", &sa.enc_key), ("auth_key", &sa.auth_key)] {
            if key.is_empty() {
                continue;
            }
            if let Some(j) = set.sas[..i]
                .iter()
                .position(|o| &o.enc_key == key || &o.auth_key == key)
            {
                return Err(err(
                    i,
                    field,
                    format!(
                        "this key is also a key of sad[{j}] {}: every SA needs keys of its own",
                        Shown(&set.sas[j].name)
                    ),
                ));
            }
        }
    }
    if !counter_mode.is_empty() {
        let names: Vec<String> = counter_mode.iter().map(|n| Shown(n).to_string()).collect();
        set.warnings.push(format!(
            "{}: \"{DANGER_STATIC_KEYS}\" is on: {} use a counter-mode transform with a static key \
             (RFC 4106 8.1, RFC 4543 8, RFC 7634 4 forbid it); bitsgw run leases their sequence \
             numbers in its state directory so no nonce is reused, but keep this to labs, replay \
             and benchmarks",
            set.file,
            names.join(", ")
        ));
    }
    Ok(())
}
