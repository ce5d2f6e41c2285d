//! The seed scenario: "Plan me a weekend in St Petersburg", planned by a team of small specialists.
//!
//! ```text
//! cargo run --release --example trip_planner -- [REQUEST] [--model PATH] [--threads N]
//!     [--llm URL [--llm-model NAME]] [--ledger PATH] [--svg PATH] [--mermaid] [--baseline | --compare]
//!     [--stream-overhead N]
//! ```
//!
//! A router sends trip requests to the `trip` team and anything else to an open-question agent: the large
//! model at `--llm` (any OpenAI-compatible endpoint: llama.cpp server, vLLM, a hosted API), else the small
//! model. In the team a small manager model splits the request; the flights, hotels and guide specialists call
//! their tools over the bundled data in `examples/data` in parallel; the secretary checks their picks against
//! the data and writes the plan. Then the ledger's report: calls, tokens, time and cost per specialist, against
//! what the same calls would cost on a large model.
//!
//! The progress shown while it runs comes from the graph's update stream (`Graph::run_stream`): each node as
//! it starts, each model and tool call as it finishes, and on a terminal the text of the specialist that is
//! writing. `--stream-overhead N` measures what the stream costs: the request run N times plainly and N times
//! as a stream, and the ratio of the median wall times.
//!
//! `--baseline` runs with the prefix cache and parallelism off (one sequence at a time); `--compare` runs
//! both and prints the ratio of their wall times, and a fresh model's first request with each fast-forward
//! mode (`--fast-forward forced|confirmed`: the tokens the grammars force decoded with the token before them)
//! over the same without.
//!
//! `RUST_LOG=slm_agents=debug` (or `info`) shows the crate's own log on stderr: lanes started, the grammar
//! engine set up, thread changes under CPU contention.

mod trip;

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slm_agents::graph::Graph;
use slm_agents::ledger::{CostModel, JsonlLedger, Price, Report};
use slm_agents::model::{FastForward, RemoteModel};
use slm_agents::prelude::*;
use slm_agents::run::{Outcome, RunEvent, RunUpdate};
use std::io::IsTerminal;
use trip::{City, Planner, Reply, TripData};

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_REQUEST: &str = "Plan me a weekend in St Petersburg";
/// A large hosted model's list price per million tokens (input, output), in USD: what the paper compares with.
const LARGE_MODEL_PRICE: (f64, f64) = (2.50, 10.00);
/// A laptop's cost per hour: its price spread over three years of working hours, plus power.
const LAPTOP_PER_HOUR: f64 = 0.20;

/// The example's options.
#[derive(Clone, Parser)]
#[command(about = "Plans a trip with a team of small specialists on one local model, then prints the ledger's report.")]
struct Options {
    /// The request.
    #[arg(default_value = DEFAULT_REQUEST)]
    request: String,
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, usize::from))]
    threads: usize,
    /// Lanes (contexts) of the model (default: the engine's choice).
    #[arg(long)]
    lanes: Option<usize>,
    /// The large model's OpenAI-compatible endpoint, for open questions (default: the small model answers).
    #[arg(long, env = "SLM_LLM_URL")]
    llm: Option<String>,
    /// The large model's name at that endpoint.
    #[arg(long, default_value = "default", requires = "llm")]
    llm_model: String,
    /// Appends the run's ledger to this JSON Lines file.
    #[arg(long)]
    ledger: Option<String>,
    /// Writes the cost chart as SVG to this file.
    #[arg(long)]
    svg: Option<String>,
    /// Prints the team's graph as a Mermaid diagram.
    #[arg(long)]
    mermaid: bool,
    /// Runs with the prefix cache and parallelism off (one sequence at a time).
    #[arg(long, conflicts_with = "compare")]
    baseline: bool,
    /// Runs with and without them and prints the ratio of their wall times.
    #[arg(long)]
    compare: bool,
    /// How the tokens the grammars force are decoded: off, confirmed (a draft the model confirms) or forced.
    #[arg(long, default_value = "off")]
    fast_forward: FastForward,
    /// Measures the update stream's cost: runs the request N times plainly and N times as a stream.
    #[arg(long, value_name = "N")]
    stream_overhead: Option<usize>,
}

/// Shows the run's progress on stderr from its update stream: nodes as they start, each model call and tool
/// call as it finishes, and (on a terminal) the text of the specialist that is writing, as it writes.
struct Progress {
    started: Instant,
    terminal: bool,
    /// The call whose text the status line shows, and that text.
    writing: Option<(u64, String, String)>,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self { started, terminal: std::io::stderr().is_terminal(), writing: None }
    }

    fn line(&mut self, text: String) {
        if self.terminal && self.writing.take().is_some() {
            eprint!("\r\x1b[2K");
        }
        eprintln!("  {:5.2}s  {text}", self.started.elapsed().as_secs_f64());
    }

    fn show(&mut self, update: RunUpdate<Reply>) {
        match update {
            RunUpdate::NodeStarted { ids } => self.line(format!("> {}", ids.node.unwrap_or_default())),
            RunUpdate::Token { call, specialist, text } if self.terminal => {
                let writing = self.writing.get_or_insert_with(|| (call, specialist.clone(), String::new()));
                if writing.0 != call {
                    *writing = (call, specialist, String::new());
                }
                writing.2.push_str(&text);
                let shown: String = writing.2.chars().rev().take(70).collect::<Vec<_>>().into_iter().rev().collect();
                eprint!("\r\x1b[2K  {:>6}  {:<14} writing {}", "", writing.1, shown.replace('\n', " "));
            }
            RunUpdate::ModelCallFinished(m) => {
                let u = m.usage.unwrap_or_default();
                let what = m.tool_calls.first().map_or_else(|| "answer".to_owned(), |c| format!("calls {}", c.tool));
                self.line(format!(
                    "{:<14} {what:<22} {:>4} prompt tokens ({:>4} cached), {:>3} generated{}",
                    m.specialist,
                    u.prompt_tokens,
                    u.cached_prompt_tokens,
                    u.completion_tokens,
                    m.escalation.map(|why| format!("  [escalated: {why}]")).unwrap_or_default()
                ));
            }
            RunUpdate::ToolCallFinished(c) => {
                let status = match &c.outcome {
                    Outcome::Succeeded => "ok".to_owned(),
                    Outcome::Failed { error } => format!("failed: {error}"),
                };
                self.line(format!("{:<14} {} {} -> {status}", c.specialist, c.tool, c.arguments));
            }
            _ => {}
        }
    }
}

/// A request the planner serves before the measured one in `--compare`, as a long-running agent would have.
const WARM_UP_REQUEST: &str = "Plan me a weekend in Rome";

fn load(o: &Options, baseline: bool) -> Result<LlamaModel, Box<dyn std::error::Error>> {
    let builder = LlamaModel::builder(&o.model).threads(o.threads).fast_forward(o.fast_forward);
    let builder = if baseline {
        // One sequence at a time, every prompt decoded in full.
        builder.lanes(1).slots(1).prefix_cache(false)
    } else {
        // On 2 cores one lane of 2 threads that batches the specialists' requests did best (measured: about
        // 20% faster here than 2 lanes of 1 thread, which pay for the sequential steps).
        builder.lanes(o.lanes.unwrap_or(1).max(1))
    };
    let started = Instant::now();
    let slm = builder.load()?;
    eprintln!(
        "loaded {} in {:.2}s ({})",
        slm.name(),
        started.elapsed().as_secs_f64(),
        if baseline { "baseline: no prefix cache, one sequence at a time" } else { "prefix cache on, batched" }
    );
    Ok(slm)
}

/// A served request: the reply, the wall time and the run's events.
type Served = (slm_agents::Result<Reply>, Duration, Vec<RunEvent>);

/// How a request is run: shown live from the update stream, streamed without showing it, or plainly.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Shown,
    Streamed,
    Plain,
}

/// Runs `request` on `graph`.
fn run(
    graph: &Graph<String, Reply>,
    request: &str,
    ledger: Option<&str>,
    mode: Mode,
) -> Result<Served, Box<dyn std::error::Error>> {
    let events = Arc::new(MemoryRecorder::default());
    let started = Instant::now();
    let mut ctx = RunContext::new().with_recorder(events.clone());
    if let Some(path) = ledger {
        ctx = ctx.with_recorder(Arc::new(JsonlLedger::create(path)?));
    }
    let reply = match mode {
        Mode::Plain => futures::executor::block_on(graph.run(request.to_owned(), &ctx)),
        Mode::Streamed => futures::executor::block_on(graph.run_stream(request.to_owned(), &ctx).for_each_update(drop)),
        Mode::Shown => {
            let mut progress = Progress::new(started);
            let updates = graph.run_stream(request.to_owned(), &ctx);
            futures::executor::block_on(updates.for_each_update(|u| progress.show(u)))
        }
    };
    Ok((reply, started.elapsed(), events.events()))
}

/// The update stream's cost: the request run plainly and as a stream, alternately, `rounds` times each.
fn stream_overhead(
    graph: &Graph<String, Reply>,
    request: &str,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    run(graph, request, None, Mode::Plain)?.0.map_err(|e| chain(&e))?;
    let (mut plain, mut streamed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so that neither always runs on a warmer cache.
        let order = if round % 2 == 0 { [Mode::Plain, Mode::Streamed] } else { [Mode::Streamed, Mode::Plain] };
        for mode in order {
            let (reply, wall, _) = run(graph, request, None, mode)?;
            reply.map_err(|e| chain(&e))?;
            if mode == Mode::Plain { &mut plain } else { &mut streamed }.push(wall.as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, s) = (median(&mut plain), median(&mut streamed));
    println!("stream overhead, median of {rounds} runs each (tokens on):");
    println!("  {p:.3}s  graph.run");
    println!("  {s:.3}s  graph.run_stream, every update read: ratio {:.3}", s / p);
    Ok(())
}

/// An error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = Options::parse();
    // `RUST_LOG=slm_agents=debug` shows the engine's own log (lanes, grammar set-up, each request's figures).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let data = Arc::new(TripData::load(&trip::data_dir()).map_err(|e| e.to_string())?);
    let (input, output) = LARGE_MODEL_PRICE;
    let large = Price::PerMillionTokens { input, output };
    let mut costs = CostModel::new()
        .default_price(Price::PerHour(LAPTOP_PER_HOUR))
        .baseline(format!("a large model at {input:.2} / {output:.2} USD per million input / output tokens"), large);
    let llm: Option<Arc<dyn LanguageModel>> = match &o.llm {
        Some(url) => {
            let remote = RemoteModel::builder(url, &o.llm_model).build()?;
            costs = costs.price(remote.name(), large);
            Some(Arc::new(remote))
        }
        None => None,
    };
    let planner = Planner { data, home: City::TelAviv, llm };

    let slm = load(&o, o.baseline)?;
    let graph = planner.graph(&slm)?;
    if o.mermaid {
        println!("```mermaid\n{}```\n", graph.to_mermaid());
    }
    if let Some(rounds) = o.stream_overhead {
        return stream_overhead(&graph, &o.request, rounds.max(1));
    }
    eprintln!("request: {}", o.request);
    let (reply, wall, events) = run(&graph, &o.request, o.ledger.as_deref(), Mode::Shown)?;
    let report = Report::from_events(&events, &costs);
    println!("{}", reply.as_ref().map_err(|e| format!("the planner failed: {}", chain(e)))?);
    println!("{report}\n");
    let t = &report.total;
    println!(
        "wall time {:.2}s; {} model calls, {} tool calls, {} prompt tokens ({} cached), {} generated",
        wall.as_secs_f64(),
        t.calls,
        t.tool_calls,
        t.prompt_tokens,
        t.cached_prompt_tokens,
        t.completion_tokens
    );
    if let Some(path) = &o.svg {
        std::fs::write(path, report.to_svg())?;
        println!("cost chart written to {path}");
    }
    if let Some(path) = &o.ledger {
        println!("ledger appended to {path}");
    }
    if o.compare && !o.baseline {
        drop(graph);
        drop(slm);
        // Each set-up serves one other request first, as a running agent would have; then the measured one.
        let mut walls = Vec::new();
        for (baseline, threads) in [(false, o.threads), (true, o.threads), (true, 1)] {
            let slm = load(&Options { threads, ..o.clone() }, baseline)?;
            let graph = planner.graph(&slm)?;
            run(&graph, WARM_UP_REQUEST, None, Mode::Plain)?.0.map_err(|e| chain(&e))?;
            let (reply, wall, _) = run(&graph, &o.request, None, Mode::Plain)?;
            reply.map_err(|e| chain(&e))?;
            walls.push(wall.as_secs_f64());
        }
        // Fast-forward: a fresh model's first request in each mode, in turn, twice each.
        let modes = [FastForward::Forced, FastForward::Confirmed, FastForward::Off];
        let mut first = [0.0f64; 3];
        for round in 0..2 {
            for (i, &mode) in modes.iter().enumerate() {
                let slm = load(&Options { fast_forward: mode, ..o.clone() }, false)?;
                let graph = planner.graph(&slm)?;
                let (reply, wall, events) = run(&graph, &o.request, None, Mode::Plain)?;
                reply.map_err(|e| chain(&e))?;
                let (steps, forced) = events.iter().fold((0, 0), |(s, f), e| match e {
                    RunEvent::ModelCall(m) => {
                        let u = m.usage.unwrap_or_default();
                        (s + u.completion_tokens - u.forced_tokens, f + u.forced_tokens)
                    }
                    _ => (s, f),
                });
                eprintln!(
                    "  first request, fast-forward {mode:?} (round {round}): {:.2}s, {steps} decode steps, {forced} tokens forced",
                    wall.as_secs_f64()
                );
                first[i] += wall.as_secs_f64() / 2.0;
            }
        }
        let (ours, no_cache, nothing) = (walls[0], walls[1], walls[2]);
        println!("compare, after serving one other request (first request: {:.2}s):", wall.as_secs_f64());
        println!("  {ours:.2}s  prefix cache on, requests batched, {} threads", o.threads);
        println!(
            "  {no_cache:.2}s  no prefix cache, one sequence at a time, {} threads: ratio {:.2}",
            o.threads,
            ours / no_cache
        );
        println!("  {nothing:.2}s  no prefix cache, one sequence at a time, 1 thread: ratio {:.2}", ours / nothing);
        println!("first request of a fresh model, mean of 2 each:");
        println!("  {:.2}s  fast-forward off", first[2]);
        println!("  {:.2}s  forced tokens: ratio {:.2}", first[0], first[0] / first[2]);
        println!("  {:.2}s  confirmed drafts: ratio {:.2}", first[1], first[1] / first[2]);
    }
    Ok(())
}
