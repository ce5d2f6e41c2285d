//! Without the host's request, llama.cpp says nothing, not even through `tracing`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slm_agents::model::{LanguageModel, LlamaModel, Request};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

struct CountLlamaEvents(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> Layer<S> for CountLlamaEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "llama-cpp-2" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn native_logs_are_dropped_by_default() {
    let count = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountLlamaEvents(Arc::clone(&count)));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    futures::executor::block_on(model.complete(Request::raw("Hello").with_max_tokens(2))).unwrap();
    assert_eq!(count.load(Ordering::Relaxed), 0);
}
