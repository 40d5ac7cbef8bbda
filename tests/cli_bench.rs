//! `bitsgw bench`: a tiny run through the threaded pipeline; the JSON has
//! the documented shape, every packet handed over came out with no drop,
//! and the SVG plot is well-formed. No timing is asserted.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::process::Command;

#[test]
fn tiny_bench_json_counts_and_plot() {
    let dir = std::env::temp_dir().join(format!("bitsgw-cli-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("plot.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .args([
            "bench",
            "--packets",
            "2000",
            "--sizes",
            "64,1400",
            "--transforms",
            "aes-gcm-128",
            "--workers",
            "1,rtc",
            "--json",
            "--plot",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bitsgw bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["packets"], 2000);
    assert!(v["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(v["load_average_before"].as_array().unwrap().len(), 3);
    let results = v["results"].as_array().unwrap();
    // 2 sizes x 2 modes x 2 directions x (1 worker, run to completion).
    assert_eq!(results.len(), 16, "{v:#}");
    let mut seen = Vec::new();
    for r in results {
        assert_eq!(r["transform"], "aes-gcm-128");
        let size = r["size"].as_str().unwrap().to_string();
        assert!(size == "64" || size == "1400", "{r}");
        let mode = r["mode"].as_str().unwrap().to_string();
        assert!(mode == "tunnel" || mode == "transport", "{r}");
        let dir = r["direction"].as_str().unwrap().to_string();
        assert!(dir == "encrypt" || dir == "decrypt", "{r}");
        let pipeline = r["pipeline"].as_str().unwrap().to_string();
        match pipeline.as_str() {
            "workers" => assert_eq!(r["workers"], 1, "{r}"),
            "run-to-completion" => assert_eq!(r["workers"], 2, "one thread per port: {r}"),
            other => panic!("pipeline {other}: {r}"),
        }
        seen.push((size, mode, dir, pipeline));
        let pin = r["packets_in"].as_u64().unwrap();
        let pout = r["packets_out"].as_u64().unwrap();
        assert!(pin >= 2000, "{r}");
        assert_eq!(pin, pout, "every packet sent came out: {r}");
        assert_eq!(r["drops"], 0, "{r}");
        assert_eq!(r["measured_packets"], 2000, "{r}");
        for k in [
            "mpps",
            "gbps",
            "ns_per_packet",
            "elapsed_s",
            "ratio_to_ceiling",
        ] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
        }
        for k in ["gbps", "ns_per_packet", "mpps"] {
            assert!(r["ceiling"][k].as_f64().unwrap() > 0.0, "ceiling {k}: {r}");
        }
        // AES-GCM has two implementations: both measured, the ratio taken
        // against the faster; the pipeline's SAs are `auto`.
        let ceilings = r["ceilings"].as_object().unwrap();
        let names: Vec<&str> = ceilings.keys().map(String::as_str).collect();
        assert_eq!(names, ["ring", "rustcrypto"], "{r}");
        let fastest = ceilings
            .values()
            .map(|c| c["ns_per_packet"].as_f64().unwrap())
            .fold(f64::INFINITY, f64::min);
        assert_eq!(
            r["ceiling"]["ns_per_packet"].as_f64().unwrap(),
            fastest,
            "{r}"
        );
        let implementation = r["ceiling"]["implementation"].as_str().unwrap();
        assert_eq!(
            ceilings[implementation]["ns_per_packet"].as_f64().unwrap(),
            fastest,
            "{r}"
        );
        let backend = r["backend"].as_str().unwrap();
        assert!(backend == "ring" || backend == "rustcrypto", "{r}");
        let lat = &r["latency_ns"];
        assert!(lat["samples"].as_u64().unwrap() > 0, "{r}");
        assert!(
            lat["p50"].as_u64().unwrap() <= lat["p99"].as_u64().unwrap(),
            "{r}"
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 16, "every combination once");

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // One line per configuration plus the ceilings: polylines drawn.
    let lines = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "polyline" || n.tag_name().name() == "path")
        .count();
    assert!(lines >= 4, "{lines} lines in the plot");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn bench_json(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_bitsgw"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Queues: one generator per queue, each frame steered to its SA's owner
/// (nothing handed over), every packet out; with `--flow-hash` the
/// encrypted flows land by their addresses and some are handed over;
/// more queues than flows is refused.
#[test]
fn tiny_bench_of_queues() {
    let common = [
        "--packets",
        "2000",
        "--sizes",
        "64",
        "--transforms",
        "aes-gcm-128",
        "--modes",
        "tunnel",
        "--workers",
        "q1,q2",
        "--flows",
        "4",
        "--json",
    ];
    let v = bench_json(&common).unwrap();
    let results = v["results"].as_array().unwrap();
    // 2 directions x 2 queue counts.
    assert_eq!(results.len(), 4, "{v:#}");
    for r in results {
        assert_eq!(r["pipeline"], "queues", "{r}");
        assert!(r["workers"] == 1 || r["workers"] == 2, "{r}");
        assert_eq!(r["packets_in"], r["packets_out"], "{r}");
        assert_eq!(r["drops"], 0, "{r}");
        assert_eq!(r["handed_over"], 0, "steered to the owners: {r}");
    }
    let mut hashed: Vec<&str> = common.to_vec();
    hashed.extend(["--direction", "encrypt", "--flow-hash"]);
    let v = bench_json(&hashed).unwrap();
    let two = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workers"] == 2)
        .unwrap();
    assert_eq!(two["packets_in"], two["packets_out"], "{two}");
    assert_eq!(two["drops"], 0, "{two}");
    assert!(two["handed_over"].as_u64().unwrap() > 0, "{two}");
    let mut one_flow: Vec<&str> = common.to_vec();
    one_flow[11] = "1";
    let err = bench_json(&one_flow).unwrap_err();
    assert!(err.contains("without traffic"), "{err}");
}
