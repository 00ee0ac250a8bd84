//! The `feedrank` binary: `demo`, `snapshot check`, `snapshot index`, and the bundled demo world.

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

#[test]
fn check_rejects_unknown_scoring_keys() {
    let dir = tempfile::tempdir().unwrap();
    small_demo(dir.path(), "6");
    let path = dir.path().join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["scoring"] = serde_json::json!({"save_wieght": 2.0});
    std::fs::write(&path, manifest.to_string()).unwrap();
    let out = feedrank(&["snapshot", "check", dir.path().to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("manifest.json: field `scoring.save_wieght`"),
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
