#!/usr/bin/env python3
"""Consistency check of the example policies in policies/.

For each pair of files (MN/HA, A/B) it checks that:
- every address is in a documentation range (2001:db8::/32, 192.0.2.0/24,
  198.51.100.0/24, 203.0.113.0/24) and every name resolves;
- SPD entries have known fields and values, and every SA named by a
  protect entry exists with the matching direction;
- SPIs and keys are distinct, key lengths fit the transform;
- each outbound SA of one side is an inbound SA of the other with the
  same SPI, transform, keys and options and the tunnel endpoints swapped;
- a packet that one side's outbound SA protects, encrypted by the
  independent peer (scapy) with that SA, decrypts with the other side's
  inbound SA (and tshark confirms the ICV where it can).

Run with the virtualenv's python: .venv/bin/python tests/peer/check_policies.py
"""

import ipaddress
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import esp_peer  # noqa: E402

from scapy.layers.inet import IP, UDP  # noqa: E402
from scapy.layers.inet6 import IPv6  # noqa: E402

POLICIES = os.path.join(HERE, "..", "..", "policies")
PAIRS = [("rfc3776-mn.json", "rfc3776-ha.json"),
         ("dsmip-hostwide-mn.json", "dsmip-hostwide-ha.json"),
         ("site-to-site-a.json", "site-to-site-b.json")]
DOC = [ipaddress.ip_network(n) for n in
       ("2001:db8::/32", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
SELECTORS = {"name", "local", "remote", "proto", "local_port", "remote_port",
             "icmp_type", "icmp_code", "mh_type", "action", "sa"}
PROTOS = {"any", "tcp", "udp", "icmp", "icmpv6", "mh", "esp"}
MH_TYPES = {"brr", "hoti", "coti", "hot", "cot", "bu", "ba", "be"}
SA_FIELDS = {"name", "direction", "spi", "mode", "transform", "enc_key",
             "auth_key", "replay_window", "esn", "tunnel", "udp_encap",
             "lifetime"}
KEYLEN = {"aes-gcm-128": (20, 0), "aes-gcm-256": (36, 0),
          "chacha20-poly1305": (36, 0), "aes-gmac-128": (20, 0),
          "aes-gmac-256": (36, 0), "aes-cbc-128-hmac-sha256": (16, 32),
          "aes-cbc-256-hmac-sha256": (32, 32), "null-hmac-sha256": (0, 32)}

errors = []


def err(msg):
    errors.append(msg)
    print("FAIL", msg)


def doc_addr(text, where):
    try:
        if "/" in text:
            net = ipaddress.ip_network(text)
        elif "-" in text:
            lo, hi = text.split("-")
            net = ipaddress.ip_network(ipaddress.ip_address(lo))
            doc_addr(hi, where)
        else:
            net = ipaddress.ip_network(ipaddress.ip_address(text))
    except ValueError as e:
        err("%s: bad address %r (%s)" % (where, text, e))
        return
    if not any(net.version == d.version and net.subnet_of(d) for d in DOC):
        err("%s: %s is not a documentation address" % (where, text))


def resolve(pol, v, where):
    if v == "any":
        return None
    if v in pol["addresses"]:
        return pol["addresses"][v]
    doc_addr(v, where)
    return v


def number_or_range(v, where, hi=65535):
    if isinstance(v, int) and 0 <= v <= hi:
        return
    if isinstance(v, str) and "-" in v:
        a, b = v.split("-")
        if a.isdigit() and b.isdigit() and int(a) <= int(b) <= hi:
            return
    err("%s: bad number or range %r" % (where, v))


def check_file(fname):
    where = fname
    pol = json.load(open(os.path.join(POLICIES, fname)))
    # The example sets use AES-GCM and ChaCha20-Poly1305 with static keys,
    # which bitsgw refuses without this opt-in (RFC 4106 8.1, RFC 7634 4).
    if set(pol) != {"danger_static_keys_for_counter_mode", "addresses", "spd", "sad"}:
        err("%s: top-level keys %s" % (where, sorted(pol)))
    if pol["danger_static_keys_for_counter_mode"] is not True:
        err("%s: danger_static_keys_for_counter_mode must be true" % where)
    for n, a in pol["addresses"].items():
        doc_addr(a, "%s addresses.%s" % (where, n))
    sas = {}
    for sa in pol["sad"]:
        w = "%s sad.%s" % (where, sa.get("name"))
        if set(sa) - SA_FIELDS:
            err("%s: unknown fields %s" % (w, set(sa) - SA_FIELDS))
        if sa["name"] in sas:
            err("%s: duplicate SA name" % w)
        sas[sa["name"]] = sa
        e, a = KEYLEN.get(sa["transform"], (None, None))
        if e is None:
            err("%s: unknown transform" % w)
            continue
        if len(bytes.fromhex(sa.get("enc_key", "0x")[2:])) != e or \
                len(bytes.fromhex(sa.get("auth_key", "0x")[2:])) != a:
            err("%s: key lengths do not fit %s" % (w, sa["transform"]))
        if (sa["mode"] == "tunnel") != ("tunnel" in sa):
            err("%s: tunnel endpoints iff tunnel mode" % w)
        if "tunnel" in sa:
            ends = [resolve(pol, sa["tunnel"][k], w) for k in
                    ("local", "remote")]
            if None in ends or len({ipaddress.ip_address(x).version
                                    for x in ends}) != 1:
                err("%s: tunnel endpoints %s" % (w, ends))
    used = set()
    for direction in ("outbound", "inbound"):
        entries = pol["spd"][direction]
        if entries[-1].get("action") != "discard" or \
                set(entries[-1]) - {"name", "action"}:
            err("%s spd.%s: last entry is not a catch-all discard" % (
                where, direction))
        for ent in entries:
            w = "%s spd.%s.%s" % (where, direction, ent.get("name"))
            if set(ent) - SELECTORS:
                err("%s: unknown fields %s" % (w, set(ent) - SELECTORS))
            for k in ("local", "remote"):
                if k in ent:
                    resolve(pol, ent[k], w)
            p = ent.get("proto", "any")
            if p not in PROTOS and not isinstance(p, int):
                err("%s: proto %r" % (w, p))
            for k in ("local_port", "remote_port", "icmp_type", "icmp_code"):
                if k in ent:
                    number_or_range(ent[k], w)
            if "mh_type" in ent and ent["mh_type"] not in MH_TYPES:
                number_or_range(ent["mh_type"], w, 255)
            act = ent.get("action")
            if act == "protect":
                names = ent["sa"] if isinstance(ent["sa"], list) \
                    else [ent["sa"]]
                for n in names:
                    if n not in sas:
                        err("%s: no SA %s" % (w, n))
                    elif sas[n]["direction"] != direction:
                        err("%s: SA %s is %s" % (w, n, sas[n]["direction"]))
                    used.add(n)
            elif act not in ("bypass", "discard") or "sa" in ent:
                err("%s: action %r" % (w, act))
    for n in set(sas) - used:
        err("%s: SA %s is not used by any SPD entry" % (where, n))
    return pol, sas


def sample_packet(pol, ent, direction):
    """A packet the entry selects, as its sender would emit it."""
    def pick(k, other):
        v = ent.get(k, "any")
        v = pol["addresses"].get(v, v)
        if v == "any":
            # something in the family of the other side, or of the SA
            fam = 6
            o = ent.get(other, "any")
            o = pol["addresses"].get(o, o)
            if o != "any":
                fam = ipaddress.ip_network(o.split("-")[0], False).version
            return "2001:db8:99::99" if fam == 6 else "203.0.113.99"
        return str(next(iter(ipaddress.ip_network(
            v.split("-")[0], False).hosts()), v.split("/")[0].split("-")[0]))
    local, remote = pick("local", "remote"), pick("remote", "local")
    src, dst = (local, remote) if direction == "outbound" else (remote, local)
    if ":" in src:
        return bytes(IPv6(src=src, dst=dst) / UDP(sport=1000, dport=2000) /
                     b"policy check")
    return bytes(IP(src=src, dst=dst) / UDP(sport=1000, dport=2000) /
                 b"policy check")


def peer_sa(pol, sa):
    d = {"spi": int(sa["spi"], 16), "transform": sa["transform"],
         "enc_key": sa.get("enc_key", ""), "auth_key": sa.get("auth_key", ""),
         "mode": sa["mode"], "esn": sa.get("esn", False),
         "udp_encap": None}
    if sa.get("udp_encap"):
        d["udp_encap"] = {"sport": sa["udp_encap"]["local_port"],
                          "dport": sa["udp_encap"]["remote_port"]}
    if sa["mode"] == "tunnel":
        d["tunnel_src"] = pol["addresses"].get(sa["tunnel"]["local"],
                                               sa["tunnel"]["local"])
        d["tunnel_dst"] = pol["addresses"].get(sa["tunnel"]["remote"],
                                               sa["tunnel"]["remote"])
    return d


def check_pair(f1, f2):
    p1, s1 = check_file(f1)
    p2, s2 = check_file(f2)
    spis = [sa["spi"] for sa in p1["sad"]]
    if len(set(spis)) != len(spis):
        err("%s: duplicate SPIs" % f1)
    keys = [sa.get(k) for sa in p1["sad"] + p2["sad"]
            for k in ("enc_key", "auth_key") if sa.get(k)]
    if len(set(keys)) * 2 != len(keys):  # each key appears on both sides
        err("%s/%s: keys are not distinct per SA" % (f1, f2))
    if p1["addresses"] != p2["addresses"]:
        err("%s/%s: address names differ" % (f1, f2))
    for (pa, sa_a, fa), (pb, sa_b, fb) in (((p1, s1, f1), (p2, s2, f2)),
                                            ((p2, s2, f2), (p1, s1, f1))):
        for ent in pa["spd"]["outbound"]:
            if ent.get("action") != "protect":
                continue
            out = sa_a[ent["sa"]]
            inn = sa_b.get(ent["sa"])
            w = "%s %s -> %s" % (fa, ent["name"], fb)
            if inn is None or inn["direction"] != "inbound":
                err("%s: no inbound SA %s on the other side" % (w, ent["sa"]))
                continue
            for k in SA_FIELDS - {"direction", "tunnel"}:
                if out.get(k) != inn.get(k):
                    err("%s: %s differs" % (w, k))
            if "tunnel" in out:
                if (out["tunnel"]["local"], out["tunnel"]["remote"]) != \
                        (inn["tunnel"]["remote"], inn["tunnel"]["local"]):
                    err("%s: tunnel endpoints not swapped" % w)
            # The peer: encrypt with the sender's SA, decrypt with the
            # receiver's, then let tshark check the ICV.
            pkt = sample_packet(pa, ent, "outbound")
            req = {"sa": peer_sa(pa, out), "packets": [
                {"seq": 1, "hex": pkt.hex()}]}
            enc, st = esp_peer.handle(dict(req, op="encrypt"))
            if st:
                err("%s: encrypt: %s" % (w, enc))
                continue
            dec, st = esp_peer.handle({"op": "decrypt",
                                       "sa": peer_sa(pb, inn),
                                       "packets": [dict(enc["packets"][0],
                                                        seq=1)]})
            if st or not dec["packets"][0]["ok"] or \
                    bytes.fromhex(dec["packets"][0]["hex"]) != pkt:
                err("%s: decrypt: %s" % (w, dec))
                continue
            ts, st = esp_peer.handle({"op": "tshark", "sa": peer_sa(pb, inn),
                                      "packets": [dict(enc["packets"][0],
                                                       seq=1)]})
            note = ""
            if "unsupported" in ts:
                note = " (tshark: %s)" % ts["unsupported"]
            elif st or ts["packets"][0]["icv_good"] is not True:
                err("%s: tshark: %s" % (w, ts))
                continue
            else:
                note = " (tshark: ICV good)"
            print("ok   %-24s %-22s %s SPI %s%s" % (
                fa, ent["name"], out["transform"], out["spi"], note))


def main():
    for f1, f2 in PAIRS:
        check_pair(f1, f2)
    # SPIs distinct across all files too, so captures are unambiguous.
    allspi = {}
    for f1, f2 in PAIRS:
        pol = json.load(open(os.path.join(POLICIES, f1)))
        for sa in pol["sad"]:
            if sa["spi"] in allspi:
                err("SPI %s in %s and %s" % (sa["spi"], f1, allspi[sa["spi"]]))
            allspi[sa["spi"]] = f1
    print("%d problems" % len(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
