//! The `feedrank` binary: `demo`, `snapshot check`, `snapshot index`, `bench ann`, `eval hashtags`,
//! and the bundled demo world.

use std::path::Path;
use std::process::{Command, Output};

use feedrank::demo::{self, DemoConfig};
use feedrank::snapshot::{self, sha256_hex};

fn feedrank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feedrank"))
        .args(args)
        .output()
        .expect("run feedrank")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn small_demo(dir: &Path, seed: &str) {
    let out = feedrank(&[
        "demo",
        "--out",
        dir.to_str().unwrap(),
        "--posts",
        "1500",
        "--users",
        "120",
        "--seed",
        seed,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Rewrites one data file and its checksum in the manifest, so only the edit itself is wrong.
fn edit_file(dir: &Path, name: &str, edit: impl FnOnce(String) -> String) {
    let path = dir.join(name);
    let new = edit(std::fs::read_to_string(&path).unwrap());
    std::fs::write(&path, &new).unwrap();
    let manifest_path = dir.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["files"][name] = sha256_hex(new.as_bytes()).into();
    std::fs::write(
        &manifest_path,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
}

#[test]
fn demo_writes_a_snapshot_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "5");
    let out = feedrank(&["snapshot", "check", dir.path().to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    assert!(stdout.contains("demo-5"), "{stdout}");
    assert!(stdout.contains("1,500"), "post count in summary: {stdout}");
}

#[test]
fn demo_is_deterministic_for_a_seed() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    small_demo(a.path(), "9");
    small_demo(b.path(), "9");
    small_demo(c.path(), "10");
    for name in [
        "posts.npy",
        "posts.jsonl",
        "users.npy",
        "users.jsonl",
        "hashtags.jsonl",
    ] {
        let read = |d: &Path| std::fs::read(d.join(name)).unwrap();
        assert_eq!(
            read(a.path()),
            read(b.path()),
            "{name} differs for the same seed"
        );
        if name != "hashtags.jsonl" {
            assert_ne!(
                read(a.path()),
                read(c.path()),
                "{name} identical across seeds"
            );
        }
    }
}

#[test]
fn demo_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "keep me").unwrap();
    let out = feedrank(&[
        "demo",
        "--out",
        dir.path().to_str().unwrap(),
        "--posts",
        "100",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn demo_rejects_bad_arguments_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = feedrank(&[
        "demo",
        "--out",
        dir.path().to_str().unwrap(),
        "--posts",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("posts"), "{}", text(&out.stderr));
}

#[test]
fn check_names_file_line_and_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "6");
    edit_file(dir.path(), "posts.jsonl", |s| {
        let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
        let mut post: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        post["kind"] = "promo".into();
        lines[2] = post.to_string();
        lines.join("\n") + "\n"
    });
    let out = feedrank(&["snapshot", "check", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("posts.jsonl:3: field `kind`"), "{stderr}");
    assert!(stderr.contains("promo"), "{stderr}");
}

/// Writes `scoring` into the manifest of a small demo snapshot and runs `snapshot check`.
fn check_with_scoring(scoring: serde_json::Value) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "6");
    let path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["scoring"] = scoring;
    std::fs::write(&path, manifest.to_string()).unwrap();
    let out = feedrank(&["snapshot", "check", dir.path().to_str().unwrap()]);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn check_rejects_unknown_scoring_keys() {
    let (code, stderr) = check_with_scoring(serde_json::json!({"save_wieght": 2.0}));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("manifest.json: field `scoring.save_wieght`"),
        "{stderr}"
    );
}

#[test]
fn check_accepts_policy_knobs_in_scoring_and_names_a_bad_one() {
    let (code, stderr) = check_with_scoring(
        serde_json::json!({"organic_per_ad": 15, "ad_min_relevance": 0.4, "value_weight": 0.5}),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check_with_scoring(serde_json::json!({"page_size": 0}));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("manifest.json: field `scoring.page_size`"),
        "{stderr}"
    );
}

#[test]
fn check_of_a_missing_directory_fails_clearly() {
    let out = feedrank(&["snapshot", "check", "/nonexistent/snapshot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("manifest.json"),
        "{}",
        text(&out.stderr)
    );
}

/// The bundled world is exactly what the generator writes for the default settings, so the
/// README's serve command always runs on a world the current code can reproduce.
#[test]
fn bundled_demo_world_is_the_generators_default_output() {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo");
    let loaded = snapshot::load(&bundled).expect("bundled demo world is valid");
    let default = DemoConfig::default();
    assert_eq!(loaded.posts.len(), default.posts);
    assert_eq!(loaded.users.len(), default.users);
    let generated = demo::generate(&default).unwrap();
    let dir = tempfile::tempdir().unwrap();
    generated.write_to(dir.path()).unwrap();
    let written = snapshot::load(dir.path()).unwrap();
    assert_eq!(
        written.manifest.files, loaded.manifest.files,
        "regenerate models/demo"
    );
}

/// Runs `feedrank serve` and waits for it to exit on its own (it must, within a minute).
fn serve_until_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedrank"))
        .arg("serve")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start feedrank serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("feedrank serve kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn serve_refuses_a_broken_snapshot_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "8");
    edit_file(dir.path(), "posts.jsonl", |s| {
        s.replacen("\"organic\"", "\"promo\"", 1)
    });
    let (code, stderr) = serve_until_exit(&[
        "--snapshot",
        dir.path().to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("field `kind`"), "{stderr}");
    assert!(stderr.contains("failed to load"), "{stderr}");
}

#[test]
fn serve_rejects_a_config_file_with_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "adr = \"127.0.0.1:0\"\n").unwrap();
    let (code, stderr) = serve_until_exit(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("adr"), "{stderr}");
}

#[test]
fn serve_rejects_a_bad_address_naming_the_flag() {
    let (code, stderr) = serve_until_exit(&["--addr", "not-an-address"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--addr"), "{stderr}");
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn snapshot_index_stores_the_index_and_check_reports_whether_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "7");
    let dir_arg = dir.path().to_str().unwrap();
    let out = feedrank(&["snapshot", "check", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("stored index      none"), "{stdout}");

    let mut names = file_names(dir.path());
    let out = feedrank(&["snapshot", "index", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("organic posts in"), "{stdout}");
    assert!(
        stdout.contains("max_connections 16, ef_construction 200"),
        "{stdout}"
    );
    let path = dir.path().join("posts.index");
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(
        stdout.contains(&format!("wrote {}", path.display())),
        "{stdout}"
    );
    assert!(stdout.contains("bytes"), "{stdout}");
    names.push("posts.index".into());
    names.sort();
    assert_eq!(file_names(dir.path()), names, "only posts.index is new");
    assert!(size > 1_000, "{size} bytes");

    let out = feedrank(&["snapshot", "check", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("stored index      posts.index matches"),
        "{stdout}"
    );

    // Other [feed] options: the stored index is stale for them, the snapshot still valid.
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[feed]\nhnsw_ef_construction = 100\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let out = feedrank(&["snapshot", "check", dir_arg, "--config", config_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("stale: posts.index: built for ef_construction 200, options ask for 100"),
        "{stdout}"
    );
    let out = feedrank(&["snapshot", "index", dir_arg, "--config", config_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ef_construction 100"));
    let out = feedrank(&["snapshot", "check", dir_arg, "--config", config_arg]);
    assert!(text(&out.stdout).contains("posts.index matches"));

    // A damaged file: reported, the snapshot still valid.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = feedrank(&["snapshot", "check", dir_arg, "--config", config_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("stale: posts.index: checksum mismatch"),
        "{stdout}"
    );
}

#[test]
fn snapshot_index_refuses_a_broken_snapshot_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "6");
    edit_file(dir.path(), "posts.jsonl", |s| {
        s.replacen("\"organic\"", "\"promo\"", 1)
    });
    let names = file_names(dir.path());
    let out = feedrank(&["snapshot", "index", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("field `kind`"), "{stderr}");
    assert!(stderr.contains("the snapshot is rejected"), "{stderr}");
    assert_eq!(file_names(dir.path()), names);
}

#[test]
fn snapshot_index_rejects_an_unusable_config_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "6");
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[feed]\nhnsw_max_connections = 1\n").unwrap();
    let out = feedrank(&[
        "snapshot",
        "index",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("feed.hnsw_max_connections"), "{stderr}");
    assert!(!dir.path().join("posts.index").exists());
}

/// Base vectors (rows of random scale: `bench ann` normalises them under cosine), queries and
/// the exact top-`truth_k` by cosine computed here by brute force in f64, written as `.npy`.
fn write_ann_inputs(dir: &Path, truth_k: usize) {
    use feedrank::index::synthetic;
    use feedrank::snapshot::npy;
    use ndarray::Array2;

    let (n, dim, q) = (800, 16, 40);
    let mut base = synthetic::clustered(n, dim, 20, 1.0, 3);
    for (r, mut row) in base.rows_mut().into_iter().enumerate() {
        row *= 0.5 + (r % 7) as f32;
    }
    let queries = synthetic::queries(q, dim, 20, 1.0, 3);
    let cosine = |a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>| {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let norm = |v: ndarray::ArrayView1<f32>| {
            v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
        };
        dot / (norm(a) * norm(b))
    };
    let mut truth = Array2::<i32>::zeros((q, truth_k));
    for (i, query) in queries.rows().into_iter().enumerate() {
        let mut scored: Vec<(f64, usize)> = base
            .rows()
            .into_iter()
            .enumerate()
            .map(|(r, row)| (cosine(query, row), r))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (c, &(_, r)) in scored.iter().take(truth_k).enumerate() {
            truth[[i, c]] = r as i32;
        }
    }
    let write_f32 = |name: &str, m: &Array2<f32>| {
        let mut bytes = Vec::new();
        npy::write_f32_matrix(&mut bytes, m).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    write_f32("base.npy", &base);
    write_f32("queries.npy", &queries);
    let mut bytes = Vec::new();
    npy::write_i32_matrix(&mut bytes, &truth).unwrap();
    std::fs::write(dir.join("truth.npy"), bytes).unwrap();
    // The same queries cut to 8 dimensions, for the mismatch test.
    write_f32(
        "queries8.npy",
        &queries.slice(ndarray::s![.., ..8]).to_owned(),
    );
}

fn bench_ann(dir: &Path, base: &str, queries: &str, truth: &str, extra: &[&str]) -> Output {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let (base, queries, truth) = (path(base), path(queries), path(truth));
    let mut args = vec![
        "bench",
        "ann",
        "--base",
        &base,
        "--queries",
        &queries,
        "--truth",
        &truth,
    ];
    args.extend_from_slice(extra);
    feedrank(&args)
}

#[test]
fn bench_ann_reports_recall_against_a_brute_force_truth() {
    let dir = tempfile::tempdir().unwrap();
    write_ann_inputs(dir.path(), 30);
    let out = bench_ann(
        dir.path(),
        "base.npy",
        "queries.npy",
        "truth.npy",
        &["--ef", "16,64", "--k", "5,30,10", "--json"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let setup = &records[0];
    assert_eq!(setup["kind"], "setup");
    assert_eq!(setup["base_rows"], 800);
    assert_eq!(setup["dim"], 16);
    assert_eq!(setup["queries"], 40);
    assert_eq!(setup["truth_k"], 30);
    assert_eq!(setup["requested_ks"], serde_json::json!([5, 30]));
    for engine in ["hnsw_rs", "flat", "exact"] {
        let build = records
            .iter()
            .find(|r| r["kind"] == "build" && r["engine"] == engine)
            .unwrap_or_else(|| panic!("no build record for {engine}: {stdout}"));
        assert!(build["seconds"].as_f64().unwrap() >= 0.0, "{build}");
    }
    let flat_build = records
        .iter()
        .find(|r| r["kind"] == "build" && r["engine"] == "flat")
        .unwrap();
    // At least the 800 × 16 vectors.
    assert!(flat_build["memory_bytes"].as_u64().unwrap() >= 800 * 16 * 4);

    let searches: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "search").collect();
    let runs: Vec<(String, Option<u64>, u64)> = searches
        .iter()
        .map(|r| {
            (
                r["engine"].as_str().unwrap().to_string(),
                r["ef"].as_u64(),
                r["k_requested"].as_u64().unwrap(),
            )
        })
        .collect();
    let run = |e: &str, ef: Option<u64>, k: u64| (e.to_string(), ef, k);
    // k = 5 and k = 30 (the smallest and largest cut-off); beams max(ef, k), run once each.
    assert_eq!(
        runs,
        [
            run("flat", Some(16), 5),
            run("flat", Some(64), 5),
            run("flat", Some(30), 30),
            run("flat", Some(64), 30),
            run("hnsw_rs", Some(16), 5),
            run("hnsw_rs", Some(64), 5),
            run("hnsw_rs", Some(30), 30),
            run("hnsw_rs", Some(64), 30),
            run("exact", None, 5),
            run("exact", None, 30),
        ]
    );
    for r in &searches {
        assert_eq!(r["queries"], 40, "{r}");
        let (median, p99) = (
            r["median_us"].as_f64().unwrap(),
            r["p99_us"].as_f64().unwrap(),
        );
        assert!(median > 0.0 && p99 >= median, "{r}");
        assert!(r["mean_us"].as_f64().unwrap() > 0.0 && r["qps"].as_f64().unwrap() > 0.0);
        let recall = r["recall"].as_object().unwrap();
        let k = r["k_requested"].as_u64().unwrap();
        let cutoffs: Vec<&str> = recall.keys().map(String::as_str).collect();
        // Every cut-off up to the k requested.
        let expected: &[&str] = if k == 5 { &["5"] } else { &["10", "30", "5"] };
        let mut sorted = cutoffs.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "{r}");
        for (cutoff, value) in recall {
            let value = value.as_f64().unwrap();
            match r["engine"].as_str().unwrap() {
                "exact" => assert_eq!(value, 1.0, "exact recall@{cutoff}: {r}"),
                "flat" if r["ef"] == 64 => assert!(value >= 0.95, "flat recall@{cutoff}: {r}"),
                _ => assert!((0.0..=1.0).contains(&value), "{r}"),
            }
        }
    }
}

#[test]
fn bench_ann_text_output_and_engine_choice() {
    let dir = tempfile::tempdir().unwrap();
    write_ann_inputs(dir.path(), 10);
    let out = bench_ann(
        dir.path(),
        "base.npy",
        "queries.npy",
        "truth.npy",
        &[
            "--ef",
            "32",
            "--k",
            "10",
            "--engines",
            "exact",
            "--exact-queries",
            "7",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("hnsw_rs"), "{stdout}");
    let searches: Vec<&str> = stdout.lines().filter(|l| l.starts_with("search")).collect();
    assert_eq!(searches.len(), 1, "{stdout}");
    assert!(searches[0].contains("recall@10 1.0000"), "{stdout}");
    assert!(searches[0].contains("(7 queries)"), "{stdout}");
}

/// Runs `bench ann --k K` on the named files and checks it exits 1 with one error line that
/// names `file` and says `problem`, before measuring anything.
fn expect_rejected(
    dir: &Path,
    [base, queries, truth]: [&str; 3],
    k: &str,
    file: &str,
    problem: &str,
) {
    let out = bench_ann(dir, base, queries, truth, &["--k", k]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains(file) && line.contains(problem),
        "{file}, {problem}: {stderr}"
    );
    assert!(
        text(&out.stdout).is_empty(),
        "nothing measured: {}",
        text(&out.stdout)
    );
}

#[test]
fn bench_ann_rejects_inputs_that_do_not_fit_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_ann_inputs(d, 10);
    let mut ids = Vec::new();
    feedrank::snapshot::npy::write_i32_matrix(&mut ids, &ndarray::Array2::from_elem((40, 10), 800))
        .unwrap();
    std::fs::write(d.join("out_of_range.npy"), ids).unwrap();

    let files = ["base.npy", "queries.npy", "truth.npy"];
    // The inputs themselves are accepted.
    let out = bench_ann(
        d,
        files[0],
        files[1],
        files[2],
        &["--k", "10", "--engines", "exact"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let with_queries = ["base.npy", "queries8.npy", "truth.npy"];
    expect_rejected(d, with_queries, "10", "queries8.npy", "dimension 8");
    expect_rejected(d, files, "10,20", "truth.npy", "10 columns");
    let missing = ["absent.npy", "queries.npy", "truth.npy"];
    expect_rejected(d, missing, "10", "absent.npy", "cannot open");
    let out_of_range = ["base.npy", "queries.npy", "out_of_range.npy"];
    expect_rejected(d, out_of_range, "10", "out_of_range.npy", "id 800");
    // Float vectors given as the truth: the dtype is named.
    let float_truth = ["base.npy", "queries.npy", "base.npy"];
    expect_rejected(d, float_truth, "10", "base.npy", "int32");
}

/// Mean hit@k and MRR@k of fixed ranked lists per user over held-out `(user, tags)` lines,
/// computed the long way.
fn naive_metrics(
    lines: &[(String, Vec<String>)],
    ranked: impl Fn(&str) -> Vec<String>,
    k: usize,
) -> (f64, f64) {
    let (mut hits, mut rr) = (0.0, 0.0);
    for (user, tags) in lines {
        let list = ranked(user);
        for (rank, tag) in list.iter().take(k).enumerate() {
            if tags.contains(tag) {
                hits += 1.0;
                rr += 1.0 / (rank + 1) as f64;
                break;
            }
        }
    }
    (hits / lines.len() as f64, rr / lines.len() as f64)
}

/// Tags by count, most first, ties by name.
fn by_count(counts: &std::collections::HashMap<String, usize>) -> Vec<String> {
    let mut tags: Vec<(&String, &usize)> = counts.iter().collect();
    tags.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    tags.into_iter().map(|(t, _)| t.clone()).collect()
}

fn eval_hashtags(snap: &Path, held_out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "hashtags",
        "--snapshot",
        snap.to_str().unwrap(),
        "--valid",
        held_out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    feedrank(&args)
}

#[test]
fn eval_hashtags_scores_popularity_and_history_as_computed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    small_demo(&snap, "5");
    let snapshot = snapshot::load(&snap).unwrap();

    // Held-out lines: snapshot users with the tags they follow, and authors with the tags of
    // one of their posts; plus lines the evaluation must skip or normalise.
    let mut lines: Vec<(String, Vec<String>)> = Vec::new();
    for user in snapshot
        .users
        .iter()
        .filter(|u| !u.follows.is_empty())
        .take(30)
    {
        lines.push((user.id.clone(), user.follows.clone()));
    }
    for post in snapshot
        .posts
        .iter()
        .filter(|p| !p.hashtags.is_empty())
        .step_by(50)
    {
        lines.push((post.author.clone(), post.hashtags.clone()));
    }
    let mut file = String::new();
    for (user, tags) in &lines {
        let shown: Vec<String> = tags
            .iter()
            .map(|t| format!("#{}", t.to_uppercase()))
            .collect();
        file.push_str(&format!("some text\t{user}\t{}\n", shown.join("\t")));
    }
    file.push_str("no usable tag\tu_0001\t \n");
    let held_out = dir.path().join("valid.csv");
    std::fs::write(&held_out, file).unwrap();
    let lines: Vec<(String, Vec<String>)> = lines
        .into_iter()
        .map(|(u, tags)| {
            (
                u,
                tags.iter()
                    .map(|t| snapshot::normalise_hashtag(&t.to_uppercase()))
                    .collect(),
            )
        })
        .collect();

    let out = eval_hashtags(&snap, &held_out, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["posts"], lines.len());
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["k"], 10);

    let mut popular: std::collections::HashMap<String, usize> = Default::default();
    let mut own: std::collections::HashMap<&str, std::collections::HashMap<String, usize>> =
        Default::default();
    for post in &snapshot.posts {
        for tag in &post.hashtags {
            *popular.entry(tag.clone()).or_default() += 1;
            *own.entry(&post.author)
                .or_default()
                .entry(tag.clone())
                .or_default() += 1;
        }
    }
    let popularity = by_count(&popular);
    let history = |user: &str| {
        let mut list: Vec<String> = own.get(user).map(by_count).unwrap_or_default();
        list.truncate(10);
        list.extend(
            popularity
                .iter()
                .filter(|t| !list.contains(t))
                .cloned()
                .collect::<Vec<_>>(),
        );
        list
    };
    let close = |got: &serde_json::Value, want: (f64, f64)| {
        let (hit, mrr) = (got["hit"].as_f64().unwrap(), got["mrr"].as_f64().unwrap());
        (hit - want.0).abs() < 1e-9 && (mrr - want.1).abs() < 1e-9
    };
    let want = naive_metrics(&lines, |_| popularity.clone(), 10);
    assert!(
        close(&report["popularity"], want),
        "{} vs {want:?}",
        report["popularity"]
    );
    let want = naive_metrics(&lines, history, 10);
    assert!(
        close(&report["history"], want),
        "{} vs {want:?}",
        report["history"]
    );
    for method in ["cold", "warm"] {
        let hit = report[method]["hit"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&hit), "{method}: {hit}");
    }

    // A malformed line is named, and the exit status says so.
    std::fs::write(&held_out, "fine\tu_0001\tcats\nno tab at all\n").unwrap();
    let out = eval_hashtags(&snap, &held_out, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("valid.csv") && err.contains("line 2"), "{err}");
    let out = eval_hashtags(&snap, &held_out, &["--k", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("k: must be from 1 to 50"));
}

#[test]
fn serve_refuses_a_data_directory_whose_log_it_cannot_trust() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot");
    small_demo(&snapshot, "9");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let log = data.join("events.wal");
    std::fs::write(&log, b"not a log at all").unwrap();
    let (code, stderr) = serve_until_exit(&[
        "--snapshot",
        snapshot.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("events.wal"), "{stderr}");
    assert!(
        stderr.contains("cannot open the write-ahead log"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        b"not a log at all",
        "left as it was"
    );
}

#[test]
fn serve_rejects_live_limits_out_of_range_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[live]\nmax_users = 0\n").unwrap();
    let (code, stderr) = serve_until_exit(&["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("live.max_users"), "{stderr}");
}

/// A free port on 127.0.0.1 (bound and released: another process could take it meanwhile,
/// which only this test's start would notice).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `GET path` on a running service: the status line's code and the body.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, "")
}

/// [`http_get`] with extra header lines (each ending in CRLF).
fn http_get_with(addr: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((
        head.split_whitespace().nth(1)?.parse().ok()?,
        body.to_string(),
    ))
}

fn serving_version(addr: &str) -> Option<String> {
    let (status, body) = http_get(addr, "/readyz")?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| json["model_version"].as_str().unwrap().to_string())
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn operators_reload_by_command_by_sighup_and_by_the_current_pointer() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    small_demo(&models.join("a"), "5");
    small_demo(&models.join("b"), "6");
    let addr = free_addr();
    let token = "operator-token";
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedrank"))
        .args(["serve", "--snapshot", models.join("a").to_str().unwrap()])
        .args([
            "--addr",
            &addr,
            "--data-dir",
            root.path().join("data").to_str().unwrap(),
        ])
        .env("FEEDRANK_ADMIN_TOKEN", token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start feedrank serve");
    let reload = |args: &[&str], token: &str| {
        Command::new(env!("CARGO_BIN_EXE_feedrank"))
            .arg("reload")
            .args(args)
            .args(["--addr", &addr])
            .env("FEEDRANK_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    wait_for(|| serving_version(&addr).is_some(), "the first load");
    assert_eq!(serving_version(&addr).unwrap(), "demo-5");

    let out = reload(&["b"], token);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"model_version\":\"demo-6\""));
    assert_eq!(serving_version(&addr).unwrap(), "demo-6");
    for (args, token, says) in [
        (vec!["../a"], token, "invalid_path"),
        (vec!["a"], "wrong", "401"),
    ] {
        let out = reload(&args, token);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    let out = reload(&["--rollback"], token);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(serving_version(&addr).unwrap(), "demo-5");

    // The CURRENT pointer: written, then noticed within a few seconds.
    std::fs::write(models.join("CURRENT"), "b\n").unwrap();
    wait_for(
        || serving_version(&addr).as_deref() == Some("demo-6"),
        "CURRENT",
    );
    // SIGHUP reloads what CURRENT names even though it did not change (the poll would not):
    // `b` again, so the previous load is `b` too.
    let snapshots = || {
        let auth = format!("Authorization: Bearer {token}\r\n");
        let (status, body) = http_get_with(&addr, "/admin/snapshots", &auth).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    assert_eq!(snapshots()["previous"]["path"], "a");
    let pid = child.id().to_string();
    // The shell's own `kill`: no procps package needed.
    assert!(
        Command::new("sh")
            .args(["-c", &format!("kill -HUP {pid}")])
            .status()
            .unwrap()
            .success()
    );
    wait_for(|| snapshots()["previous"]["path"] == "b", "SIGHUP");
    assert_eq!(serving_version(&addr).unwrap(), "demo-6");
    assert!(child.try_wait().unwrap().is_none(), "still serving");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn snapshot_index_stores_the_users_graph_beside_the_posts_and_check_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let users = (feedrank::candidates::EXACT_USER_POOL + 100).to_string();
    let out = feedrank(&[
        "demo", "--out", dir_arg, "--posts", "300", "--users", &users, "--dim", "16",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = feedrank(&["snapshot", "check", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("stored user index none (serve builds the users' graph"),
        "{stdout}"
    );

    let out = feedrank(&["snapshot", "index", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("indexed 5,100 users in"), "{stdout}");
    assert!(dir.path().join("users.index").is_file());
    let out = feedrank(&["snapshot", "check", dir_arg]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("stored user index users.index matches (5,100 users)"),
        "{stdout}"
    );

    // Graph options the file was not built with: stale, and named.
    let config = dir.path().join("feedrank.toml");
    std::fs::write(&config, "[feed]\nhnsw_max_connections = 8\n").unwrap();
    let out = feedrank(&[
        "snapshot",
        "check",
        dir_arg,
        "--config",
        config.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("stored user index stale: users.index"),
        "{stdout}"
    );
}
