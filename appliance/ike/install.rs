//! Installing what IKE negotiated: a CHILD_SA's SAs into the stages, and
//! their UDP encapsulation moved when the peer's NAT mapping changes.

use super::*;

impl Thread {
    pub(super) fn child_up(&mut self, i: usize, c: &ChildSaEstablished) {
        let name = self.peers[i].settings.name.clone();
        let Some(child) = self.peers[i].child(&c.child).cloned() else {
            warn!(peer = %name, child = %c.child, "CHILD_SA of no configured child; not installed");
            return;
        };
        let (Some(inbound_sa), Some(outbound_sa)) = (
            self.policy.ike_sa(&child.inbound),
            self.policy.ike_sa(&child.outbound),
        ) else {
            return;
        };
        let Some(t) = transform(&c.suite) else {
            warn!(peer = %name, suite = ?c.suite, "CHILD_SA with a transform the stage lacks; not installed");
            return;
        };
        // RFC 3948: ESP in UDP between the IKE SA's addresses; in the
        // mobility roles ESP crosses a NAT inside the mobility tunnel's own
        // UDP encapsulation instead (RFC 5555 4.1), never in UDP of its own.
        let own_udp = c.udp_encapsulation && !self.peers[i].settings.mobility_tunnel;
        let encap = own_udp.then(|| UdpEncap {
            local_port: c.local.port(),
            remote_port: c.remote.port(),
        });
        if encap.is_some() && !reaches_peer(outbound_sa.mode, c.remote.ip()) {
            warn!(peer = %name, sa = %child.outbound, remote = %c.remote.ip(), "CHILD_SA UDP-encapsulated toward an address other than its SA's tunnel endpoint (the peer's NAT?); not installed");
            return;
        }
        if let Some(keys) = &mut self.wireshark_keys {
            keys.child_up(c, t, outbound_sa.mode);
        }
        let (in_enc, in_auth) = stage_keys(&c.inbound);
        let (out_enc, out_auth) = stage_keys(&c.outbound);
        let mut inbound = inbound_sa.keyed(c.inbound_spi, t, in_enc, in_auth, encap);
        let mut outbound = outbound_sa.keyed(c.outbound_spi, t, out_enc, out_auth, encap);
        // The IKE thread deletes a CHILD_SA not rekeyed by its hard
        // lifetime; the stage holds the same limit (a second later, so
        // the IKE thread's delete comes first) should that thread stall.
        let hard = Lifetimes::hard(self.peers[i].settings.child_lifetime).as_secs() + 1;
        inbound.hard.seconds = Some(hard);
        outbound.hard.seconds = Some(hard);
        info!(
            peer = %name,
            child = %c.child,
            inbound = %child.inbound,
            inbound_spi = %format!("{:08x}", c.inbound_spi),
            outbound = %child.outbound,
            outbound_spi = %format!("{:08x}", c.outbound_spi),
            transform = t.name(),
            udp_encapsulation = c.udp_encapsulation,
            rekeys = ?c.rekeys.map(|s| format!("{s:08x}")),
            "CHILD_SA established; installing"
        );
        let since = self.now().0;
        let p = &mut self.peers[i];
        // A new IKE SA's CHILD_SA (a care-of peer's, established again
        // from its new care-of address) replaces the one installed under
        // the old IKE SA, as a rekey would: the same child's.
        let replaced = match c.rekeys {
            None if !c.exchange_initiator && p.ike_sas.len() > 1 => p
                .children
                .iter()
                .find(|(s, v)| **s != c.inbound_spi && v["child"] == c.child.as_str())
                .map(|(s, _)| *s),
            _ => None,
        };
        if let Some(old) = c.rekeys {
            p.children.remove(&old);
        }
        p.children.insert(
            c.inbound_spi,
            json!({
                "child": c.child,
                IKE_SA: ike_sa_text(c.ike),
                "inbound": child.inbound,
                "outbound": child.outbound,
                "inbound_spi": format!("{:08x}", c.inbound_spi),
                "outbound_spi": format!("{:08x}", c.outbound_spi),
                "transform": t.name(),
                "mode": format!("{:?}", c.mode).to_lowercase(),
                "udp_encapsulation": c.udp_encapsulation,
                "udp_ports": encap.map(|e| [e.local_port, e.remote_port]),
                SINCE: since,
            }),
        );
        // RFC 7296 2.8: the rekey's responder uses its new outbound SA
        // only once the initiator has deleted the old CHILD_SA, which it
        // does after installing the new one; until then the peer may not
        // have the new inbound SA.
        p.pending_outbound.retain(|o| o.child != c.child);
        p.established += 1;
        p.keyed.insert(
            c.inbound_spi,
            Keyed {
                child: c.child.clone(),
                inbound: inbound.clone(),
                outbound: outbound.clone(),
                order: p.established,
            },
        );
        let installed = p.installed.entry(c.child.clone()).or_default();
        installed.0 = Some(c.inbound_spi);
        let sas = match c.rekeys.or(replaced) {
            Some(old) if !c.exchange_initiator => {
                p.pending_outbound.push(PendingOutbound {
                    child: c.child.clone(),
                    replaces: old,
                    inbound_spi: c.inbound_spi,
                    outbound: Box::new(outbound),
                });
                vec![inbound]
            }
            _ => {
                installed.1 = Some(c.inbound_spi);
                vec![inbound, outbound]
            }
        };
        self.change(SaChange::Install { peer: name, sas });
    }

    /// CHILD_SA `gone` of `child` was deleted: if its SAs are the ones
    /// under the child's names while another CHILD_SA of the child stays,
    /// the latest of those is installed in their place before `gone`'s
    /// are removed. Two rekeys of one CHILD_SA at once (RFC 7296 2.8.1)
    /// leave two new CHILD_SAs, each installed when established; the
    /// redundant one, deleted, may be the one installed last, and its
    /// removal would otherwise leave the child with no SA (what it
    /// protects dropped as `no_sa` until the next rekey).
    pub(super) fn put_back_survivor(&mut self, i: usize, child: &str, gone: u32) {
        let p = &mut self.peers[i];
        p.keyed.remove(&gone);
        p.pending_outbound.retain(|o| o.inbound_spi != gone);
        let Some(installed) = p.installed.get_mut(child) else {
            return;
        };
        let holds = (installed.0 == Some(gone), installed.1 == Some(gone));
        if holds == (false, false) {
            return;
        }
        let Some((&spi, k)) = p
            .keyed
            .iter()
            .filter(|(_, k)| k.child == child)
            .max_by_key(|(_, k)| k.order)
        else {
            return;
        };
        let mut sas = Vec::new();
        if holds.0 {
            installed.0 = Some(spi);
            sas.push(k.inbound.clone());
        }
        if holds.1 {
            installed.1 = Some(spi);
            sas.push(k.outbound.clone());
            // Installed now: the peer has it (it is the CHILD_SA that
            // stays on both sides).
            p.pending_outbound.retain(|o| o.inbound_spi != spi);
        }
        info!(peer = %p.settings.name, child, inbound_spi = %format!("{spi:08x}"), "CHILD_SA deleted while its SAs were installed: the child's other CHILD_SA takes their place");
        let peer = p.settings.name.clone();
        self.change(SaChange::Install { peer, sas });
    }

    /// RFC 7296 2.23: the peer behind a NAT came from a new port; its
    /// CHILD_SAs' ESP goes there too, and so will the outbound SA a rekey
    /// holds back.
    pub(super) fn moved(&mut self, i: usize, local: SocketAddr, remote: SocketAddr) {
        let encap = UdpEncap {
            local_port: local.port(),
            remote_port: remote.port(),
        };
        let p = &mut self.peers[i];
        let name = p.settings.name.clone();
        info!(peer = %name, %remote, "IKE: the peer moved; its UDP-encapsulated SAs follow");
        for pending in &mut p.pending_outbound {
            if pending.outbound.udp_encap.is_some() {
                pending.outbound.udp_encap = Some(encap);
            }
        }
        for c in p.children.values_mut() {
            if c["udp_encapsulation"] == true {
                c["udp_ports"] = json!([local.port(), remote.port()]);
            }
        }
        let sas = p
            .settings
            .children
            .iter()
            .flat_map(|c| [c.outbound.clone(), c.inbound.clone()])
            .collect();
        self.change(SaChange::Encapsulate {
            peer: name,
            sas,
            encap,
        });
    }
}
