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
- "encrypt", "decrypt", "tshark": esp_peer.py's requests (see there),
  answered by esp_peer.py's code, so one process serves a test that needs
  ESP, tshark and Mobility Headers.
- {"op": "open", "hex": packet off the wire, "sa": esp_peer SA} ->
  {"outer4": {"src", "dst", "sport", "dport", "udp_cksum_ok"} | null,
  "ipv6": dissect_ext of the IPv6 packet that carries the ESP header,
  "esp": esp_peer's decrypt answer (spi, esp_seq, padding_ok, ...),
  "inner": {"src", "dst"} of the decrypted packet (tunnel mode: the inner
  header), "mh": dissect_mh's answer plus "cksum_rfc_ok" | null,
  "icmpv6": {"type", "id", "cksum_ok", "m", "o", "prefixes": [{"prefix",
  "plen", "l", "a", "r", "valid", "preferred"}]} | null}.
  DSMIPv6's UDP encapsulation (RFC 5555 4.1: IPv4 / UDP port 4191 / IPv6)
  is taken apart by scapy (UDP 4191 is bound to IPv6 here).
- {"op": "seal_bu", "home", "ha", "msg", "sa", "seq", "coa6": addr|null,
  "outer4": {"src", "dst", "sport", "dport"} | null, "bad_cksum": bool}
  -> {"hex"}: scapy builds IPv6(home -> ha) / MH(msg), encrypts it with the
  transport-mode SA at ESP sequence number seq, and then, as a mobile node
  away from home does (RFC 3776 3.1; RFC 5555 4.1), either puts the
  care-of address in the source and the home address in a Home Address
  option in front of ESP (coa6), or carries the packet in IPv4 / UDP
  (outer4). bad_cksum flips a bit of the MH checksum before encryption.
- failures: {"error": "..."} in place of the answer.

With the argument --stream, each line on stdin is one such list and each
answer list is printed on one line as soon as it is ready, so a test can
send what it learnt from one answer in its next request without starting
python again.

The Mobility Header checksum (RFC 6275 6.1.1) is over a pseudo-header with
the home address (from a Home Address option) as source and the final
destination (from a type 2 routing header) as destination. Scapy's own
computation (dissect_mh's cksum_ok) takes the HAO only when the
Destination Options header holds nothing else; a Home Address option
aligned to 8n+6 (RFC 6275 6.3) has a PadN in front of it, and then scapy
gets it wrong. "cksum_rfc_ok" is the RFC's computation, done here with
scapy's checksum().
"""

import json
import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import esp_peer  # noqa: E402

from scapy.all import IP, IPField, Raw  # noqa: F401,E402
from scapy.layers.inet import UDP  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
    ICMPv6MPAdv,
    ICMPv6MPSol,
    ICMPv6NDOptPrefixInfo,
)
from scapy.layers.ipsec import ESP  # noqa: E402
from scapy.packet import bind_layers  # noqa: E402
from scapy.utils import checksum  # noqa: E402
from scapy.fields import BitField, ByteField, IntField, ShortField  # noqa: E402
from scapy.layers.inet6 import (  # noqa: E402
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

# RFC 5555 4.1: IPv6 in UDP to or from port 4191.
DSMIP_UDP_PORT = 4191
bind_layers(UDP, IPv6, dport=DSMIP_UDP_PORT)
bind_layers(UDP, IPv6, sport=DSMIP_UDP_PORT)

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


def mh_cksum_rfc(pkt):
    """RFC 6275 6.1.1: whether the MH checksum of pkt (IPv6 / ext headers
    / MH) verifies against home address (HAO) and final destination
    (type 2 routing header)."""
    src, dst = pkt.src, pkt.dst
    layer = pkt.payload
    mh = None
    while layer is not None and not isinstance(layer, Raw):
        if isinstance(layer, IPv6ExtHdrDestOpt):
            for o in layer.options:
                if isinstance(o, HAO):
                    src = o.hoa
        elif isinstance(layer, IPv6ExtHdrRouting):
            if layer.type == 2 and layer.segleft and layer.addresses:
                dst = layer.addresses[-1]
        elif isinstance(layer, tuple(MH_CLASSES.values())):
            mh = layer
            break
        layer = layer.payload if layer.payload else None
    if mh is None:
        return None
    raw = bytes(mh)
    ph = (socket.inet_pton(socket.AF_INET6, src) +
          socket.inet_pton(socket.AF_INET6, dst) +
          struct.pack("!I", len(raw)) + b"\0\0\0\x87")
    return checksum(ph + raw) == 0


def dissect_icmpv6(pkt):
    m = pkt.getlayer(ICMPv6MPSol) or pkt.getlayer(ICMPv6MPAdv)
    if m is None:
        return None
    c = m.copy()
    c.cksum = None
    mine = bytes(c.__class__(bytes(IPv6(src=pkt.src, dst=pkt.dst) / c)[40:]))
    out = {"type": m.type, "code": m.code, "id": m.id,
           "cksum_ok": struct.unpack("!H", mine[2:4])[0] == m.cksum}
    if isinstance(m, ICMPv6MPAdv):
        out.update(m=bool(m.flags & 2), o=bool(m.flags & 1), prefixes=[])
        o = m.payload
        while o is not None and isinstance(o, ICMPv6NDOptPrefixInfo):
            out["prefixes"].append({
                "prefix": o.prefix, "plen": o.prefixlen, "l": bool(o.L),
                "a": bool(o.A), "r": bool(o.R), "valid": o.validlifetime,
                "preferred": o.preferredlifetime})
            o = o.payload if o.payload else None
    return out


def op_open(r):
    data = bytes.fromhex(r["hex"])
    sa = esp_peer.Sa(r["sa"])
    out = {"outer4": None}
    if data[0] >> 4 == 4:
        pkt = IP(data)
        udp = pkt.getlayer(UDP)
        if udp is None or not udp.haslayer(IPv6):
            raise ValueError("IPv4 packet without UDP %d / IPv6: %r" % (
                DSMIP_UDP_PORT, pkt))
        c = pkt.copy()
        c[UDP].chksum = None
        want = IP(bytes(c))[UDP].chksum
        out["outer4"] = {"src": pkt.src, "dst": pkt.dst, "sport": udp.sport,
                         "dport": udp.dport, "udp_cksum": udp.chksum,
                         "udp_cksum_ok": udp.chksum in (0, want),
                         "udp_len_ok": udp.len == len(bytes(udp))}
        data = bytes(udp[IPv6])
    out["ipv6"] = dissect_ext(data)
    v6 = IPv6(data)
    if not v6.haslayer(ESP):
        raise ValueError("no ESP header: %r" % v6)
    dec = esp_peer.op_decrypt(sa, [{"seq": v6[ESP].seq,
                                    "hex": data.hex()}])["packets"][0]
    out["esp"] = dec
    if not dec.get("ok"):
        return out
    inner = IPv6(bytes.fromhex(dec["hex"]))
    out["inner"] = {"src": inner.src, "dst": inner.dst}
    out["mh"] = None
    if any(inner.haslayer(c) for c in MH_CLASSES.values()):
        out["mh"] = dissect_mh(inner)
        out["mh"]["cksum_rfc_ok"] = mh_cksum_rfc(inner)
    out["icmpv6"] = dissect_icmpv6(inner)
    return out


def op_seal_bu(r):
    sa = esp_peer.Sa(r["sa"])
    if sa.mode != "transport":
        raise ValueError("a Binding Update SA is transport mode")
    clear = IPv6(src=r["home"], dst=r["ha"]) / build_mh(r["msg"])
    raw = bytearray(bytes(clear))
    if r.get("bad_cksum"):
        raw[40 + 4] ^= 0x01
    enc = esp_peer.op_encrypt(sa, [{"seq": r["seq"],
                                    "hex": bytes(raw).hex()}])
    sealed = IPv6(bytes.fromhex(enc["packets"][0]["hex"]))
    esp = bytes(sealed[ESP])
    if r.get("coa6"):
        pkt = (IPv6(src=r["coa6"], dst=r["ha"]) /
               IPv6ExtHdrDestOpt(nh=50, options=[HAO(hoa=r["home"])]) /
               Raw(esp))
    else:
        pkt = IPv6(src=r["home"], dst=r["ha"], nh=50) / Raw(esp)
    o = r.get("outer4")
    if o:
        pkt = (IP(src=o["src"], dst=o["dst"]) /
               UDP(sport=o["sport"], dport=o["dport"]) / pkt)
    return {"hex": bytes(pkt).hex()}


def handle(r):
    op = r["op"]
    if op in ("encrypt", "decrypt", "tshark"):
        ans, _ = esp_peer.handle(r)
        return ans
    if op == "open":
        return op_open(r)
    if op == "seal_bu":
        return op_seal_bu(r)
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


def answer(requests):
    answers = []
    for r in requests:
        try:
            answers.append(handle(r))
        except Exception as e:  # report per request, keep going
            answers.append({"error": "%s: %s" % (type(e).__name__, e)})
    return answers


def main():
    if "--stream" in sys.argv[1:]:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                requests = json.loads(line)
            except ValueError as e:
                print(json.dumps({"error": "bad request: %s" % e}),
                      flush=True)
                return 2
            print(json.dumps(answer(requests)), flush=True)
        return 0
    try:
        requests = json.load(sys.stdin)
    except ValueError as e:
        print(json.dumps({"error": "bad request: %s" % e}))
        return 2
    print(json.dumps(answer(requests)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
