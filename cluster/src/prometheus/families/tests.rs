use super::super::sample::Histogram;
use super::*;

const BUCKETS: [f64; 2] = [0.1, 1.0];

fn histogram(counts: Vec<u64>, sum: f64) -> Value {
    Value::Histogram(Histogram {
        bounds: BUCKETS.to_vec(),
        counts,
        sum,
    })
}

fn sample(series: Vec<Series>) -> Sample {
    let sample = Sample {
        series,
        help: vec![("jobs_total".into(), "Jobs.".into())],
        calls: vec![],
    };
    check(sample, &BUCKETS).0
}

#[test]
fn counters_add_up_gauges_stay_per_worker_histograms_merge() {
    let mut families = Families::default();
    for (slot, n) in [("0", 3), ("1", 4)] {
        let s = sample(vec![
            Series::new("jobs_total", &[("q", "a")], Value::Counter(n as f64)),
            Series::new("queue_len", &[("slot", "forged")], Value::Gauge(n as f64)),
            Series::new("took", &[], histogram(vec![1, n, 0], 1.5)),
        ]);
        families.sample(&s, &[("slot", slot)]);
    }
    let jobs = &families.map["jobs_total"];
    assert_eq!(jobs.help.as_deref(), Some("Jobs."));
    assert_eq!(
        jobs.series.values().collect::<Vec<_>>(),
        [&Value::Counter(7.0)]
    );
    let gauges: Vec<_> = families.map["queue_len"].series.iter().collect();
    assert_eq!(gauges.len(), 2, "{gauges:?}");
    assert_eq!(gauges[0].0, &vec![("slot".to_owned(), "0".to_owned())]);
    let took = families.map["took"].series.values().next().unwrap();
    assert_eq!(took, &histogram(vec![2, 7, 0], 3.0));
    assert_eq!(families.dropped, 0);
}

#[test]
fn what_a_worker_may_not_send_is_dropped_and_counted() {
    let long = "v".repeat(1000);
    let raw = Sample {
        series: vec![
            Series::new("multiprocess_workers", &[], Value::Gauge(1e9)),
            Series::new("x", &[], Value::Counter(1.0)),
            Series::new("h", &[], histogram(vec![1], 0.0)),
            Series::new("", &[], Value::Counter(1.0)),
            Series::new("minus", &[], Value::Counter(-1.0)),
            Series::new("bad name-é", &[("bad-label", "v")], Value::Counter(1.0)),
            Series::new("big", &[("l", long.as_str()); 5], Value::Counter(1.0)),
            Series::new(
                "other_buckets",
                &[],
                Value::Histogram(Histogram {
                    bounds: vec![0.5],
                    counts: vec![1, 1],
                    sum: 1.0,
                }),
            ),
        ],
        help: vec![("bad name-é".into(), "Renamed, still described.".into())],
        calls: vec![],
    };
    let (checked, dropped) = check(raw, &BUCKETS);
    assert_eq!(dropped, 6);
    let mut families = Families::default();
    families.sample(&checked, &[]);
    let names: Vec<_> = families.map.keys().cloned().collect();
    assert_eq!(names, ["bad_name__", "x"]);
    let family = &families.map["bad_name__"];
    assert_eq!(family.help.as_deref(), Some("Renamed, still described."));
    let labels = family.series.keys().next().unwrap();
    assert_eq!(labels, &vec![("bad_label".to_owned(), "v".to_owned())]);
}

#[test]
fn a_type_conflict_and_a_histograms_lines_are_dropped() {
    let mut families = Families::default();
    families.sample(
        &sample(vec![
            Series::new("x", &[], Value::Counter(1.0)),
            Series::new("req", &[], histogram(vec![1, 1, 1], 1.0)),
            Series::new("lat_count", &[], Value::Counter(1.0)),
        ]),
        &[],
    );
    families.sample(
        &sample(vec![
            Series::new("x", &[], Value::Gauge(1.0)),
            Series::new("req_count", &[], Value::Counter(1.0)),
            Series::new("req_bucket", &[], Value::Gauge(1.0)),
            Series::new("lat", &[], histogram(vec![1, 1, 1], 1.0)),
        ]),
        &[],
    );
    assert_eq!(families.dropped, 4);
    let names: Vec<_> = families.map.keys().cloned().collect();
    assert_eq!(names, ["lat_count", "req", "x"]);
    let text = text::render(&families);
    assert_eq!(text.matches("# TYPE req").count(), 1, "{text}");
}

#[test]
fn what_left_keeps_gives_way_to_the_live_workers() {
    // A departed worker's counter under a name the live workers now use as a gauge.
    let mut left = Families::default();
    left.sample(
        &sample(vec![Series::new("x", &[], Value::Counter(5.0))]),
        &[],
    );
    let mut out = Families::default();
    out.sample(&sample(vec![Series::new("x", &[], Value::Gauge(1.0))]), &[]);
    out.add_totals(&left);
    assert_eq!(out.map["x"].kind, Type::Gauge);
    assert_eq!(out.dropped, 1);
}

#[test]
fn the_text_is_bounded() {
    let mut families = Families::default();
    let label = "v".repeat(1000);
    let mut n = 0;
    while families.dropped == 0 {
        let name = format!("m{n}");
        let series = Series::new(
            &name,
            &[("a", &label), ("b", &label)],
            histogram(vec![1, 1, 1], 1.0),
        );
        families.put(series, None);
        n += 1;
    }
    let text = text::render(&families);
    assert!(text.len() <= MAX_OUTPUT_BYTES, "{} bytes", text.len());
    assert!(text.len() > MAX_OUTPUT_BYTES / 2, "{} bytes", text.len());
}
