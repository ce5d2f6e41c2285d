//! A task graph: two specialists run in parallel (fan-out) and a third writes from both (fan-in).
//!
//! ```text
//! cargo run --release --example 04_task_graph -- [--model PATH] [--threads N] ["a trip request"]
//! ```
//!
//! Prints the graph as Mermaid (paste it into Markdown to see it), the answer, and the run report. The model
//! runs on two lanes, so the two parallel specialists really decode at the same time.

use clap::Parser;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::prelude::*;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_TASK: &str = "A weekend in St Petersburg, flying from Tel Aviv on Friday, two travellers";

/// What the flights and hotels specialists answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Advice {
    /// One or two sentences.
    #[schemars(length(max = 160))]
    advice: String,
}

/// What the secretary answers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Plan {
    /// A title for the trip.
    #[schemars(length(max = 60))]
    title: String,
    /// The plan, step by step.
    #[schemars(length(min = 1, max = 4), inner(length(max = 120)))]
    steps: Vec<String>,
}

/// What the secretary is given: the request and both pieces of advice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Notes {
    request: String,
    flights: String,
    hotels: String,
}

/// The example's options.
#[derive(Parser)]
#[command(about = "A task graph: two specialists run in parallel (fan-out) and a third writes from both (fan-in).")]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, usize::from))]
    threads: usize,
    /// The task for the graph.
    #[arg(default_value = DEFAULT_TASK)]
    task: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, threads, task } = Args::parse();
    // One single-thread lane per core: the parallel branches decode at the same time.
    let slm = LlamaModel::builder(&model_path).threads(threads).lanes(threads.max(1)).load()?;

    let advisor = |name: &str, job: &str| {
        ModelSpecialist::builder(name)
            .description(format!("Advises on {job}"))
            .model(slm.clone())
            .instructions(format!("You are the {job} expert of a travel agency. Give one short, practical piece of advice about {job} for the trip."))
            .output::<Advice>()
            .max_tokens(96)
            .build()
    };
    let secretary = ModelSpecialist::builder("secretary")
        .description("Writes the trip plan")
        .model(slm.clone())
        .instructions(
            "You are the secretary of a travel agency. Write a short plan from the request and the experts' notes.",
        )
        .input::<Notes>()
        .output::<Plan>()
        .max_tokens(200)
        .build()?;

    let mut g = Graph::builder::<String>();
    let request = g.input();
    let flights = g.add(advisor("flights", "flights")?).after(&request);
    let hotels = g.add(advisor("hotels", "hotels")?).after(&request);
    let notes = g
        .add(|(request, flights, hotels): (String, Advice, Advice)| async move {
            Ok::<_, slm_agents::Error>(Notes { request, flights: flights.advice, hotels: hotels.advice })
        })
        .named("collect notes")
        .after((&request, &flights, &hotels));
    let plan = g.add(secretary).after(&notes);
    let graph = g.output(plan).build()?;

    println!("```mermaid\n{}```\n", graph.to_mermaid());
    eprintln!("task: {task}");
    let (plan, report) = futures::executor::block_on(graph.run_with_report(task, &RunContext::new()));
    let plan = plan?;
    println!("{}\n", serde_json::to_string_pretty(&plan)?);
    println!("{report}");
    Ok(())
}
