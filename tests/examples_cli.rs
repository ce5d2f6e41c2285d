//! The examples' command lines: `--help` lists every option with its default, a bad option exits with status
//! 2, and the model path can come from `SLM_MODEL`. Runs the example binaries `cargo test` builds.

use std::path::PathBuf;
use std::process::Command;

/// The examples with a model option, as cargo names their binaries.
const EXAMPLES: [&str; 12] = [
    "01_hello",
    "02_typed_output",
    "03_tools",
    "04_task_graph",
    "05_router",
    "06_team",
    "trip_planner",
    "calendar",
    "convert",
    "bfcl",
    "perf_report",
    "otel",
];

/// `target/<profile>/examples/<name>`, beside this test's own binary in `target/<profile>/deps`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

#[test]
fn help_lists_the_defaults_and_a_bad_option_exits_with_2() {
    for name in EXAMPLES {
        let path = example(name);
        assert!(path.exists(), "{} is not built", path.display());
        let help = Command::new(&path).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {help:?}");
        assert!(text.contains("Usage:") && text.contains("[default: "), "{name} --help:\n{text}");
        assert!(text.contains("[env: SLM_MODEL="), "{name}: the model comes from SLM_MODEL too:\n{text}");
        let bad = Command::new(&path).arg("--no-such-option").output().unwrap();
        assert_eq!(bad.status.code(), Some(2), "{name}: {bad:?}");
        assert!(String::from_utf8_lossy(&bad.stderr).contains("--no-such-option"));
    }
}

#[test]
fn the_model_path_comes_from_slm_model() {
    let out = Command::new(example("01_hello")).env("SLM_MODEL", "/nonexistent/from-env.gguf").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/from-env.gguf"), "{err}");
}
