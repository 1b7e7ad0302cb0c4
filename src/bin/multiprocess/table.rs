//! The status as a table, like `pm2 list`.

use serde_json::Value;

/// "1 worker", "2 workers".
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `pm2 list`, for a status.
pub fn table(status: &Value) -> String {
    let mut rows = vec![[
        "slot", "pid", "gen", "state", "uptime", "restarts", "memory", "cpu", "messages",
    ]
    .map(String::from)];
    let slots = status["slots"].as_array().into_iter().flatten();
    let removed = status["removed"].as_array().into_iter().flatten();
    for (slot, removed) in slots.map(|s| (s, false)).chain(removed.map(|s| (s, true))) {
        let workers = slot["workers"].as_array().cloned().unwrap_or_default();
        // A slot taken away by scaling, its workers still draining.
        let number = if removed {
            format!("{} (removed)", slot["slot"])
        } else {
            slot["slot"].to_string()
        };
        if workers.is_empty() {
            let state = match slot["backoff_ms"].as_u64() {
                Some(ms) => format!("backoff {}", duration(ms)),
                None => "empty".into(),
            };
            rows.push([
                number.clone(),
                "-".into(),
                "-".into(),
                state,
                "-".into(),
                slot["restarts"].to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for w in workers {
            rows.push([
                number.clone(),
                w["pid"].to_string(),
                w["generation"].to_string(),
                w["state"].as_str().unwrap_or("?").to_lowercase(),
                w["uptime_ms"].as_u64().map_or("-".into(), duration),
                slot["restarts"].to_string(),
                w["rss_bytes"].as_u64().map_or("-".into(), mib),
                w["cpu_percent"]
                    .as_f64()
                    .map_or("-".into(), |p| format!("{p:.1}%")),
                w["messages"].as_u64().map_or("-".into(), |m| m.to_string()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "{} Ready of {}, {}\n",
        plural(status["ready"].as_u64().unwrap_or(0), "worker"),
        plural(
            status["slots"].as_array().map_or(0, Vec::len) as u64,
            "slot"
        ),
        status["phase"].as_str().unwrap_or("?").to_lowercase()
    );
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    let t = &status["totals"];
    if t.is_object() {
        out.push_str(&format!(
            "replacements: {} after an exit, {} unhealthy, {} recycled; reloads: {} succeeded, {} \
             failed\n",
            t["restarts_exited"],
            t["restarts_unhealthy"],
            t["restarts_recycled"],
            t["reloads_succeeded"],
            t["reloads_failed"]
        ));
    }
    // The other hosts of a cluster joined over NATS.
    for host in status["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "host {}: {} Ready (heard {} ms ago)\n",
            host["name"].as_str().unwrap_or("?"),
            plural(
                host["workers"].as_array().map_or(0, Vec::len) as u64,
                "worker"
            ),
            host["last_heard_ms"]
        ));
    }
    out
}

fn duration(ms: u64) -> String {
    match ms / 1000 {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
