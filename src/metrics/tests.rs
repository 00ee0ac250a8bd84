use super::*;

/// The samples of `text` named `name` (exactly), as (labels, value) with labels unparsed.
fn samples<'t>(text: &'t str, name: &str) -> Vec<(&'t str, &'t str)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            (n == name).then_some((labels, value))
        })
        .collect()
}

fn value(text: &str, name: &str, labels: &str) -> String {
    let found: Vec<_> = samples(text, name)
        .into_iter()
        .filter(|(l, _)| *l == labels)
        .collect();
    assert_eq!(found.len(), 1, "{name}{{{labels}}} in\n{text}");
    found[0].1.to_string()
}

#[test]
fn histogram_buckets_are_cumulative_and_inf_is_the_count() {
    let h = Histogram::counts(&[1.0, 2.0, 5.0]);
    for v in [0, 1, 1, 2, 3, 5, 6, 100] {
        h.observe(v);
    }
    let s = h.snapshot();
    assert_eq!(
        s.buckets,
        vec![(1.0, 3), (2.0, 4), (5.0, 6), (f64::INFINITY, 8)]
    );
    assert_eq!(s.count, 8);
    assert_eq!(s.sum, 118.0);
}

#[test]
fn a_bound_counts_what_equals_it() {
    // `le` is "less than or equal": a duration of exactly a bound falls in its bucket.
    let h = Histogram::seconds(HTTP_BUCKETS);
    h.observe_duration(Duration::from_micros(100));
    h.observe_duration(Duration::from_nanos(100_001));
    h.observe_duration(Duration::from_secs(5));
    let s = h.snapshot();
    assert_eq!(s.buckets[0], (0.0001, 1));
    assert_eq!(s.buckets[1], (0.00025, 2));
    assert_eq!(s.buckets[HTTP_BUCKETS.len() - 1], (1.0, 2));
    assert_eq!(s.buckets[HTTP_BUCKETS.len()], (f64::INFINITY, 3));
    assert_eq!(s.sum.to_string(), "5.000200001");
    let h = Histogram::seconds(STAGE_BUCKETS);
    h.observe(5_845_919);
    assert_eq!(h.snapshot().sum.to_string(), "0.005845919");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("plain-1.2"), "plain-1.2");
    assert_eq!(
        escape_label("a\"b\\c\nd"),
        "a\\\"b\\\\c\\nd",
        "quote, backslash and newline"
    );
    let metrics = Metrics::new();
    let gauges = ServingGauges {
        candidate: Some("demo-2"),
        model: Some(ModelGauges {
            model_version: "v\"1\"\\2\nx",
            arm: "main",
            organic_rows: SegmentRows::default(),
            ad_rows: SegmentRows::default(),
            user_rows: SegmentRows::default(),
            published_posts: 0,
            new_users: 0,
            user_placements: 0,
            user_placements_refused: 0,
            user_index_rebuilds: 0,
            user_index_rebuilding: 0,
            offered_posts: 0,
        }),
        ..ServingGauges::default()
    };
    let text = metrics.render(&gauges);
    assert!(
        text.contains(
            "feedrank_model_info{model_version=\"v\\\"1\\\"\\\\2\\nx\",arm=\"main\"} 1\n"
        ),
        "{text}"
    );
    // The newline did not split the sample.
    assert!(text.lines().all(|l| !l.starts_with("x\"")), "{text}");
}

#[test]
fn requests_are_counted_by_template_method_and_status() {
    let metrics = Metrics::new();
    let feed = Some("/v1/users/{user_id}/feed");
    let ms = Duration::from_millis(1);
    metrics.record_request(feed, "GET", 200, ms);
    metrics.record_request(feed, "GET", 200, ms);
    metrics.record_request(feed, "GET", 400, ms);
    metrics.record_request(Some("/v1/events"), "POST", 200, ms);
    metrics.record_request(None, "GET", 404, ms);
    metrics.record_request(None, "BREW", 404, ms);
    let text = metrics.render(&ServingGauges::default());
    let total = "feedrank_http_requests_total";
    let route = "route=\"/v1/users/{user_id}/feed\"";
    assert_eq!(
        value(
            &text,
            total,
            &format!("{route},method=\"GET\",status=\"200\"")
        ),
        "2"
    );
    assert_eq!(
        value(
            &text,
            total,
            &format!("{route},method=\"GET\",status=\"400\"")
        ),
        "1"
    );
    assert_eq!(
        value(
            &text,
            total,
            "route=\"/v1/events\",method=\"POST\",status=\"200\""
        ),
        "1"
    );
    assert_eq!(
        value(
            &text,
            total,
            "route=\"unmatched\",method=\"GET\",status=\"404\""
        ),
        "1"
    );
    assert_eq!(
        value(
            &text,
            total,
            "route=\"unmatched\",method=\"other\",status=\"404\""
        ),
        "1"
    );
    assert_eq!(samples(&text, total).len(), 5);
    let duration = "feedrank_http_request_duration_seconds";
    assert_eq!(value(&text, &format!("{duration}_count"), route), "3");
    assert_eq!(
        value(
            &text,
            &format!("{duration}_bucket"),
            &format!("{route},le=\"+Inf\"")
        ),
        "3"
    );
    assert_eq!(
        value(&text, &format!("{duration}_count"), "route=\"unmatched\""),
        "2"
    );
    // No request fell past the table of templates.
    assert!(
        samples(&text, &format!("{duration}_count"))
            .iter()
            .all(|(l, _)| !l.contains("\"other\""))
    );
}

#[test]
fn route_templates_get_one_slot_each_and_the_rest_share_other() {
    let http = HttpMetrics::default();
    let names: Vec<String> = (0..ROUTE_SLOTS + 3).map(|i| format!("/r{i}")).collect();
    for name in &names {
        http.route_slot(Some(name));
    }
    for (i, name) in names.iter().enumerate().take(ROUTE_SLOTS) {
        assert_eq!(http.route_slot(Some(name)), i);
        assert_eq!(http.route_label(i), name);
    }
    assert_eq!(http.route_slot(Some(&names[ROUTE_SLOTS])), ROUTE_SLOTS + 1);
    assert_eq!(http.route_label(ROUTE_SLOTS + 1), OTHER_ROUTE);
    assert_eq!(http.route_label(http.route_slot(None)), UNMATCHED_ROUTE);
}

#[test]
fn concurrent_first_requests_of_a_route_share_its_slot() {
    let metrics = Metrics::new();
    std::thread::scope(|s| {
        for t in 0..8 {
            let metrics = &metrics;
            s.spawn(move || {
                for i in 0..1_000 {
                    let route = format!("/route/{}", (i + t) % 5);
                    metrics.record_request(Some(&route), "GET", 200, Duration::ZERO);
                }
            });
        }
    });
    let text = metrics.render(&ServingGauges::default());
    let counts = samples(&text, "feedrank_http_requests_total");
    assert_eq!(counts.len(), 5, "{text}");
    let total: u64 = counts.iter().map(|(_, v)| v.parse::<u64>().unwrap()).sum();
    assert_eq!(total, 8_000);
    assert_eq!(
        samples(&text, "feedrank_http_request_duration_seconds_count").len(),
        5
    );
}

#[test]
fn request_keys_round_trip() {
    for (route, method, status) in [(0, 0, 200), (ROUTE_SLOTS + 1, 7, 599), (3, 2, 0)] {
        let key = pack(route, method, status);
        assert_ne!(key, 0);
        assert_eq!(unpack(key), (route, method, status));
    }
    assert_eq!(method_index("GET"), 0);
    assert_eq!(method_index("OPTIONS"), 6);
    assert_eq!(method_index("get"), 7, "methods are case-sensitive");
}

#[test]
fn a_stage_clock_without_a_registry_reads_no_clock() {
    let mut clock = StageClock::start(None);
    clock.lap(Stage::Sources);
    clock.skip(Stage::Ads);
    assert!(clock.last.is_none());
    assert_eq!(clock.spent, [Duration::ZERO; 5]);
    clock.finish();
}

#[test]
fn a_stage_clock_records_each_stage_it_passed_once() {
    let feed = FeedMetrics::default();
    let mut clock = StageClock::start(Some(&feed));
    clock.lap(Stage::Sources);
    clock.lap(Stage::Hydrate);
    clock.skip(Stage::Ads);
    clock.lap(Stage::Arrange);
    // A stage lapped twice is one observation of the two together.
    clock.lap(Stage::Arrange);
    clock.finish();
    for stage in [Stage::Sources, Stage::Hydrate, Stage::Ads, Stage::Arrange] {
        assert_eq!(feed.stage(stage).count, 1, "{}", stage.name());
    }
    assert_eq!(feed.stage(Stage::Ads).sum, 0.0);
    assert_eq!(feed.stage(Stage::Page).count, 0);
}

#[test]
fn pages_count_items_by_kind_and_ads_per_page() {
    let metrics = Metrics::new();
    metrics.feed().record_page(18, 0, 2);
    metrics.feed().record_page(8, 1, 1);
    metrics.feed().record_page(0, 0, 0);
    let text = metrics.render(&ServingGauges::default());
    assert_eq!(
        value(
            &text,
            "feedrank_feed_items_total",
            "kind=\"organic\",arm=\"main\""
        ),
        "26"
    );
    assert_eq!(
        value(
            &text,
            "feedrank_feed_items_total",
            "kind=\"sponsored\",arm=\"main\""
        ),
        "1"
    );
    assert_eq!(
        value(
            &text,
            "feedrank_feed_items_total",
            "kind=\"ad\",arm=\"main\""
        ),
        "3"
    );
    let ads = "feedrank_feed_ads_per_page";
    assert_eq!(
        value(&text, &format!("{ads}_bucket"), "arm=\"main\",le=\"0\""),
        "1"
    );
    assert_eq!(
        value(&text, &format!("{ads}_bucket"), "arm=\"main\",le=\"1\""),
        "2"
    );
    assert_eq!(
        value(&text, &format!("{ads}_bucket"), "arm=\"main\",le=\"2\""),
        "3"
    );
    assert_eq!(
        value(&text, &format!("{ads}_bucket"), "arm=\"main\",le=\"+Inf\""),
        "3"
    );
    assert_eq!(value(&text, &format!("{ads}_sum"), "arm=\"main\""), "3");
    assert_eq!(value(&text, &format!("{ads}_count"), "arm=\"main\""), "3");
}

#[test]
fn counters_and_gauges_render_with_help_and_type() {
    let metrics = Metrics::new();
    metrics.record_events(5, 2);
    metrics.record_events(1, 0);
    metrics.record_published(3);
    metrics.record_reload(true);
    metrics.record_reload(false);
    metrics.record_reload(true);
    let gauges = ServingGauges {
        candidate: Some("demo-2"),
        model: Some(ModelGauges {
            model_version: "demo-1",
            arm: "main",
            organic_rows: SegmentRows {
                base: 900,
                sealed: 40,
                delta: 7,
            },
            ad_rows: SegmentRows {
                base: 100,
                sealed: 0,
                delta: 1,
            },
            user_rows: SegmentRows {
                base: 300,
                sealed: 0,
                delta: 25,
            },
            published_posts: 48,
            new_users: 11,
            user_placements: 25,
            user_placements_refused: 2,
            user_index_rebuilds: 3,
            user_index_rebuilding: 1,
            offered_posts: 6,
        }),
        live: Some(LiveGauges {
            users: 12,
            wal_bytes: 4096,
            wal_records: 9,
        }),
        profiles: 4,
    };
    let text = metrics.render(&gauges);
    for (name, labels, expected) in [
        ("feedrank_events_total", "outcome=\"accepted\"", "6"),
        ("feedrank_events_total", "outcome=\"rejected\"", "2"),
        ("feedrank_posts_published_total", "", "3"),
        ("feedrank_reloads_total", "result=\"ok\"", "2"),
        ("feedrank_reloads_total", "result=\"failed\"", "1"),
        (
            "feedrank_model_info",
            "model_version=\"demo-1\",arm=\"main\"",
            "1",
        ),
        (
            "feedrank_model_info",
            "model_version=\"demo-2\",arm=\"candidate\"",
            "1",
        ),
        (
            "feedrank_index_rows",
            "index=\"organic\",segment=\"base\"",
            "900",
        ),
        (
            "feedrank_index_rows",
            "index=\"organic\",segment=\"sealed\"",
            "40",
        ),
        (
            "feedrank_index_rows",
            "index=\"organic\",segment=\"delta\"",
            "7",
        ),
        (
            "feedrank_index_rows",
            "index=\"ads\",segment=\"base\"",
            "100",
        ),
        (
            "feedrank_index_rows",
            "index=\"ads\",segment=\"sealed\"",
            "0",
        ),
        (
            "feedrank_index_rows",
            "index=\"ads\",segment=\"delta\"",
            "1",
        ),
        (
            "feedrank_index_rows",
            "index=\"users\",segment=\"base\"",
            "300",
        ),
        (
            "feedrank_index_rows",
            "index=\"users\",segment=\"sealed\"",
            "0",
        ),
        (
            "feedrank_index_rows",
            "index=\"users\",segment=\"delta\"",
            "25",
        ),
        ("feedrank_published_posts", "", "48"),
        ("feedrank_new_users", "", "11"),
        ("feedrank_user_placements", "", "25"),
        ("feedrank_user_placements_refused", "", "2"),
        ("feedrank_user_index_rebuilds", "", "3"),
        ("feedrank_user_index_rebuilding", "", "1"),
        ("feedrank_offered_posts", "", "6"),
        ("feedrank_live_users", "", "12"),
        ("feedrank_wal_bytes", "", "4096"),
        ("feedrank_wal_records", "", "9"),
        ("feedrank_profiles", "", "4"),
    ] {
        assert_eq!(value(&text, name, labels), expected, "{name}{{{labels}}}");
    }
    // Every family once, HELP before TYPE, each sample after its family's TYPE.
    let mut families: Vec<(&str, &str)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap();
            let kind = lines
                .next()
                .and_then(|l| l.strip_prefix(&format!("# TYPE {name} ")))
                .unwrap_or_else(|| panic!("TYPE after HELP of {name}"));
            assert!(["counter", "gauge", "histogram"].contains(&kind));
            assert!(families.iter().all(|(n, _)| *n != name), "{name} twice");
            families.push((name, kind));
        } else {
            let (name, _) = families.last().expect("a family first");
            assert!(line.starts_with(name), "{line} under {name}");
        }
    }
    let expected = [
        ("feedrank_http_requests_total", "counter"),
        ("feedrank_http_request_duration_seconds", "histogram"),
        ("feedrank_feed_stage_seconds", "histogram"),
        ("feedrank_feed_ads_per_page", "histogram"),
        ("feedrank_feed_items_total", "counter"),
        ("feedrank_events_total", "counter"),
        ("feedrank_posts_published_total", "counter"),
        ("feedrank_reloads_total", "counter"),
        ("feedrank_model_info", "gauge"),
        ("feedrank_index_rows", "gauge"),
        ("feedrank_published_posts", "gauge"),
        ("feedrank_new_users", "gauge"),
        ("feedrank_user_placements", "gauge"),
        ("feedrank_user_placements_refused", "gauge"),
        ("feedrank_user_index_rebuilds", "gauge"),
        ("feedrank_user_index_rebuilding", "gauge"),
        ("feedrank_offered_posts", "gauge"),
        ("feedrank_live_users", "gauge"),
        ("feedrank_wal_bytes", "gauge"),
        ("feedrank_wal_records", "gauge"),
        ("feedrank_profiles", "gauge"),
    ];
    assert_eq!(families, expected);
}

#[test]
fn a_service_without_model_or_live_state_leaves_their_gauges_out() {
    let text = Metrics::new().render(&ServingGauges::default());
    for name in [
        "feedrank_model_info",
        "feedrank_index_rows",
        "feedrank_published_posts",
        "feedrank_new_users",
        "feedrank_user_placements",
        "feedrank_user_placements_refused",
        "feedrank_user_index_rebuilds",
        "feedrank_user_index_rebuilding",
        "feedrank_offered_posts",
        "feedrank_live_users",
        "feedrank_wal_bytes",
        "feedrank_wal_records",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name}");
        assert!(samples(&text, name).is_empty(), "{name}");
    }
    assert_eq!(value(&text, "feedrank_profiles", ""), "0");
    // The fixed series are there from the start, at zero.
    assert_eq!(
        value(&text, "feedrank_reloads_total", "result=\"failed\""),
        "0"
    );
    assert_eq!(
        value(
            &text,
            "feedrank_feed_stage_seconds_count",
            "stage=\"arrange\",arm=\"main\""
        ),
        "0"
    );
}
