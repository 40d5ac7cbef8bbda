#!/usr/bin/env python3
"""The goal table of BENCHMARKS.md from one sitting of scripts/bench_goals.sh.

Usage: scripts/bench_goals.py OUT_DIR CRITERION_DIR
Every ratio is taken between figures of the same sitting.
"""
import json
import re
import sys
from pathlib import Path


def criterion(root):
    res = {}
    for bench in Path(root).glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        res[meta["full_id"]] = est["median"]["point_estimate"]
    return res


def rows(path):
    return json.loads(Path(path).read_text())["results"]


def pick(results, **want):
    for r in results:
        if all(str(r.get(k)) == str(v) for k, v in want.items()):
            return r
    raise KeyError(f"no row with {want}")


def main():
    out, crit_dir = Path(sys.argv[1]), sys.argv[2]
    c = criterion(crit_dir)
    table = []

    def goal(name, measured, ok, limit=""):
        table.append((name, measured, "met" if ok else "missed", limit))

    # 1. The fastest AEAD: raw ceilings of both backends.
    raw = {(b, n): c.get(f"aead_raw/{b}/{n}") for b in ("ring", "rustcrypto") for n in (64, 1400)}
    parts = ", ".join(f"{b} {n} B {ns:.1f} ns" for (b, n), ns in raw.items() if ns)
    fastest = {n: min(v for (b, m), v in raw.items() if m == n and v) for n in (64, 1400)}
    rtc = rows(out / "rtc.json")
    backend = pick(rtc, size="64", pipeline="run-to-completion")["backend"]
    goal("the fastest AEAD on the machine (`auto`)", f"{parts}; `auto` chose {backend}",
         all(pick(rtc, size=s, pipeline="run-to-completion")["ceiling"]["implementation"]
             == pick(rtc, size=s, pipeline="run-to-completion")["backend"] for s in ("64", "1400")))

    # 2. The pipeline against the fastest raw AEAD of the same run.
    for size, want in (("64", 0.5), ("1400", 0.9)):
        r = pick(rtc, size=size, pipeline="run-to-completion")
        goal(f"`bitsgw bench` run to completion, encrypt {size} B >= {want} of raw",
             f"{r['mpps']:.2f} Mpps, {r['gbps']:.2f} Gbit/s: **{r['ratio_to_ceiling']:.2f}** "
             f"(ceiling {r['ceiling']['implementation']} {r['ceiling']['ns_per_packet']:.0f} ns)",
             r["ratio_to_ceiling"] >= want)
    imix = pick(rtc, size="imix", pipeline="run-to-completion")
    table.append(("IMIX, run to completion", f"{imix['mpps']:.2f} Mpps", "(figure)", ""))

    # 3. Two queues against one, over 4 and 64 SAs.
    for flows in (4, 64):
        q = rows(out / f"queues-{flows}.json")
        ratios = []
        for d in ("encrypt", "decrypt"):
            for s in ("64", "1400"):
                one = pick(q, direction=d, size=s, pipeline="queues", workers=1)["mpps"]
                two = pick(q, direction=d, size=s, pipeline="queues", workers=2)["mpps"]
                w1 = pick(q, direction=d, size=s, pipeline="workers", workers=1)["mpps"]
                w2 = pick(q, direction=d, size=s, pipeline="workers", workers=2)["mpps"]
                ratios.append((d, s, two / one, w2 / w1))
        text = "; ".join(f"{d} {s} B: q2/q1 **{a:.2f}x** (workers 2/1 {b:.2f}x)" for d, s, a, b in ratios)
        goal(f"two queues >= 1.7x one, {flows} SAs", text, min(a for *_, a, _ in ratios) >= 1.7)

    # 4. End to end.
    e2e = (out / "e2e.txt").read_text()
    ratios = r"([\d.]+) \(workers\), ([\d.]+) \(run to completion\), ([\d.]+) \(queues\)"
    for peer, want in (("strongSwan userspace ESP", 3), ("DPDK ipsec-secgw ESP", 1.5)):
        m = re.search(peer + ": " + ratios, e2e)
        if m:
            best = max(float(x) for x in m.groups())
            goal(f"`make bench-e2e` ESP >= {want}x {peer}",
                 f"{m.group(2)}x run to completion, {m.group(3)}x two queues, {m.group(1)}x workers",
                 best >= want)

    # 5. SAD at 1M SAs.
    ten, mil = c.get("sad/by_spi/10"), c.get("sad/by_spi/1000000")
    act = c.get("sad/by_spi_active/10"), c.get("sad/by_spi_active/1000000")
    if ten and mil:
        goal("SAD at 1M SAs within 2x of 10", f"{ten:.1f} / {mil:.1f} ns: **{mil / ten:.2f}x** "
             f"(1 024 active SAs: {act[1] / act[0]:.2f}x)", mil / ten <= 2)

    # 6. Allocations.
    allocs = [int(x) for x in re.findall(r"packets:\s+(\d+) allocations", (out / "alloc.txt").read_text())]
    goal("no allocation per packet", f"{allocs} allocations over 1M packets per path", all(a == 0 for a in allocs))

    print((out / "load.txt").read_text().strip().replace("\n", "; "))
    print("| goal | measured (one sitting) | verdict |")
    print("|---|---|---|")
    for name, measured, verdict, _ in table:
        print(f"| {name} | {measured} | {verdict} |")


if __name__ == "__main__":
    main()
