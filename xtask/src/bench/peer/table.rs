//! The side by side's figures (Falco, mcpwatch, ratio, the target)
//! and their Markdown table, the README's form.

use serde_json::{Value, json};

/// One row: what, Falco following openat, Falco following everything (when
/// measured), mcpwatch, the target ratio (or none), the unit.
fn row(figure: &str, falco: f64, falco_all: Option<f64>, mcpwatch: f64, target: Option<f64>, unit: &str) -> Value {
    let ratio = mcpwatch / falco;
    json!({
        "figure": figure, "unit": unit, "falco": falco, "falco_all": falco_all, "mcpwatch": mcpwatch,
        "ratio": ratio.is_finite().then_some(ratio), "target": target,
        "met": target.map(|t| ratio.is_finite() && ratio <= t),
    })
}

pub fn figures(loops: &Value, bpf: &Value, floods: &Value) -> Value {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let extra = |config: &str, l: &str| f(&loops[config][l]) - f(&loops["none"][l]);
    let (fa, fl, m) = (&floods["falco"], &floods["mcpwatch_alerts"], &floods["mcpwatch_all"]);
    let mib = |v: &Value| f(v) / 1024.0;
    let loss = |v: &Value| {
        let l = f(&v["loss_pct"]);
        json!({"figure": "", "unit": "%", "falco": f(&fa["loss_pct"]), "mcpwatch": l, "target": 0.0, "met": l == 0.0})
    };
    let mut loss_alerts = loss(fl);
    loss_alerts["figure"] = "unpaced openat for 10 s, one generator thread: dropped (alerts only)".into();
    let mut loss_all = loss(m);
    loss_all["figure"] = "unpaced openat for 10 s, one generator thread: dropped (every event a JSON line)".into();
    // (figure, Falco openat only, Falco all syscalls, mcpwatch, target ratio, unit)
    type Row<'a> = (&'a str, f64, Option<f64>, f64, Option<f64>, &'a str);
    let ns_rows: [Row; 7] = [
        (
            "extra ns per openat, process not watched (Falco: captured)",
            extra("falco_openat", "openat"),
            Some(extra("falco_all", "openat")),
            extra("mcpwatch", "openat"),
            Some(0.6),
            "ns",
        ),
        (
            "extra ns per openat, captured (watched)",
            extra("falco_openat", "openat"),
            Some(extra("falco_all", "openat")),
            f(&loops["mcpwatch"]["openat_watched"]) - f(&loops["none"]["openat"]),
            Some(1.0),
            "ns",
        ),
        (
            "BPF run time per captured openat (bpf_stats)",
            f(&bpf["falco_openat"]["captured_ns"]),
            None,
            f(&bpf["mcpwatch"]["captured_ns"]),
            Some(1.0),
            "ns",
        ),
        (
            "extra ns per getppid (a syscall neither follows)",
            extra("falco_openat", "getppid"),
            Some(extra("falco_all", "getppid")),
            extra("mcpwatch", "getppid"),
            Some(1.0),
            "ns",
        ),
        (
            "BPF run time per getppid (bpf_stats; the tracepoint's dispatch not included)",
            f(&bpf["falco_openat"]["getppid_ns"]),
            None,
            f(&bpf["mcpwatch"]["getppid_ns"]),
            None,
            "ns",
        ),
        (
            "reader CPU per event: Falco drain and count; mcpwatch decode + policy, alerts only",
            f(&fa["cpu_ns_per_event"]),
            None,
            f(&fl["cpu_ns_per_event"]),
            Some(1.0),
            "ns",
        ),
        (
            "reader CPU per event: mcpwatch with every event a JSON line",
            f(&fa["cpu_ns_per_event"]),
            None,
            f(&m["cpu_ns_per_event"]),
            Some(1.5),
            "ns",
        ),
    ];
    let rss_rows: [Row; 2] = [
        (
            "peak RSS (MiB)",
            mib(&fa["rss_peak_kib"]),
            None,
            mib(&fl["rss_peak_kib"]).max(mib(&m["rss_peak_kib"])),
            Some(0.6),
            "MiB",
        ),
        (
            "idle RSS (MiB)",
            mib(&fa["rss_idle_kib"]),
            None,
            mib(&fl["rss_idle_kib"]),
            None,
            "MiB",
        ),
    ];
    let rows = |rs: &[Row]| rs.iter().map(|r| row(r.0, r.1, r.2, r.3, r.4, r.5)).collect::<Vec<_>>();
    let mut out = rows(&ns_rows);
    out.extend([loss_alerts, loss_all]);
    out.extend(rows(&rss_rows));
    Value::Array(out)
}

fn cell(v: &Value, unit: &str) -> String {
    match v.as_f64() {
        None => "—".into(),
        Some(x) if unit == "MiB" => format!("{x:.1}"),
        Some(x) if unit == "%" => format!("{x:.2}%"),
        Some(x) => format!("{x:+.0}").trim_start_matches('+').to_owned(),
    }
}

/// The README's table.
pub fn table(p: &Value) -> String {
    let mut s = format!(
        "Side by side with Falco's modern eBPF probe (scap-open), {} interleaved rounds, tools on CPU {}, \
         loops on CPU {}; medians (floods: {} of {} s).\n\n",
        p["rounds"], p["tool_cpu"], p["generator_cpu"], p["floods"], p["flood_seconds"]
    );
    s += "| figure | Falco, openat only | Falco, all syscalls | mcpwatch | ratio | target | met |\n";
    s += "|---|---|---|---|---|---|---|\n";
    for r in p["figures"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let unit = r["unit"].as_str().unwrap_or("");
        let ratio = r["ratio"].as_f64().map_or("—".into(), |x| format!("{x:.2}x"));
        let target = match (r["target"].as_f64(), unit) {
            (None, _) => "—".into(),
            (Some(_), "%") => "0%".into(),
            (Some(t), _) => format!("≤ {t:.1}x"),
        };
        let met = match r["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {target} | {met} |\n",
            r["figure"].as_str().unwrap_or(""),
            cell(&r["falco"], unit),
            cell(&r["falco_all"], unit),
            cell(&r["mcpwatch"], unit),
            if unit == "%" { "—".into() } else { ratio },
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_extra_costs_against_no_tool_and_ratios_against_falco() {
        let loops = json!({
            "none": {"openat": 700.0, "getppid": 100.0},
            "falco_openat": {"openat": 1500.0, "getppid": 300.0},
            "falco_all": {"openat": 1600.0, "getppid": 400.0},
            "mcpwatch": {"openat": 900.0, "getppid": 301.0, "openat_watched": 1900.0},
        });
        let bpf = json!({"falco_openat": {"captured_ns": 400.0, "getppid_ns": 40.0},
                         "mcpwatch": {"captured_ns": 440.0, "getppid_ns": 30.0}});
        let reader = |cpu: f64, loss: f64, peak: f64| json!({"cpu_ns_per_event": cpu, "loss_pct": loss, "rss_idle_kib": 30720.0, "rss_peak_kib": peak});
        let floods = json!({
            "falco": reader(280.0, 0.0, 55296.0),
            "mcpwatch_alerts": reader(210.0, 0.0, 46080.0),
            "mcpwatch_all": reader(640.0, 0.5, 47104.0),
        });
        let v = figures(&loops, &bpf, &floods);
        let rows = v.as_array().expect("rows");
        assert_eq!(rows.len(), 11);
        let r = |i: usize, k: &str| rows[i][k].as_f64().unwrap_or(f64::NAN);
        assert_eq!(
            (r(0, "falco"), r(0, "falco_all"), r(0, "mcpwatch")),
            (800.0, 900.0, 200.0)
        );
        assert_eq!(r(0, "ratio"), 0.25);
        assert_eq!(r(1, "mcpwatch"), 1200.0);
        assert_eq!(rows[3]["met"], false, "201 ns against 200 is over the target");
        assert_eq!((r(4, "falco"), r(4, "mcpwatch"), r(4, "ratio")), (40.0, 30.0, 0.75));
        assert_eq!(rows[4]["met"], Value::Null, "no target: what each program costs");
        assert_eq!(rows[5]["met"], true);
        assert_eq!(
            (rows[7]["met"].clone(), rows[8]["met"].clone()),
            (json!(true), json!(false))
        );
        assert_eq!(
            r(9, "mcpwatch"),
            46.0,
            "the peak is the higher of the two mcpwatch floods"
        );
        assert!(
            table(&json!({"figures": v})).contains(
                "| extra ns per getppid (a syscall neither follows) | 200 | 300 | 201 | 1.00x | ≤ 1.0x | no |"
            )
        );
    }
}
