#!/usr/bin/env python3
"""Independent ESP peer for bitsgw's integration tests.

Run as ``.venv/bin/python tests/peer/esp_peer.py`` (the virtualenv made by
scripts/setup-test-deps.sh) with one JSON request on stdin; it prints one
JSON answer on stdout. The ESP work is done by scapy (>= 2.6) and by tshark,
two implementations written outside this project.

Request::

    {"op": "encrypt" | "decrypt" | "tshark",
     "sa": {"spi": 4097, "transform": "aes-gcm-128",
            "enc_key": "hex", "auth_key": "hex",
            "mode": "transport" | "tunnel",
            "tunnel_src": "2001:db8::1", "tunnel_dst": "2001:db8::2",
            "esn": false,
            "udp_encap": null | {"sport": 4500, "dport": 4500}},
     "packets": [{"seq": 1, "hex": "...", "iv": "hex (optional, encrypt)"}],
     "fields": ["mip6.mhtype", ...]          (optional, tshark only)}

Hex strings may carry a "0x" prefix. ``seq`` is the full 64-bit sequence
number; without ESN it must fit in 32 bits.

Answers:
- encrypt: {"packets": [{"hex": "<whole outer IP packet>"}]}
- decrypt: {"packets": [{"ok": true, "hex": "<IP packet>", "spi": N,
  "esp_seq": N, "next_header": N, "pad_len": N, "padding_ok": bool}
  | {"ok": false, "error": "integrity" | "other: ..."}]}.
  Tunnel mode gives the inner packet, transport mode the packet rebuilt
  without ESP (and without the UDP header for UDP encapsulation).
  padding_ok says whether the padding is RFC 4303's default 1, 2, 3, ...
- tshark: optional "more_sas": [<sa>, ...] (further SAs for the same
  capture, so packets of several SAs go through one tshark run) and
  "decode_as": ["udp.port==4191,ipv6", ...] (tshark -d arguments).
  Answer {"packets": [{"icv_good": true|false|null,
  "decrypted_proto": <ESP next header> | null,
  "fields": {"<field>": ["occurrence", ...], ...}}]}
  or {"unsupported": "reason"} when tshark 4.0 can not check this SA at
  all; the caller skips that combination and says so.
- a JSON list of requests: a list of answers, in order.
- a malformed request or an unexpected failure: {"error": "..."} on stdout
  and exit status 2.

Transforms (name: scapy crypt_algo / auth_algo; key layout):
- aes-gcm-128, aes-gcm-256: "AES-GCM" (16-byte ICV); enc_key = 16|32-byte
  key + 4-byte salt.
- chacha20-poly1305: "CHACHA20-POLY1305" (RFC 7634); enc_key = 32 + 4 salt.
- aes-gmac-128, aes-gmac-256: "AES-NULL-GMAC" (RFC 4543 ENCR_NULL_AUTH_AES_
  GMAC: payload in clear, 8-byte IV on the wire, GMAC over SPI|seq|IV|
  payload); enc_key = 16|32 + 4 salt.
- aes-cbc-128-hmac-sha256, aes-cbc-256-hmac-sha256: "AES-CBC" with
  "SHA2-256-128"; enc_key 16|32 bytes, auth_key 32 bytes, ICV 16.
- null-hmac-sha256: "NULL" with "SHA2-256-128"; no enc_key, auth_key 32.

Facts found on Debian 12 (scapy 2.8.0 from PyPI, tshark 4.0.17):
- tshark 4.0 ESP SA table (uat:esp_sa) names, exactly:
  encryption "NULL", "AES-GCM with 16 octet ICV [RFC4106]" (key+salt as
  one hex string), "AES-CBC [RFC3602]" (key length picks AES-128/192/256),
  also "TripleDES-CBC [RFC2451]", "AES-CTR [RFC3686]", "DES-CBC
  [RFC2405]", "CAST5-CBC [RFC2144]", "BLOWFISH-CBC [RFC2451]",
  "TWOFISH-CBC", "AES-GCM with 8|12 octet ICV [RFC4106]";
  authentication "NULL", "HMAC-SHA-256-128 [RFC4868]", "HMAC-SHA-1-96
  [RFC2404]", "HMAC-SHA-384-192 [RFC4868]", "HMAC-SHA-512-256 [RFC4868]",
  "HMAC-MD5-96 [RFC2403]", "MAC-RIPEMD-160-96 [RFC2857]",
  "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]",
  "ANY 64|96|128|192|256 bit authentication [no checking]".
  The protocol column takes only "IPv4" or "IPv6" ("Any" and "*" are
  refused); addresses take "*". Names tried and refused as ESP encryption
  or authentication: "AES-GMAC", "AES-128-GMAC", "AUTH_AES_128_GMAC",
  "ENCR_NULL_AUTH_AES_GMAC", "ChaCha20/Poly1305" (those strings exist in
  libwireshark for IKEv2 and COSE only).
- tshark 4.0 has NO ChaCha20-Poly1305 and NO AES-GMAC (ENCR_NULL_AUTH_AES_
  GMAC) for ESP, and no ESN column: ESN traffic is decrypted but its ICV
  shows bad. Those SAs get {"unsupported": ...}.
- tshark recognises UDP encapsulation on port 4500 only; other ports need
  "-d udp.port==N,udpencap", which this script adds.
- tshark still decrypts and dissects a packet whose ICV is bad and sets
  esp.icv_bad; only esp.icv_good == 1 proves the ICV.
- tshark adds the ESP trailer fields (esp.pad_len, esp.protocol,
  esp.icv_good/bad) after dissecting the decrypted payload; when that
  dissection throws (e.g. junk in UDP to port 53 is "[Malformed Packet:
  DNS]") they are missing and icv_good comes back null even for a good
  packet. Use well-formed inner packets (or ports without a dissector);
  the answer's _ws.malformed field shows when this happened.
- ESN verified: with ESN on, tshark 4.0 decrypts (GCM and CBC alike) but
  reports esp.icv_bad, for low and high sequence numbers alike.
- esp.decrypted_data is the whole plaintext (payload, padding, pad
  length, next header) without IV and ICV, for NULL encryption too; the
  self-test compares it with scapy's plaintext.
- The SA is given to tshark twice, for "IPv4" and "IPv6", with "*" for
  source and destination, so it is found by SPI and outer family alone
  (with a Home Address option Wireshark would match the home address,
  not the IPv6 source).
- scapy chooses a random IV per packet (os.urandom, 8 bytes for GCM, GMAC
  and ChaCha20, 16 for CBC, none for NULL); a request may fix it with
  "iv". Its padding is RFC 4303's default 1, 2, 3, ... and the minimum
  that aligns to the cipher block and to 4 bytes, so with a fixed IV its
  output can be compared byte for byte.
- scapy splits the 64-bit sequence number: SecurityAssociation(seq_num=low
  32 bits, esn_en=True, esn=high 32 bits). Its GCM/GMAC/ChaCha AAD is
  SPI|seq_hi|seq_lo with ESN, and HMAC appends seq_hi (so in 2.8.0;
  Debian's 2.5 left it out of the ICV and wrote NAT-T UDP length 8).
  seq_num=0 / esn=0 fall back to the SA's values, so this script builds one
  SA per packet with those values set.
- scapy binds ESP to UDP port 4500 (either side) and parses every UDP 4500
  payload as ESP (a payload starting with four zero bytes becomes NON_ESP,
  i.e. IKE); on other ports this script re-parses the UDP payload as ESP.
- AES-GMAC and ChaCha20-Poly1305 are only checked scapy against scapy
  here (tshark 4.0 lacks both); scapy does them with the cryptography
  package's AESGCM (GMAC = empty plaintext, AAD SPI|seq|IV|payload) and
  ChaCha20Poly1305, nonce = salt|IV.
- scapy's decrypt ignores the tunnel header's addresses (any outer header
  is removed) and does not check the padding; the padding check here is
  ours.
"""

import ipaddress
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import (ESP, NON_ESP, NAT_KEEPALIVE,
                                    IPSecIntegrityError,
                                    SecurityAssociation)
except ImportError as e:  # pragma: no cover
    print(json.dumps({"error": "scapy not importable (%s); run "
                      "scripts/setup-test-deps.sh and use .venv/bin/python"
                      % e}))
    sys.exit(2)


class RequestError(Exception):
    pass


# name -> scapy crypt algo, enc_key length(s) incl. salt, scapy auth algo,
# auth_key length, tshark encryption name, tshark authentication name.
TS_GCM16 = "AES-GCM with 16 octet ICV [RFC4106]"
TS_CBC = "AES-CBC [RFC3602]"
TS_SHA256 = "HMAC-SHA-256-128 [RFC4868]"
TRANSFORMS = {
    "aes-gcm-128": ("AES-GCM", 20, None, 0, TS_GCM16, "NULL"),
    "aes-gcm-256": ("AES-GCM", 36, None, 0, TS_GCM16, "NULL"),
    "chacha20-poly1305": ("CHACHA20-POLY1305", 36, None, 0, None, None),
    "aes-gmac-128": ("AES-NULL-GMAC", 20, None, 0, None, None),
    "aes-gmac-256": ("AES-NULL-GMAC", 36, None, 0, None, None),
    "aes-cbc-128-hmac-sha256": ("AES-CBC", 16, "SHA2-256-128", 32,
                                TS_CBC, TS_SHA256),
    "aes-cbc-256-hmac-sha256": ("AES-CBC", 32, "SHA2-256-128", 32,
                                TS_CBC, TS_SHA256),
    "null-hmac-sha256": ("NULL", 0, "SHA2-256-128", 32, "NULL", TS_SHA256),
}

TSHARK_UNSUPPORTED = {
    "chacha20-poly1305": "tshark 4.0 has no ChaCha20-Poly1305 for ESP",
    "aes-gmac-128": "tshark 4.0 has no AES-GMAC (ENCR_NULL_AUTH_AES_GMAC) "
                    "for ESP",
    "aes-gmac-256": "tshark 4.0 has no AES-GMAC (ENCR_NULL_AUTH_AES_GMAC) "
                    "for ESP",
}

DEFAULT_FIELDS = [
    "frame.protocols", "esp.spi", "esp.sequence", "esp.pad_len",
    "esp.protocol", "esp.icv_good", "esp.icv_bad",
    "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "udp.srcport", "udp.dstport",
    "_ws.malformed",
]


def unhex(s, what):
    if s is None:
        return b""
    if not isinstance(s, str):
        raise RequestError("%s must be a hex string" % what)
    s = s.strip()
    if s[:2].lower() == "0x":
        s = s[2:]
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise RequestError("%s is not valid hex" % what)


class Sa:
    def __init__(self, d):
        if not isinstance(d, dict):
            raise RequestError("sa must be an object")
        self.spi = d.get("spi")
        if isinstance(self.spi, str):
            self.spi = int(self.spi, 0)
        if not isinstance(self.spi, int) or not 0 < self.spi <= 0xffffffff:
            raise RequestError("sa.spi must be a 32-bit number > 0")
        self.transform = d.get("transform")
        if self.transform not in TRANSFORMS:
            raise RequestError("unknown transform %r (known: %s)" % (
                self.transform, ", ".join(sorted(TRANSFORMS))))
        (self.crypt, enc_len, self.auth, auth_len, self.ts_enc,
         self.ts_auth) = TRANSFORMS[self.transform]
        self.enc_key = unhex(d.get("enc_key"), "sa.enc_key")
        self.auth_key = unhex(d.get("auth_key"), "sa.auth_key")
        if len(self.enc_key) != enc_len:
            raise RequestError("%s needs a %d-byte enc_key, got %d" % (
                self.transform, enc_len, len(self.enc_key)))
        if len(self.auth_key) != auth_len:
            raise RequestError("%s needs a %d-byte auth_key, got %d" % (
                self.transform, auth_len, len(self.auth_key)))
        self.mode = d.get("mode", "transport")
        if self.mode not in ("transport", "tunnel"):
            raise RequestError("sa.mode must be transport or tunnel")
        self.tunnel_src = self.tunnel_dst = None
        if self.mode == "tunnel":
            try:
                self.tunnel_src = ipaddress.ip_address(d["tunnel_src"])
                self.tunnel_dst = ipaddress.ip_address(d["tunnel_dst"])
            except (KeyError, ValueError) as e:
                raise RequestError("tunnel mode needs tunnel_src and "
                                   "tunnel_dst addresses (%s)" % e)
            if self.tunnel_src.version != self.tunnel_dst.version:
                raise RequestError("tunnel_src and tunnel_dst differ in "
                                   "address family")
        self.esn = bool(d.get("esn", False))
        ue = d.get("udp_encap")
        self.udp_encap = None
        if ue is not None:
            try:
                self.udp_encap = (int(ue.get("sport", 4500)),
                                  int(ue.get("dport", 4500)))
            except (AttributeError, TypeError, ValueError):
                raise RequestError("sa.udp_encap must be null or "
                                   "{\"sport\": N, \"dport\": N}")

    def tunnel_header(self):
        if self.mode != "tunnel":
            return None
        if self.tunnel_src.version == 4:
            return IP(src=str(self.tunnel_src), dst=str(self.tunnel_dst))
        return IPv6(src=str(self.tunnel_src), dst=str(self.tunnel_dst))

    def scapy_sa(self, seq):
        if seq < 0 or seq > 0xffffffffffffffff:
            raise RequestError("seq %d out of range" % seq)
        if not self.esn and seq > 0xffffffff:
            raise RequestError("seq %d needs ESN" % seq)
        nat_t = None
        if self.udp_encap:
            nat_t = UDP(sport=self.udp_encap[0], dport=self.udp_encap[1])
        kw = {}
        if self.crypt != "NULL":
            kw["crypt_key"] = self.enc_key
        if self.auth:
            kw["auth_algo"] = self.auth
            kw["auth_key"] = self.auth_key
        return SecurityAssociation(
            ESP, spi=self.spi, seq_num=seq & 0xffffffff,
            crypt_algo=self.crypt, tunnel_header=self.tunnel_header(),
            nat_t_header=nat_t, esn_en=self.esn, esn=seq >> 32, **kw)


def parse_ip(data):
    if not data:
        raise RequestError("empty packet")
    v = data[0] >> 4
    if v == 4:
        return IP(data)
    if v == 6:
        return IPv6(data)
    raise RequestError("not an IP packet (version %d)" % v)


def packet_seq(p):
    seq = p.get("seq", 0)
    if isinstance(seq, str):
        seq = int(seq, 0)
    if not isinstance(seq, int):
        raise RequestError("packet seq must be a number")
    return seq


def op_encrypt(sa, packets):
    out = []
    for i, p in enumerate(packets):
        pkt = parse_ip(unhex(p.get("hex"), "packets[%d].hex" % i))
        seq = packet_seq(p)
        iv = unhex(p["iv"], "packets[%d].iv" % i) if "iv" in p else None
        s = sa.scapy_sa(seq)
        try:
            enc = s.encrypt(pkt, seq_num=seq & 0xffffffff, iv=iv,
                            esn_en=sa.esn, esn=seq >> 32)
        except TypeError as e:
            raise RequestError("packets[%d]: %s" % (i, e))
        out.append({"hex": bytes(enc).hex()})
    return {"packets": out}


def find_esp(pkt, sa):
    """Return pkt with an ESP layer, re-parsing UDP payloads on ports
    scapy does not bind to ESP. Raises ValueError with a reason."""
    udp = pkt.getlayer(UDP)
    if sa.udp_encap is None:
        if udp is not None:
            raise ValueError("UDP-encapsulated packet for an SA without "
                             "udp_encap")
        if not pkt.haslayer(ESP):
            raise ValueError("no ESP header")
        return pkt
    if udp is None:
        raise ValueError("SA has udp_encap but the packet has no UDP header")
    if udp.haslayer(NON_ESP):
        raise ValueError("non-ESP marker (IKE) on the UDP encapsulation port")
    if udp.haslayer(NAT_KEEPALIVE):
        raise ValueError("NAT keepalive, not ESP")
    if not udp.haslayer(ESP):
        payload = bytes(udp.payload)
        if len(payload) >= 4 and payload[:4] == b"\0\0\0\0":
            raise ValueError("non-ESP marker (IKE) on the UDP "
                             "encapsulation port")
        if len(payload) < 8:
            raise ValueError("UDP payload too short for ESP")
        udp.remove_payload()
        udp.add_payload(ESP(payload))
    return pkt


def op_decrypt(sa, packets):
    out = []
    for i, p in enumerate(packets):
        data = unhex(p.get("hex"), "packets[%d].hex" % i)
        seq = packet_seq(p)
        try:
            pkt = find_esp(parse_ip(data), sa)
            esp = pkt[ESP]
            spi, esp_seq = esp.spi, esp.seq
            esp_copy = esp.copy()
            s = sa.scapy_sa(seq)
            dec = s.decrypt(pkt, esn_en=sa.esn, esn=seq >> 32)
            # Once more on a copy, to see the padding scapy strips.
            plain = s.crypt_algo.decrypt(
                s, esp_copy, s.crypt_key,
                s.crypt_icv_size or s.crypt_algo.icv_size or
                s.auth_algo.icv_size, esn_en=sa.esn, esn=seq >> 32)
        except IPSecIntegrityError:
            out.append({"ok": False, "error": "integrity"})
            continue
        except (TypeError, ValueError, IndexError, struct.error) as e:
            out.append({"ok": False, "error": "other: %s" % e})
            continue
        padding = bytes(plain.padding)
        out.append({
            "ok": True, "hex": bytes(dec).hex(), "spi": spi,
            "esp_seq": esp_seq, "next_header": plain.nh,
            "pad_len": plain.padlen,
            "padding_ok": padding == bytes(range(1, len(padding) + 1)),
        })
    return {"packets": out}


def write_raw_pcap(path, packets):
    """pcap with LINKTYPE_RAW (101): each record is a bare IPv4/IPv6
    packet."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 101))
        for i, data in enumerate(packets):
            f.write(struct.pack("<IIII", 1700000000 + i, 0, len(data),
                                len(data)))
            f.write(data)


def tshark_unsupported(sa):
    """Why tshark 4.0 can not check this SA, or None."""
    if sa.transform in TSHARK_UNSUPPORTED:
        return TSHARK_UNSUPPORTED[sa.transform]
    if sa.esn:
        return ("tshark 4.0 has no ESN support in its ESP SA table (the ICV "
                "would always show bad)")
    return None


def tshark_uats(sa):
    key = "0x" + sa.enc_key.hex() if sa.enc_key else ""
    akey = "0x" + sa.auth_key.hex() if sa.auth_key else ""
    return ['"%s","*","*","0x%08x","%s","%s","%s","%s"' % (
        fam, sa.spi, sa.ts_enc, key, sa.ts_auth, akey)
        for fam in ("IPv4", "IPv6")]


def op_tshark(sa, packets, extra_fields, more_sas=(), decode_as=()):
    """tshark over one capture of `packets`, with the ESP SA table holding
    `sa` and `more_sas`. With more_sas, an SA tshark can not check is left
    out of the table and named in "unsupported_sas" (its packets come back
    with icv_good null); alone, it gives {"unsupported": reason}."""
    why = tshark_unsupported(sa)
    if why and not more_sas:
        return {"unsupported": why}
    unsupported = {}
    uats = []
    for one in [sa] + list(more_sas):
        why = tshark_unsupported(one)
        if why:
            unsupported["0x%08x" % one.spi] = why
        else:
            uats += tshark_uats(one)
    for d in decode_as:
        if not isinstance(d, str) or "==" not in d or "," not in d:
            raise RequestError("decode_as entries look like "
                               "\"udp.port==4191,ipv6\"")
    fields = list(DEFAULT_FIELDS)
    for f in extra_fields:
        if not isinstance(f, str) or not f:
            raise RequestError("fields must be a list of field names")
        if f not in fields:
            fields.append(f)
    datas = [unhex(p.get("hex"), "packets[%d].hex" % i)
             for i, p in enumerate(packets)]
    with tempfile.TemporaryDirectory(prefix="esp_peer.") as tmp:
        pcap = os.path.join(tmp, "in.pcap")
        write_raw_pcap(pcap, datas)
        cmd = ["tshark", "-n", "-r", pcap,
               "-o", "esp.enable_encryption_decode:TRUE",
               "-o", "esp.enable_authentication_check:TRUE",
               ]
        for uat in uats:
            cmd += ["-o", "uat:esp_sa:" + uat]
        if sa.udp_encap:
            for port in sorted(set(sa.udp_encap)):
                if port != 4500:
                    cmd += ["-d", "udp.port==%d,udpencap" % port]
        for d in decode_as:
            cmd += ["-d", d]
        cmd += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
                "-E", "aggregator=\x1f", "-E", "quote=n"]
        for f in fields:
            cmd += ["-e", f]
        # No personal or global preferences beyond ours.
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=tmp)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               env=env, timeout=60)
        except FileNotFoundError:
            raise RequestError("tshark not found; run "
                               "scripts/setup-test-deps.sh")
        if r.returncode != 0:
            raise RequestError("tshark failed (%d): %s" % (
                r.returncode, r.stderr.strip()))
    lines = r.stdout.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(datas):
        raise RequestError("tshark printed %d lines for %d packets: %s" % (
            len(lines), len(datas), r.stderr.strip()))
    out = []
    for line in lines:
        cols = line.split("\t")
        cols += [""] * (len(fields) - len(cols))
        fv = {f: (c.split("\x1f") if c else []) for f, c in zip(fields, cols)}
        good = fv["esp.icv_good"]
        bad = fv["esp.icv_bad"]
        if "1" in bad or "True" in bad:
            icv = False
        elif "1" in good or "True" in good:
            icv = True
        else:
            icv = None
        proto = fv["esp.protocol"]
        out.append({"icv_good": icv,
                    "decrypted_proto": int(proto[0], 0) if proto else None,
                    "fields": fv})
    ans = {"packets": out}
    if more_sas:
        ans["unsupported_sas"] = unsupported
    return ans


def handle(req):
    """Answer one decoded request; returns (answer, exit status)."""
    try:
        if not isinstance(req, dict):
            raise RequestError("request must be a JSON object")
        op = req.get("op")
        sa = Sa(req.get("sa"))
        packets = req.get("packets", [])
        if not isinstance(packets, list) or \
                not all(isinstance(p, dict) for p in packets):
            raise RequestError("packets must be a list of objects")
        if op == "encrypt":
            return op_encrypt(sa, packets), 0
        if op == "decrypt":
            return op_decrypt(sa, packets), 0
        if op == "tshark":
            more = req.get("more_sas", [])
            decode_as = req.get("decode_as", [])
            if not isinstance(more, list) or not isinstance(decode_as, list):
                raise RequestError("more_sas and decode_as must be lists")
            return op_tshark(sa, packets, req.get("fields", []),
                             [Sa(m) for m in more], decode_as), 0
        raise RequestError("op must be encrypt, decrypt or tshark")
    except (RequestError, ValueError, KeyError) as e:
        return {"error": str(e)}, 2


def main():
    try:
        req = json.load(sys.stdin)
    except ValueError as e:
        print(json.dumps({"error": "request is not JSON: %s" % e}))
        return 2
    # A list of requests is a batch: one answer per request, in order, so
    # a test matrix pays for starting Python and scapy once.
    batch = isinstance(req, list)
    answers, worst = [], 0
    for one in (req if batch else [req]):
        try:
            ans, status = handle(one)
        except Exception as e:  # a bug here or in scapy: say so, in JSON
            ans, status = {"error": "internal: %s: %s" % (
                type(e).__name__, e)}, 2
        answers.append(ans)
        worst = max(worst, status)
    print(json.dumps(answers if batch else answers[0]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
