#!/usr/bin/env python3
"""Print the criterion results of benches/esp.rs and benches/lookup.rs as
Markdown tables, with the ratios BENCHMARKS.md quotes.

Usage: scripts/bench_table.py [CRITERION_DIR]
CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion, else target/criterion.
Times are criterion's median point estimates of the last run.
"""
import json
import os
import sys
from pathlib import Path


def load(root):
    res = {}
    for bench in root.glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        key = meta["full_id"]
        tp = meta.get("throughput") or {}
        res[key] = {
            "group": meta["group_id"],
            "function": meta.get("function_id") or "",
            "param": meta.get("value_str") or "",
            "ns": est["median"]["point_estimate"],
            "lo": est["median"]["confidence_interval"]["lower_bound"],
            "hi": est["median"]["confidence_interval"]["upper_bound"],
            "bytes": tp.get("Bytes"),
        }
    return res


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def gibps(r):
    return r["bytes"] / r["ns"] * 1e9 / 2**30 if r.get("bytes") else None


def sort_key(item):
    k, r = item
    try:
        p = int(r["param"])
    except ValueError:
        p = 0
    return (r["group"], r["function"], p)


def table(res):
    print("| benchmark | median | 95% CI of median | throughput |")
    print("|---|---:|---:|---:|")
    for k, r in sorted(res.items(), key=sort_key):
        g = gibps(r)
        tp = f"{g:.3f} GiB/s" if g is not None else ""
        ci = f"{fmt_ns(r['lo'])} .. {fmt_ns(r['hi'])}"
        print(f"| {k} | {fmt_ns(r['ns'])} | {ci} | {tp} |")


def ratio(res, a, b):
    if a in res and b in res:
        return res[a]["ns"] / res[b]["ns"]
    return None


def ratios(res):
    print()
    print("| ratio | value |")
    print("|---|---:|")

    def row(label, v, fmt="{:.2f}"):
        if v is not None:
            print(f"| {label} | {fmt.format(v)} |")

    for n in [64, 256, 512, 1400, 9000]:
        row(f"raw AEAD time ring / rustcrypto, {n} B",
            ratio(res, f"aead_raw/ring/{n}", f"aead_raw/rustcrypto/{n}"))
    for be in ["ring", "rustcrypto"]:
        for n in [64, 256, 512, 1400, 9000]:
            # throughput of the transform as a fraction of the raw AEAD
            row(f"Transform::seal throughput / raw AEAD, {be}, {n} B",
                ratio(res, f"aead_raw/{be}/{n}", f"aead_transform/{be}/{n}"),
                "{:.1%}")
    raw = {"aes-gcm-128": "rustcrypto", "aes-gcm-128+ring": "ring"}
    for t, be in raw.items():
        for n in [64, 256, 512, 1400]:
            row(f"esp_encap {t} throughput / raw AEAD ({be}), {n} B",
                ratio(res, f"aead_raw/{be}/{n}", f"esp_encap/{t}/{n}"), "{:.1%}")
            enc = res.get(f"esp_encap/{t}/{n}")
            cp = res.get(f"copy/plain/{n}")
            rw = res.get(f"aead_raw/{be}/{n}")
            if enc and cp and rw:
                row(f"  same, copy baseline subtracted, {n} B",
                    rw["ns"] / (enc["ns"] - cp["ns"]), "{:.1%}")
    for n in [64, 256, 512, 1400]:
        row(f"esp_encap aes-gcm-128 time ring / rustcrypto, {n} B",
            ratio(res, f"esp_encap/aes-gcm-128+ring/{n}", f"esp_encap/aes-gcm-128/{n}"))
        row(f"esp_decap aes-gcm-128 time ring / rustcrypto, {n} B",
            ratio(res, f"esp_decap/aes-gcm-128+ring/{n}", f"esp_decap/aes-gcm-128/{n}"))
    row("SPD index time 1k / 10", ratio(res, "spd_index/1000", "spd_index/10"))
    row("SPD index time 100k / 10", ratio(res, "spd_index/100000", "spd_index/10"))
    row("SAD by_spi time 100k / 10", ratio(res, "sad/by_spi/100000", "sad/by_spi/10"))
    row("SAD by_spi time 1M / 10", ratio(res, "sad/by_spi/1000000", "sad/by_spi/10"))
    row("SAD by_spi_get time 1M / 10",
        ratio(res, "sad/by_spi_get/1000000", "sad/by_spi_get/10"))
    for w in [64, 4096]:
        row(f"replay reordered / in order, window {w}",
            ratio(res, f"replay/reordered/{w}", f"replay/in_order/{w}"))


def main():
    if len(sys.argv) > 1:
        root = Path(sys.argv[1])
    else:
        root = Path(os.environ.get("CARGO_TARGET_DIR", "target")) / "criterion"
    res = load(root)
    if not res:
        sys.exit(f"no criterion results under {root}")
    table(res)
    ratios(res)


if __name__ == "__main__":
    main()
