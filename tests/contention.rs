//! A lane with two threads beside busy processes: it notices them, goes on with one thread, and the requests in
//! flight carry on from where they were (their state copied to the new context): a long generation and a
//! constrained one finish whole. With adaptation off, the lane keeps its threads.

mod support;

use std::process::{Child, Command};
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::model::FinishReason;
use slm_agents::prelude::*;
use tracing_subscriber::layer::SubscriberExt;

/// Busy processes, one per core, stopped when dropped.
struct Busy(Vec<Child>);

impl Busy {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self((0..cores).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()).collect())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The messages of the events logged so far, with the name of the thread that logged each (a lane's thread is
/// named after its model).
static MESSAGES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Visit<'a>(&'a mut String);
        impl tracing::field::Visit for Visit<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0.push_str(&format!("{value:?}"));
                }
            }
        }
        let mut text = String::new();
        event.record(&mut Visit(&mut text));
        let thread = std::thread::current().name().unwrap_or_default().to_owned();
        MESSAGES.lock().unwrap().push((thread, text));
    }
}

/// The lane switches of the model named `name`.
fn switches(name: &str) -> usize {
    MESSAGES.lock().unwrap().iter().filter(|(t, m)| t.contains(name) && m.contains("CPU contention changed")).count()
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Story {
    #[schemars(length(max = 60))]
    title: String,
    #[schemars(length(max = 8), inner(length(max = 40)))]
    characters: Vec<String>,
}

fn story() -> Request {
    Request::chat([Message::user("Write a long story about a lighthouse keeper and a storm.")]).with_max_tokens(400)
}

#[test]
fn a_lane_beside_busy_processes_goes_on_with_fewer_threads_and_its_requests_finish() {
    // Lanes log from their own threads: the capture is global.
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture)).unwrap();

    let model = LlamaModel::builder(support::smollm2_path()).name("adapting").threads(2).load().unwrap();
    let busy = Busy::start();
    // A long story and, beside it, a constrained object: both in flight when the lane changes its context.
    let (long, typed) = futures::executor::block_on(async {
        futures::join!(
            model.complete(story()),
            model.generate_request::<Story>(
                Request::chat([Message::user("Give the title and characters of a story about a lighthouse.")])
                    .with_max_tokens(200)
            )
        )
    });
    drop(busy);
    let long = long.unwrap();
    assert!(switches("adapting") >= 1, "the lane never changed its threads: {:?}", MESSAGES.lock().unwrap());
    assert!(long.usage.completion_tokens > 100, "{:?}", long.usage);
    assert!(matches!(long.finish_reason, FinishReason::MaxTokens | FinishReason::EndOfText));
    let typed = typed.expect("the constrained output still parses");
    assert!(!typed.value.title.is_empty());
    drop(model);

    // With adaptation off, the lane keeps its threads.
    let model =
        LlamaModel::builder(support::smollm2_path()).name("fixed").threads(2).adapt_threads(false).load().unwrap();
    let busy = Busy::start();
    let c = futures::executor::block_on(model.complete(story().with_max_tokens(120))).unwrap();
    drop(busy);
    assert!(c.usage.completion_tokens > 50);
    assert_eq!(switches("fixed"), 0);
}
