//! What the bench prints and draws: the table and the SVG plot.

use super::*;

pub(super) fn table(
    rows: &[Row],
    cpus: usize,
    before: &[f64],
    after: &[f64],
    opts: &Options,
) -> String {
    let fmt_load = |l: &[f64]| {
        l.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = format!(
        "bitsgw bench: {} CPUs, load average {} (before) / {} (after); {}, {} flows, window {}\n",
        cpus,
        fmt_load(before),
        fmt_load(after),
        match opts.seconds {
            Some(x) => format!("{x} s per configuration"),
            None => format!("{} packets per configuration", opts.packets),
        },
        opts.flows,
        opts.window,
    );
    s.push_str(&format!(
        "{:<24} {:<9} {:<7} {:>5} {:>2} {:>7} {:>7} {:>8} {:>9} {:>9} {:>8} {:>6}  {:<21} {}\n",
        "transform",
        "mode",
        "dir",
        "size",
        "w",
        "Mpps",
        "Gbit/s",
        "ns/pkt",
        "p50 µs",
        "p99 µs",
        "ceil Gb/s",
        "ratio",
        "backend / fastest raw",
        "in/out/drops"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<24} {:<9} {:<7} {:>5} {:>3} {:>7.3} {:>7.3} {:>8.0} {:>9.1} {:>9.1} {:>8.3} {:>6.2}  {:<21} {}/{}/{}\n",
            r.transform.name(),
            r.mode.name(),
            r.dir.name(),
            r.size.name(),
            r.workers.name(),
            r.mpps(),
            r.gbps(),
            r.ns_per_packet(),
            r.p50_ns as f64 / 1e3,
            r.p99_ns as f64 / 1e3,
            r.ceiling_gbps(),
            r.ratio(),
            format!("{} / {}", r.backend.name(), r.ceiling_name()),
            r.packets_in,
            r.packets_out,
            r.drops
        ));
    }
    s.push_str(
        "(sizes: inner IPv4 packet; Gbit/s: goodput; latency: hand-over to emission, every 16th packet, at saturation;\n ratio: pipeline Gbit/s / the fastest raw crypto's Gbit/s on the same sizes, every implementation measured in this run;\n backend: the pipeline's AES-GCM backend, chosen by the same measurement as `run`'s)\n",
    );
    s
}

/// Throughput against packet size, one line per configuration, the raw
/// crypto ceilings dashed.
pub(super) fn plot(path: &std::path::Path, rows: &[Row]) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut ceilings: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let add = |set: &mut Vec<(String, Vec<(f64, f64)>)>, key: String, x: f64, y: f64| match set
        .iter_mut()
        .find(|(k, _)| *k == key)
    {
        Some((_, v)) => v.push((x, y)),
        None => set.push((key, vec![(x, y)])),
    };
    for r in rows {
        let x = r.size.mean();
        add(
            &mut series,
            format!(
                "{} {} {} {}w",
                r.transform.name(),
                r.mode.name(),
                r.dir.name(),
                r.workers.name()
            ),
            x,
            r.gbps(),
        );
        let ckey = format!("ceiling {} {}", r.transform.name(), r.dir.name());
        if !ceilings
            .iter()
            .any(|(k, v)| *k == ckey && v.iter().any(|(cx, _)| *cx == x))
        {
            add(&mut ceilings, ckey, x, r.ceiling_gbps());
        }
    }
    for (_, v) in series.iter_mut().chain(ceilings.iter_mut()) {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let xmax = rows.iter().map(|r| r.size.mean()).fold(100.0, f64::max) * 1.1;
    let ymax = rows
        .iter()
        .map(|r| r.gbps().max(r.ceiling_gbps()))
        .fold(0.1, f64::max)
        * 1.15;
    let lines = series.len() + ceilings.len();
    let height = 480 + 18 * lines as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bitsgw bench: goodput against packet size",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("inner packet size (octets; IMIX at its mean)")
        .y_desc("Gbit/s")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    for (i, (name, pts)) in ceilings.iter().enumerate() {
        let color = Palette99::pick(i + series.len()).to_rgba();
        chart
            .draw_series(DashedLineSeries::new(
                pts.iter().copied(),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(1))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
