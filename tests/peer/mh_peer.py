#!/usr/bin/env python3
"""Independent Mobile IPv6 peer for bitsgw-wire's interoperability test.

Run as ``.venv/bin/python tests/peer/mh_peer.py`` with a JSON list of
requests on stdin; prints a JSON list of answers, in order. Scapy (>= 2.6)
builds and dissects the packets; the DSMIPv6 mobility options (RFC 5555
3.1, 3.2: types 29-32), which scapy lacks, are small classes defined here.

A message ("msg") is described as::

    {"type": <MH Type>, ...fields..., "options": [<option>, ...]}

with fields per type: 0 BRR none; 1/2 HoTI/CoTI "cookie" (hex); 3/4 HoT/CoT
"index", "cookie", "token"; 5 BU "seq", "a", "h", "l", "k", "f",
"lifetime" (4 s units); 6 BA "status", "k", "seq", "lifetime"; 7 BE
"status", "home". Options (padding is never listed)::

    {"t": 2, "interval"}  {"t": 3, "addr"}  {"t": 4, "home", "coa"}
    {"t": 5, "data": hex} {"t": 29, "plen", "p", "addr"}
    {"t": 30, "status", "plen", "addr"} {"t": 31, "f", "refresh"}
    {"t": 32, "addr"}

Found with scapy 2.8.0: MIP6OptNonceIndices defaults its Length to 16
(RFC 6275 6.2.6: 4), so it is set explicitly here.

Requests and answers:
- {"op": "build_mh", "src", "dst", "msg"} -> {"hex": IPv6 packet}
- {"op": "dissect_mh", "hex": IPv6 packet} -> {"msg", "cksum_ok": bool,
  "len_field": Header Len}; cksum_ok is scapy's own checksum computation
  compared with the packet's.
- {"op": "build_ext", "src", "dst", "hao": addr|null, "rh2": addr|null,
  "tail": hex, "tail_nh": N} -> {"hex"}: IPv6 / [RH2] / [DestOpt(HAO)] /
  raw tail (e.g. an ESP header) with Next Header tail_nh.
- {"op": "dissect_ext", "hex"} -> {"src", "dst", "plen_ok": bool,
  "chain": [next header values], "hao": addr|null, "rh2": addr|null,
  "segleft": N|null, "tail": hex}
- failures: {"error": "..."} in place of the answer.
"""

import json
import sys

from scapy.all import IP, IPField, Raw  # noqa: F401
from scapy.fields import BitField, ByteField, IntField, ShortField
from scapy.layers.inet6 import (
    HAO,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrRouting,
    MIP6MH_BA,
    MIP6MH_BE,
    MIP6MH_BRR,
    MIP6MH_BU,
    MIP6MH_CoT,
    MIP6MH_CoTI,
    MIP6MH_HoT,
    MIP6MH_HoTI,
    MIP6OptAltCoA,
    MIP6OptBindingAuthData,
    MIP6OptBRAdvice,
    MIP6OptNonceIndices,
    Pad1,
    PadN,
    _MIP6OptAlign,
    in6_chksum,
    moboptcls,
)


class OptIPv4HoA(_MIP6OptAlign):
    """IPv4 Home Address option, RFC 5555 3.1.1 (alignment 4n)."""
    name = "MIP6 Option - IPv4 Home Address"
    fields_desc = [ByteField("otype", 29), ByteField("olen", 6),
                   BitField("plen", 0, 6), BitField("p", 0, 1),
                   BitField("res", 0, 9), IPField("addr", "0.0.0.0")]
    x = 4
    y = 0


class OptIPv4Ack(_MIP6OptAlign):
    """IPv4 Address Acknowledgement option, RFC 5555 3.2.1 (4n)."""
    name = "MIP6 Option - IPv4 Address Acknowledgement"
    fields_desc = [ByteField("otype", 30), ByteField("olen", 6),
                   ByteField("status", 0), BitField("plen", 0, 6),
                   BitField("res", 0, 2), IPField("addr", "0.0.0.0")]
    x = 4
    y = 0


class OptNatDetect(_MIP6OptAlign):
    """NAT Detection option, RFC 5555 3.2.2 (4n)."""
    name = "MIP6 Option - NAT Detection"
    fields_desc = [ByteField("otype", 31), ByteField("olen", 6),
                   BitField("f", 0, 1), BitField("res", 0, 15),
                   IntField("refresh", 0)]
    x = 4
    y = 0


class OptIPv4CoA(_MIP6OptAlign):
    """IPv4 Care-of Address option, RFC 5555 3.1.2 (4n)."""
    name = "MIP6 Option - IPv4 Care-of Address"
    fields_desc = [ByteField("otype", 32), ByteField("olen", 6),
                   ShortField("res", 0), IPField("addr", "0.0.0.0")]
    x = 4
    y = 0


moboptcls.update({29: OptIPv4HoA, 30: OptIPv4Ack, 31: OptNatDetect,
                  32: OptIPv4CoA})

MH_CLASSES = {0: MIP6MH_BRR, 1: MIP6MH_HoTI, 2: MIP6MH_CoTI, 3: MIP6MH_HoT,
              4: MIP6MH_CoT, 5: MIP6MH_BU, 6: MIP6MH_BA, 7: MIP6MH_BE}


def build_option(o):
    t = o["t"]
    if t == 2:
        return MIP6OptBRAdvice(rinter=o["interval"])
    if t == 3:
        return MIP6OptAltCoA(acoa=o["addr"])
    if t == 4:
        # Scapy 2.8's default olen for this option is 16; RFC 6275 6.2.6
        # says 4.
        return MIP6OptNonceIndices(olen=4, hni=o["home"], coni=o["coa"])
    if t == 5:
        data = bytes.fromhex(o["data"])
        return MIP6OptBindingAuthData(olen=len(data),
                                      authenticator=int.from_bytes(data, "big"))
    if t == 29:
        return OptIPv4HoA(plen=o["plen"], p=int(o["p"]), addr=o["addr"])
    if t == 30:
        return OptIPv4Ack(status=o["status"], plen=o["plen"], addr=o["addr"])
    if t == 31:
        return OptNatDetect(f=int(o["f"]), refresh=o["refresh"])
    if t == 32:
        return OptIPv4CoA(addr=o["addr"])
    raise ValueError("unknown option %r" % (o,))


def dissect_option(o):
    if isinstance(o, (Pad1, PadN)):
        return None
    if isinstance(o, MIP6OptBRAdvice):
        return {"t": 2, "interval": o.rinter}
    if isinstance(o, MIP6OptAltCoA):
        return {"t": 3, "addr": o.acoa}
    if isinstance(o, MIP6OptNonceIndices):
        return {"t": 4, "home": o.hni, "coa": o.coni}
    if isinstance(o, MIP6OptBindingAuthData):
        return {"t": 5, "data": o.authenticator.to_bytes(o.olen, "big").hex()}
    if isinstance(o, OptIPv4HoA):
        return {"t": 29, "plen": o.plen, "p": bool(o.p), "addr": o.addr}
    if isinstance(o, OptIPv4Ack):
        return {"t": 30, "status": o.status, "plen": o.plen, "addr": o.addr}
    if isinstance(o, OptNatDetect):
        return {"t": 31, "f": bool(o.f), "refresh": o.refresh}
    if isinstance(o, OptIPv4CoA):
        return {"t": 32, "addr": o.addr}
    return {"t": o.otype, "raw": bytes(o).hex()}


def build_mh(msg):
    t = msg["type"]
    opts = [build_option(o) for o in msg.get("options", [])]
    cookie = bytes.fromhex(msg.get("cookie", "00" * 8))
    if t == 0:
        mh = MIP6MH_BRR()
    elif t in (1, 2):
        mh = MH_CLASSES[t](cookie=cookie)
    elif t in (3, 4):
        mh = MH_CLASSES[t](index=msg["index"], cookie=cookie,
                           token=bytes.fromhex(msg["token"]))
    elif t == 5:
        flags = "".join(c.upper() for c in "ahlk" if msg.get(c))
        # The F flag (0x0100) is the top bit of scapy's 9-bit "reserved".
        mh = MIP6MH_BU(seq=msg["seq"], flags=flags,
                       reserved=0x100 if msg.get("f") else 0,
                       mhtime=msg["lifetime"])
    elif t == 6:
        mh = MIP6MH_BA(status=msg["status"], flags="K" if msg["k"] else 0,
                       seq=msg["seq"], mhtime=msg["lifetime"])
    elif t == 7:
        mh = MIP6MH_BE(status=msg["status"], ha=msg["home"])
    else:
        raise ValueError("unknown MH type %r" % t)
    mh.options = opts
    return mh


def dissect_mh(pkt):
    mh = None
    for cls in MH_CLASSES.values():
        if pkt.haslayer(cls):
            mh = pkt.getlayer(cls)
            break
    if mh is None:
        raise ValueError("scapy found no mobility header: %r" % pkt)
    t = mh.mhtype
    msg = {"type": t}
    if t in (1, 2):
        msg["cookie"] = mh.cookie.hex()
    elif t in (3, 4):
        msg.update(index=mh.index, cookie=mh.cookie.hex(), token=mh.token.hex())
    elif t == 5:
        msg.update(seq=mh.seq, a=bool(mh.flags.A), h=bool(mh.flags.H),
                   l=bool(mh.flags.L), k=bool(mh.flags.K),
                   f=bool(mh.reserved & 0x100), lifetime=int(mh.mhtime))
    elif t == 6:
        msg.update(status=mh.status, k=bool(mh.flags.K), seq=mh.seq,
                   lifetime=int(mh.mhtime))
    elif t == 7:
        msg.update(status=mh.status, home=mh.ha)
    msg["options"] = [d for d in map(dissect_option, mh.options) if d]
    raw = bytearray(bytes(mh))
    raw[4:6] = b"\x00\x00"
    mine = in6_chksum(135, mh, bytes(raw))
    return {"msg": msg, "cksum_ok": mine == mh.cksum, "len_field": mh.len,
            "mh_len": len(bytes(mh))}


def build_ext(r):
    pkt = IPv6(src=r["src"], dst=r["dst"])
    if r.get("rh2"):
        pkt = pkt / IPv6ExtHdrRouting(type=2, segleft=1, addresses=[r["rh2"]])
    if r.get("hao"):
        pkt = pkt / IPv6ExtHdrDestOpt(options=[HAO(hoa=r["hao"])])
    pkt = pkt / Raw(bytes.fromhex(r["tail"]))
    # The innermost header names the tail's protocol (e.g. 50, ESP).
    layers = [pkt]
    while layers[-1].payload and not isinstance(layers[-1].payload, Raw):
        layers.append(layers[-1].payload)
    layers[-1].nh = r["tail_nh"]
    return bytes(pkt)


def dissect_ext(data):
    pkt = IPv6(data)
    out = {"src": pkt.src, "dst": pkt.dst,
           "plen_ok": pkt.plen == len(data) - 40,
           "chain": [], "hao": None, "rh2": None, "segleft": None}
    layer = pkt
    while True:
        out["chain"].append(layer.nh)
        nxt = layer.payload
        if isinstance(nxt, IPv6ExtHdrRouting):
            if nxt.type == 2:
                out["rh2"] = nxt.addresses[0] if nxt.addresses else None
                out["segleft"] = nxt.segleft
        elif isinstance(nxt, IPv6ExtHdrDestOpt):
            for o in nxt.options:
                if isinstance(o, HAO):
                    out["hao"] = o.hoa
        else:
            out["tail"] = bytes(nxt).hex()
            break
        layer = nxt
    return out


def handle(r):
    op = r["op"]
    if op == "build_mh":
        pkt = IPv6(src=r["src"], dst=r["dst"]) / build_mh(r["msg"])
        return {"hex": bytes(pkt).hex()}
    if op == "dissect_mh":
        return dissect_mh(IPv6(bytes.fromhex(r["hex"])))
    if op == "build_ext":
        return {"hex": build_ext(r).hex()}
    if op == "dissect_ext":
        return dissect_ext(bytes.fromhex(r["hex"]))
    raise ValueError("unknown op %r" % op)


def main():
    try:
        requests = json.load(sys.stdin)
    except ValueError as e:
        print(json.dumps({"error": "bad request: %s" % e}))
        return 2
    answers = []
    for r in requests:
        try:
            answers.append(handle(r))
        except Exception as e:  # report per request, keep going
            answers.append({"error": "%s: %s" % (type(e).__name__, e)})
    print(json.dumps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
