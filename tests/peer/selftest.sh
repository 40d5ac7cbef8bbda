#!/bin/sh
# Self-test of the independent ESP peer (esp_peer.py): a few requests end
# to end through its JSON stdin/stdout interface, then the full matrix of
# transforms x modes x families x UDP encapsulation in selftest.py
# (scapy -> scapy and scapy -> tshark), then check_policies.py on the
# example policies. Pass --quick for a smaller matrix.
# Needs scripts/setup-test-deps.sh to have run (it is run here if the
# virtualenv is missing).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY="$REPO/.venv/bin/python"
PEER="$HERE/esp_peer.py"

if [ ! -x "$PY" ] || ! command -v tshark >/dev/null 2>&1; then
    "$REPO/scripts/setup-test-deps.sh"
fi

fail() {
    echo "selftest: FAIL: $*" >&2
    exit 1
}

# jq is not required: small Python one-liners pick fields out of answers.
field() { # field EXPR < json
    "$PY" -c "import json,sys; a=json.load(sys.stdin); print($1)"
}

# 1. AES-GCM-128, IPv6 transport mode: a Binding Update, scapy -> tshark.
BU=$("$PY" -c '
from scapy.layers.inet6 import IPv6, MIP6MH_BU
print(bytes(IPv6(src="2001:db8:1::100", dst="2001:db8:1::1") /
            MIP6MH_BU(seq=42, flags=0x68, mhtime=100)).hex())')
SA='{"spi": 4097, "transform": "aes-gcm-128",
     "enc_key": "000102030405060708090a0b0c0d0e0f10111213",
     "mode": "transport", "esn": false, "udp_encap": null}'
ENC=$(printf '{"op": "encrypt", "sa": %s, "packets": [{"seq": 1, "hex": "%s"}]}' "$SA" "$BU" | "$PY" "$PEER") ||
    fail "encrypt: $ENC"
OUT=$(echo "$ENC" | field 'a["packets"][0]["hex"]')
TS=$(printf '{"op": "tshark", "sa": %s, "fields": ["mip6.mhtype", "mip6.bu.seqnr"], "packets": [{"seq": 1, "hex": "%s"}]}' "$SA" "$OUT" | "$PY" "$PEER") ||
    fail "tshark: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["icv_good"]')" = True ] || fail "tshark ICV: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["decrypted_proto"]')" = 135 ] || fail "tshark next header: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["fields"]["mip6.mhtype"]')" = "['5']" ] || fail "tshark MH type: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["fields"]["mip6.bu.seqnr"]')" = "['42']" ] || fail "tshark BU seq: $TS"
echo "ok   cli: aes-gcm-128 transport BU, scapy encrypt -> tshark icv_good, MH type 5, seq 42"

# 2. The same packet back through scapy.
DEC=$(printf '{"op": "decrypt", "sa": %s, "packets": [{"seq": 1, "hex": "%s"}]}' "$SA" "$OUT" | "$PY" "$PEER") ||
    fail "decrypt: $DEC"
[ "$(echo "$DEC" | field 'a["packets"][0]["hex"]')" = "$BU" ] || fail "decrypt: $DEC"
echo "ok   cli: scapy encrypt -> scapy decrypt gives the original packet"

# 3. AES-CBC + HMAC-SHA-256-128, IPv4 tunnel over UDP 4500, IPv6 inner.
SA2='{"spi": 8193, "transform": "aes-cbc-128-hmac-sha256",
      "enc_key": "00112233445566778899aabbccddeeff",
      "auth_key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
      "mode": "tunnel", "tunnel_src": "203.0.113.1", "tunnel_dst": "203.0.113.2",
      "esn": false, "udp_encap": {"sport": 4500, "dport": 4500}}'
ENC=$(printf '{"op": "encrypt", "sa": %s, "packets": [{"seq": 7, "hex": "%s"}]}' "$SA2" "$BU" | "$PY" "$PEER") ||
    fail "encrypt: $ENC"
OUT=$(echo "$ENC" | field 'a["packets"][0]["hex"]')
TS=$(printf '{"op": "tshark", "sa": %s, "packets": [{"seq": 7, "hex": "%s"}]}' "$SA2" "$OUT" | "$PY" "$PEER") ||
    fail "tshark: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["icv_good"]')" = True ] || fail "tshark ICV: $TS"
[ "$(echo "$TS" | field 'a["packets"][0]["decrypted_proto"]')" = 41 ] || fail "tshark next header: $TS"
echo "ok   cli: aes-cbc-128-hmac-sha256 v6-in-v4 tunnel over UDP 4500 -> tshark icv_good"

# 4. tshark can not check ChaCha20-Poly1305: an explicit "unsupported".
SA3='{"spi": 12289, "transform": "chacha20-poly1305",
      "enc_key": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223",
      "mode": "transport", "esn": false, "udp_encap": null}'
TS=$(printf '{"op": "tshark", "sa": %s, "packets": []}' "$SA3" | "$PY" "$PEER") || fail "tshark: $TS"
echo "$TS" | grep -q '"unsupported"' || fail "expected unsupported: $TS"
echo "ok   cli: tshark answers unsupported for chacha20-poly1305"

# 5. A bad request: exit status 2 and a JSON error.
if ERR=$(echo '{"op": "encrypt", "sa": {"spi": 1, "transform": "rot13"}}' | "$PY" "$PEER"); then
    fail "bad request accepted: $ERR"
fi
echo "$ERR" | grep -q '"error"' || fail "no JSON error: $ERR"
echo "ok   cli: a bad request gives exit status 2 and {\"error\": ...}"

"$PY" "$HERE/selftest.py" "$@"

# The example policies: pairs agree, and their SAs interoperate via the peer.
"$PY" "$HERE/check_policies.py"
