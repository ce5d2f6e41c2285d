//! llama.cpp's logs reach `tracing` when the host asks (a process-wide choice, made before the first load).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slm_agents::model::LlamaModel;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Counts llama.cpp's own log lines (target `llama-cpp-2`; the Rust wrapper's events use `llama_cpp_2::...`).
struct CountLlamaEvents(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountLlamaEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "llama-cpp-2" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn native_logs_are_silent_by_default_and_forwarded_on_request() {
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountLlamaEvents(Arc::clone(&count)));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // This test binary is its own process: nothing has loaded a model yet, so the request takes effect.
    assert!(LlamaModel::enable_native_logs());
    let _model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    let forwarded = count.load(Ordering::Relaxed);
    assert!(forwarded > 100, "llama.cpp logs a few thousand lines on load; got {forwarded}");

    // Too late now: the choice is fixed at the first load.
    assert!(!LlamaModel::enable_native_logs());
}
