//! The Prometheus text exposition format (version 0.0.4): what the endpoint answers.
//!
//! ```text
//! # HELP multiprocess_workers Worker processes, by state.
//! # TYPE multiprocess_workers gauge
//! multiprocess_workers{state="ready"} 4
//! # TYPE jobs_seconds histogram
//! jobs_seconds_bucket{le="0.1"} 3
//! jobs_seconds_bucket{le="+Inf"} 5
//! jobs_seconds_sum 1.25
//! jobs_seconds_count 5
//! ```

use std::fmt::Write;

use super::families::{Families, Type};
use super::sample::Value;

/// The media type of the format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `name` as a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`: any other character becomes
/// `_`), or `None` if empty.
pub(crate) fn metric_name(name: &str) -> Option<String> {
    valid(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name` as a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, which
/// Prometheus keeps for itself), or `None` if empty.
pub(crate) fn label_name(name: &str) -> Option<String> {
    let name = valid(name, |c| c.is_ascii_alphanumeric() || c == '_')?;
    Some(match name.strip_prefix("__") {
        Some(rest) => format!("x__{rest}"),
        None => name,
    })
}

fn valid(name: &str, ok: impl Fn(char) -> bool) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out: String = name.chars().map(|c| if ok(c) { c } else { '_' }).collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Some(out)
}

/// Renders every family, in name order.
pub(crate) fn render(families: &Families) -> String {
    let mut out = String::new();
    for (name, family) in &families.map {
        if let Some(help) = &family.help {
            let help = help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}");
        }
        let kind = match family.kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in &family.series {
            match value {
                Value::Counter(n) => line(&mut out, name, "", labels, None, &number(*n)),
                Value::Gauge(x) => line(&mut out, name, "", labels, None, &number(*x)),
                Value::Histogram(h) => {
                    let mut below = 0u64;
                    for (bound, count) in h.bounds.iter().zip(&h.counts) {
                        below = below.saturating_add(*count);
                        let le = number(*bound);
                        line(
                            &mut out,
                            name,
                            "_bucket",
                            labels,
                            Some(&le),
                            &below.to_string(),
                        );
                    }
                    let count = h.count().to_string();
                    line(&mut out, name, "_bucket", labels, Some("+Inf"), &count);
                    line(&mut out, name, "_sum", labels, None, &number(h.sum));
                    line(&mut out, name, "_count", labels, None, &count);
                }
            }
        }
    }
    out
}

fn line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(String, String)],
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let le = le.map(|le| ("le", le));
    let mut all = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le)
        .peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{k}=\"{v}\"");
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// A float as Prometheus reads it (`NaN`, `+Inf`, `-Inf`, or a Go-parsable number).
pub(crate) fn number(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if x == 0.0 || (1e-4..1e15).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::{Histogram, Sample, Series};
    use super::*;

    #[test]
    fn renders_each_type_with_escapes() {
        let mut families = Families::default();
        families.cluster(
            "multiprocess_workers",
            "Worker processes,\nby state.",
            &[("state", "ready")],
            Value::Gauge(4.0),
        );
        let sample = Sample {
            series: vec![
                Series::new("jobs_total", &[("path", "a\"b\\c\nd")], Value::Counter(7.0)),
                Series::new(
                    "took_seconds",
                    &[],
                    Value::Histogram(Histogram {
                        bounds: vec![0.00005, 1.0],
                        counts: vec![1, 2, 3],
                        sum: f64::INFINITY,
                    }),
                ),
            ],
            help: vec![],
            calls: vec![],
        };
        let (sample, dropped) = super::super::families::check(sample, &[0.00005, 1.0]);
        assert_eq!(dropped, 0);
        families.sample(&sample, &[]);
        let text = render(&families);
        let expected = "\
# TYPE jobs_total counter
jobs_total{path=\"a\\\"b\\\\c\\nd\"} 7
# HELP multiprocess_workers Worker processes,\\nby state.
# TYPE multiprocess_workers gauge
multiprocess_workers{state=\"ready\"} 4
# TYPE took_seconds histogram
took_seconds_bucket{le=\"5e-5\"} 1
took_seconds_bucket{le=\"1\"} 3
took_seconds_bucket{le=\"+Inf\"} 6
took_seconds_sum +Inf
took_seconds_count 6
";
        assert_eq!(text, expected);
    }

    #[test]
    fn names_are_made_valid() {
        assert_eq!(metric_name("9 lives:ok").as_deref(), Some("_9_lives:ok"));
        assert_eq!(label_name("a:b").as_deref(), Some("a_b"));
        assert_eq!(label_name("__name__").as_deref(), Some("x__name__"));
        assert_eq!(metric_name(""), None);
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(-2e20), "-2e20");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
