//! Without the host's request, llama.cpp says nothing, not even through `tracing`.

mod support;

use std::sync::atomic::Ordering;

use slm_agents::model::{LanguageModel, LlamaModel, Request};

#[test]
fn native_logs_are_dropped_by_default() {
    let count = support::count_native_log_lines();
    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    futures::executor::block_on(model.complete(Request::raw("Hello").with_max_tokens(2))).unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 0);
}
