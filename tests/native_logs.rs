//! llama.cpp's logs reach `tracing` when the host asks (a process-wide choice, made before the first load).

mod support;

use std::sync::atomic::Ordering;

use slm_agents::model::LlamaModel;

#[test]
fn native_logs_are_silent_by_default_and_forwarded_on_request() {
    let count = support::count_native_log_lines();

    // This test binary is its own process: nothing has loaded a model yet, so the request takes effect.
    assert!(LlamaModel::enable_native_logs());
    let _model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    let forwarded = count.load(Ordering::Relaxed);
    assert!(forwarded > 100, "llama.cpp logs a few thousand lines on load; got {forwarded}");

    // Too late now: the choice is fixed at the first load.
    assert!(!LlamaModel::enable_native_logs());
}
