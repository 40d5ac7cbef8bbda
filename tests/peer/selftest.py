#!/usr/bin/env python3
"""Self-test of esp_peer.py: scapy against itself and against tshark.

For every transform x mode x address family (inner and outer, mixed in
tunnel mode) x UDP encapsulation (none, 4500, other ports) it encrypts a few
packets with scapy, decrypts them again with scapy (the result must be the
original bytes), and has tshark check them (ICV good, next header right,
decrypted bytes equal to ours) where tshark 4.0 can. It also checks that a
flipped ICV byte is caught by both, that ESN works in scapy and is reported
unsupported by tshark, and that a fixed IV gives reproducible output.

Requests go through esp_peer.handle() as JSON text, so the JSON interface
is what is tested; selftest.sh runs a few through the command line too.
Prints one line per combination; exits non-zero on any failure.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import esp_peer  # noqa: E402

from scapy.layers.inet import IP, UDP, ICMP, TCP  # noqa: E402
from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest  # noqa: E402
from scapy.layers.inet6 import MIP6MH_BU  # noqa: E402

KEYLEN = {  # enc_key, auth_key lengths
    "aes-gcm-128": (20, 0), "aes-gcm-256": (36, 0),
    "chacha20-poly1305": (36, 0),
    "aes-gmac-128": (20, 0), "aes-gmac-256": (36, 0),
    "aes-cbc-128-hmac-sha256": (16, 32), "aes-cbc-256-hmac-sha256": (32, 32),
    "null-hmac-sha256": (0, 32),
}
assert set(KEYLEN) == set(esp_peer.TRANSFORMS)

V4 = ("192.0.2.10", "198.51.100.20")
V6 = ("2001:db8:1::100", "2001:db8:1::1")
OUT4 = ("203.0.113.1", "203.0.113.2")
OUT6 = ("2001:db8:ffff::1", "2001:db8:ffff::2")

failures = []
skips = []
spi_counter = 0x1000


def call(req):
    ans, status = esp_peer.handle(json.loads(json.dumps(req)))
    ans = json.loads(json.dumps(ans))
    if status != 0 or "error" in ans:
        raise AssertionError("esp_peer error: %s" % ans.get("error", ans))
    return ans


def inner_packets(fam):
    """A few packets of different lengths (so every padding length shows
    up across the set) and protocols."""
    if fam == 4:
        s, d = V4
        return [
            IP(src=s, dst=d) / UDP(sport=1000, dport=2000) / (b"x" * 13),
            IP(src=s, dst=d) / ICMP() / (b"p" * 30),
            IP(src=s, dst=d) / TCP(sport=40000, dport=80, flags="S"),
        ]
    s, d = V6
    return [
        IPv6(src=s, dst=d) / UDP(sport=1000, dport=2000) / (b"x" * 13),
        IPv6(src=s, dst=d) / MIP6MH_BU(seq=7, flags=0x68, mhtime=10),
        IPv6(src=s, dst=d) / ICMPv6EchoRequest(data=b"e" * 51),
    ]


def make_sa(transform, mode, outer, udp_encap, esn=False):
    e, a = KEYLEN[transform]
    global spi_counter
    spi_counter += 1
    sa = {"spi": spi_counter, "transform": transform,
          "enc_key": os.urandom(e).hex(), "auth_key": os.urandom(a).hex(),
          "mode": mode, "esn": esn, "udp_encap": udp_encap}
    if mode == "tunnel":
        sa["tunnel_src"], sa["tunnel_dst"] = OUT4 if outer == 4 else OUT6
    return sa


def next_header(pkt, mode):
    if mode == "tunnel":
        return 4 if pkt.version == 4 else 41
    return pkt.proto if pkt.version == 4 else pkt.nh


def check_combo(transform, mode, inner, outer, udp_encap, esn=False):
    name = "%-24s %-9s in=v%d out=v%d udp=%-9s%s" % (
        transform, mode, inner, outer,
        "%d/%d" % (udp_encap["sport"], udp_encap["dport"])
        if udp_encap else "-", " esn" if esn else "")
    sa = make_sa(transform, mode, outer, udp_encap, esn)
    pkts = inner_packets(inner)
    base = (1 << 32) + 5 if esn else 1
    seqs = [base, base + 1, 0xfffffffe if not esn else (7 << 32) + 1]
    clear = [bytes(p) for p in pkts]
    try:
        enc = call({"op": "encrypt", "sa": sa, "packets": [
            {"seq": q, "hex": c.hex()} for q, c in zip(seqs, clear)]})
        outs = [bytes.fromhex(p["hex"]) for p in enc["packets"]]
        assert len(outs) == len(clear)
        for q, o, c, p in zip(seqs, outs, clear, pkts):
            hdr = esp_peer.parse_ip(o)
            assert hdr.version == outer, "outer family %d" % hdr.version
            if udp_encap:
                u = hdr.getlayer(UDP)
                assert u is not None and u.sport == udp_encap["sport"] and \
                    u.dport == udp_encap["dport"], "UDP ports"
                assert u.len == len(bytes(u)), "UDP length %d" % u.len
        # scapy -> scapy
        dec = call({"op": "decrypt", "sa": sa, "packets": [
            {"seq": q, "hex": o.hex()} for q, o in zip(seqs, outs)]})
        for q, d, c, p in zip(seqs, dec["packets"], clear, pkts):
            assert d["ok"], "decrypt: %s" % d
            assert bytes.fromhex(d["hex"]) == c, \
                "decrypt gave %s, want %s" % (d["hex"], c.hex())
            assert d["padding_ok"], "padding"
            assert d["esp_seq"] == q & 0xffffffff
            assert d["next_header"] == next_header(p, mode)
        # flipped last ICV byte -> integrity error
        bad = bytearray(outs[0])
        bad[-1] ^= 0x01
        d = call({"op": "decrypt", "sa": sa,
                  "packets": [{"seq": seqs[0], "hex": bad.hex()}]})
        assert d["packets"][0] == {"ok": False, "error": "integrity"}, \
            "tampered: %s" % d["packets"][0]
        if esn:
            # wrong high bits -> integrity error (ESN is in the ICV)
            d = call({"op": "decrypt", "sa": sa, "packets": [
                {"seq": seqs[0] & 0xffffffff, "hex": outs[0].hex()}]})
            assert d["packets"][0] == {"ok": False, "error": "integrity"}, \
                "ESN high bits not authenticated: %s" % d["packets"][0]
        # scapy -> tshark
        ts = call({"op": "tshark", "sa": sa,
                   "fields": ["esp.decrypted_data"],
                   "packets": [{"seq": q, "hex": o.hex()}
                               for q, o in zip(seqs, outs)] +
                   [{"seq": seqs[0], "hex": bad.hex()}]})
        if "unsupported" in ts:
            skips.append("%s: tshark: %s" % (name.strip(), ts["unsupported"]))
            print("ok   %s (tshark: unsupported: %s)" % (name,
                                                         ts["unsupported"]))
            return
        res = ts["packets"]
        assert len(res) == 4
        for r, p, d in zip(res[:3], pkts, dec["packets"]):
            assert r["icv_good"] is True, "tshark icv: %s" % r
            assert r["decrypted_proto"] == next_header(p, mode), \
                "tshark next header: %s" % r
            # tshark's plaintext = what we put in + padding, pad length
            # and next header.
            dd = r["fields"].get("esp.decrypted_data")
            raw_p = bytes(p)
            if mode == "tunnel":
                data = raw_p
            elif p.version == 4:
                data = raw_p[(raw_p[0] & 15) * 4:]
            else:
                data = raw_p[40:]
            n = d["pad_len"]
            want = data + bytes(range(1, n + 1)) + \
                bytes([n, d["next_header"]])
            got = bytes.fromhex(dd[0].replace(":", "")) if dd else b""
            assert got == want, "tshark plaintext %s, want %s" % (
                got.hex(), want.hex())
        assert res[3]["icv_good"] is False, "tshark tampered: %s" % res[3]
        print("ok   %s" % name)
    except AssertionError as e:
        failures.append("%s: %s" % (name.strip(), e))
        print("FAIL %s: %s" % (name, e))


def check_fixed_iv():
    """Same IV, same input -> same bytes (callers compare byte for byte)."""
    for transform in sorted(KEYLEN):
        sa = make_sa(transform, "tunnel", 6, None)
        ivlen = {"AES-CBC": 16, "NULL": 0}.get(
            esp_peer.TRANSFORMS[transform][0], 8)
        pkt = {"seq": 3, "hex": bytes(inner_packets(6)[1]).hex(),
               "iv": "ab" * ivlen}
        a = call({"op": "encrypt", "sa": sa, "packets": [pkt, pkt]})
        b = call({"op": "encrypt", "sa": sa, "packets": [pkt]})
        if not (a["packets"][0] == a["packets"][1] == b["packets"][0]):
            failures.append("fixed IV not reproducible for %s" % transform)
        elif ivlen and ("ab" * ivlen) not in a["packets"][0]["hex"]:
            failures.append("fixed IV not on the wire for %s" % transform)
    print("ok   fixed IV gives reproducible output (all transforms)")


def check_errors():
    sa = make_sa("aes-gcm-128", "transport", 6, None)
    ans, st = esp_peer.handle({"op": "encrypt", "sa": dict(sa, enc_key="00"),
                               "packets": []})
    assert st == 2 and "enc_key" in ans["error"], ans
    other = make_sa("aes-gcm-128", "transport", 6, None)
    other["spi"] = sa["spi"] + 100
    enc = call({"op": "encrypt", "sa": other, "packets": [
        {"seq": 1, "hex": bytes(inner_packets(6)[0]).hex()}]})
    d = call({"op": "decrypt", "sa": sa, "packets": enc["packets"]})
    assert not d["packets"][0]["ok"] and \
        d["packets"][0]["error"].startswith("other: ") and \
        "spi" in d["packets"][0]["error"], d
    # UDP-encapsulated packet for an SA without udp_encap
    enc = call({"op": "encrypt", "sa": dict(sa, udp_encap={"sport": 4500,
                                                           "dport": 4500}),
                "packets": [{"seq": 1,
                             "hex": bytes(inner_packets(6)[0]).hex()}]})
    d = call({"op": "decrypt", "sa": sa, "packets": enc["packets"]})
    assert d["packets"][0]["error"].startswith("other: "), d
    print("ok   request errors and wrong SPI / encapsulation are reported")


def main():
    quick = "--quick" in sys.argv
    t0 = time.time()
    transforms = sorted(KEYLEN)
    shapes = [("transport", 4, 4), ("transport", 6, 6),
              ("tunnel", 4, 4), ("tunnel", 6, 6),
              ("tunnel", 6, 4), ("tunnel", 4, 6)]
    encaps = [None, {"sport": 4500, "dport": 4500},
              {"sport": 4501, "dport": 14500}]
    for t in transforms:
        for mode, inner, outer in shapes:
            for ue in encaps:
                if quick and (ue is not None and ue["sport"] != 4500 or
                              (mode, inner, outer) in
                              [("tunnel", 4, 4), ("tunnel", 6, 6)]):
                    continue
                check_combo(t, mode, inner, outer, ue)
        check_combo(t, "tunnel", 6, 4, {"sport": 4500, "dport": 4500},
                    esn=True)
        check_combo(t, "transport", 6, 6, None, esn=True)
    check_fixed_iv()
    try:
        check_errors()
    except AssertionError as e:
        failures.append("error reporting: %s" % e)
    print("%d failures, %d tshark skips, %.1f s" % (
        len(failures), len(skips), time.time() - t0))
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
