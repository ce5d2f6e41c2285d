//! A team: a small manager model splits "plan me a weekend in St Petersburg" into steps for its specialists,
//! the steps run as a task graph (independent ones in parallel), and a secretary writes one plan.
//!
//! ```text
//! cargo run --release --example 06_team -- [--model PATH] [--threads N] ["a request"]
//! ```

use clap::Parser;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::agent::{Plan, PlanStep, Team, TeamResults};
use slm_agents::prelude::*;
use slm_agents::run::RunEvent;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_REQUEST: &str = "Plan me a weekend in St Petersburg, flying from Tel Aviv";

/// A specialist's note.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Note {
    /// One or two sentences.
    #[schemars(length(max = 160))]
    note: String,
}

/// The team's answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct WeekendPlan {
    #[schemars(length(max = 60))]
    title: String,
    #[schemars(length(min = 1, max = 5), inner(length(max = 120)))]
    steps: Vec<String>,
}

/// The example's options.
#[derive(Parser)]
#[command(
    about = "A team: a small manager model splits a request into steps for its specialists, and a secretary writes the plan."
)]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, usize::from))]
    threads: usize,
    /// The request for the team.
    #[arg(default_value = DEFAULT_REQUEST)]
    request: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, threads, request } = Args::parse();
    let slm = LlamaModel::builder(&model_path).threads(threads).lanes(threads.max(1)).load()?;
    let specialist = |name: &str, description: &str, example: &str| {
        ModelSpecialist::builder(name)
            .description(description)
            .example(example)
            .model(slm.clone())
            .instructions(format!(
                "You are the {name} specialist of a travel agency: {description}. Answer with one practical note."
            ))
            .output::<Note>()
            .max_tokens(96)
            .build()
    };
    let secretary = ModelSpecialist::builder("secretary")
        .model(slm.clone())
        .instructions("You are the secretary of a travel agency. From the request and the specialists' results, write a short weekend plan.")
        .input::<TeamResults>()
        .output::<WeekendPlan>()
        .max_tokens(240)
        .build()?;
    let step = |s: &str, t: &str, needs: Vec<usize>| PlanStep { specialist: s.into(), task: t.into(), needs };
    let team = Team::builder("travel agency")
        .manager(slm.clone())
        .member(specialist("flights", "finds flights between cities", "a flight from Paris to Rome on Friday")?)
        .member(specialist("hotels", "finds hotels in a city", "a hotel in Berlin for two nights")?)
        .member(specialist("guide", "suggests sights to visit", "what to see in Lisbon in one day")?)
        .plan_example(
            "Plan two days in Rome from Paris",
            Plan {
                steps: vec![
                    step("flights", "a flight from Paris to Rome on Saturday morning", vec![]),
                    step("hotels", "a hotel in central Rome for one night", vec![]),
                    step("guide", "the main sights of Rome for two days", vec![]),
                ],
            },
        )
        .composer(secretary)
        .build()?;

    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    eprintln!("request: {request}");
    let started = std::time::Instant::now();
    let plan = futures::executor::block_on(team.run(request, &ctx))?;
    let took = started.elapsed();
    for event in events.events() {
        if let RunEvent::ModelCall(m) = event {
            let u = m.usage.unwrap_or_default();
            eprintln!(
                "[{:<21}] {:>4} prompt tokens ({:>4} cached) {:>3} generated {:>6.0} ms  {}",
                m.specialist,
                u.prompt_tokens,
                u.cached_prompt_tokens,
                u.completion_tokens,
                m.latency.as_secs_f64() * 1e3,
                m.output.unwrap_or_default()
            );
        }
    }
    println!("{}", serde_json::to_string_pretty(&plan)?);
    eprintln!("total {:.1} s", took.as_secs_f64());
    Ok(())
}
