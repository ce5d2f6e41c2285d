//! "Add a meeting to my calendar": one specialist with a calendar tool over a JSON file.
//!
//! ```text
//! cargo run --release --example calendar -- ["a request"] [--store PATH] [--model PATH] [--threads N]
//! ```
//!
//! With a request, it is done on the store (default: `slm-agents-calendar.json` in the temporary directory).
//! Without one, a short demo runs on a fresh store: two meetings added, a day listed, one meeting moved, and
//! an ambiguous request ("add a meeting to my calendar": which day? what time?) answered with what is missing
//! instead of a guess.

mod calendar;

use clap::Parser;
use std::sync::Arc;
use std::time::Instant;

use calendar::{assistant, Store};
use slm_agents::prelude::*;
use slm_agents::tool::ToolError;
use slm_agents::Error;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEMO: [&str; 5] = [
    "Add a meeting with Dana on Tuesday at 10:00",
    "Add a meeting with the design team on Tuesday at 14:00",
    "List my meetings on Tuesday",
    "Move the meeting with Dana to Wednesday at 11:00",
    "Add a meeting to my calendar",
];

/// The example's options.
#[derive(Parser)]
#[command(
    about = "A calendar assistant: one specialist adds, lists and moves meetings in a JSON file, asking when a request lacks what it needs."
)]
struct Args {
    /// The calendar file (default: slm-agents-calendar.json in the temporary directory).
    #[arg(long)]
    store: Option<String>,
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, usize::from))]
    threads: usize,
    /// Requests (default: a demonstration on an empty calendar).
    requests: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, store: store_path, threads, mut requests } = Args::parse();
    let demo = requests.is_empty();
    let store_path = store_path.map_or_else(|| std::env::temp_dir().join("slm-agents-calendar.json"), Into::into);
    if demo {
        // The demo starts from an empty calendar.
        let _ = std::fs::remove_file(&store_path);
        requests = DEMO.iter().map(|r| (*r).to_owned()).collect();
    }
    let store = Arc::new(Store::open(&store_path)?);
    let model = LlamaModel::builder(&model_path).threads(threads).load()?;
    println!("calendar: {}", store_path.display());

    for request in &requests {
        println!("\n> {request}");
        let started = Instant::now();
        let specialist = assistant(&model, &store, request)?;
        let events = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(events.clone());
        let answer = futures::executor::block_on(specialist.run(request.clone(), &ctx));
        let ms = started.elapsed().as_millis();
        for call in events.tool_calls() {
            println!("  (the model called {} {})", call.tool, call.arguments);
        }
        match answer {
            Ok(confirmation) => println!("{}  ({ms} ms)", confirmation.message),
            // The tool refused: the request does not say enough. Its message says what is missing.
            Err(Error::Tool { source: ToolError::Failed(why), .. }) => println!("I need more detail: {why}  ({ms} ms)"),
            Err(e) => println!("failed: {e}  ({ms} ms)"),
        }
    }
    println!("\nthe calendar now:");
    for m in store.meetings() {
        println!("  {:?} {}  {}", m.day, m.start, m.title);
    }
    Ok(())
}
