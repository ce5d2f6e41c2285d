//! Measures the engine against baselines taken in the same run, and prints one ratio per line.
//!
//! ```text
//! cargo run --release --example perf_report -- [--model PATH] [--threads N] [--rounds N]
//! ```
//!
//! Printed to stdout (figures and details go to stderr):
//! - `decode_ratio_vs_raw <x>`: SDK decode tokens/s over a raw llama-cpp-2 decode loop (same model, prompt,
//!   threads, greedy). The raw loop runs in a child process, because llama.cpp's backend may be initialised only
//!   once per process; rounds alternate between the two so machine noise hits both alike. Target ≥ 0.98.
//! - `constrained_ratio <x>`: SDK tokens/s under a JSON-Schema constraint over unconstrained tokens/s (same
//!   request), with forced tokens (`FastForward::Forced`: the tokens the grammar forces are decoded with the
//!   token before them). Target ≥ 1.10. Also printed: `constrained_ratio_confirmed` (`FastForward::Confirmed`:
//!   a draft the model confirms, with logits at each position) and `constrained_ratio_without_fast_forward`.
//! - `tool_call_decode_steps_ratio <x>`: decode steps of a specialist's tool calls (4 typical requests, the
//!   first turn) with confirmed drafts over every token decoded. Target ≤ 0.7. `fast_forward_outputs_agree
//!   n/m`: of those calls and the meeting object, how many came out the same with confirmed drafts as with
//!   every token decoded (all, unless two tokens are nearly tied: a draft token's logits come from a batch
//!   of several); `forced_outputs_agree n/m` the same with forced tokens.
//! - `contention_slowdown <x>`: 4 specialist turns at once on a model with all the machine's threads, beside
//!   one busy process (a child spinning one thread) over alone. Target ≤ 2.5 (a fair share is about 2).
//!   `contention_slowdown_wide`: the same beside a process that spins a thread per core.
//!   `--contention-without-adapting` also prints `contention_slowdown_without_adapting`, the same with the
//!   lane's thread adaptation off (`LlamaModelBuilder::adapt_threads(false)`); `--contention-only` prints
//!   just these figures, with and without adapting.
//! - `prefix_ttft_ratio <x>`: time to first token of a request whose ~300-token specialist prompt is cached
//!   (warm) over one whose prompt is not (cold). Target ≤ 0.12.
//! - `concurrent_4_ratio <x>`: aggregate tokens/s of 4 concurrent requests over the same 4 run one after the
//!   other, on a model with one single-thread lane per core. Target ≥ 1.7. Also printed:
//!   `concurrent_4_ratio_vs_one_lane` (the same concurrent run over 4 sequential requests on one lane with all
//!   threads, the best single-request set-up) and `concurrent_4_ratio_batched_one_lane` (4 requests batched in
//!   one lane with all threads, over sequential on it).
//! - `memory_8_specialists_ratio <x>`: resident memory of a process that built and ran 8 `ModelSpecialist`s
//!   (8 different ~300-token instructions) on one model over one that ran 1. Target ≤ 1.3. Also printed:
//!   `memory_8_models_ratio`, the same with a model loaded per specialist (what sharing saves).
//!   Memory is measured in child processes, so each figure starts from a fresh process.

use clap::Parser;
use std::num::NonZeroU32;
use std::process::Command;
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::model::FastForward;
use slm_agents::prelude::*;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT: &str =
    "<|im_start|>user\nWrite a long story about a lighthouse keeper and a storm.<|im_end|>\n<|im_start|>assistant\n";
const DECODE_TOKENS: u32 = 256;

/// The example's options.
#[derive(Parser)]
#[command(about = "Measures the engine against a raw llama-cpp-2 decode loop on the same model and prints ratios.")]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Rounds of each measurement (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Internal: run the raw decode loop in this process and print its figures.
    #[arg(long, hide = true)]
    raw_child: bool,
    /// Internal: measure the memory of N specialists on one model.
    #[arg(long, hide = true)]
    memory_child: Option<usize>,
    /// Internal: measure the memory of N specialists each with its own model.
    #[arg(long, hide = true)]
    memory_child_separate: Option<usize>,
    /// Internal: spin on N threads until killed (the competing process of `contention_slowdown`).
    #[arg(long, hide = true)]
    busy_child: Option<usize>,
    /// Also measure `contention_slowdown` with thread adaptation off (slow: minutes).
    #[arg(long)]
    contention_without_adapting: bool,
    /// Measure only `contention_slowdown`, with and without thread adaptation.
    #[arg(long)]
    contention_only: bool,
}

impl Args {
    fn memory_child_job(&self) -> Option<(usize, bool)> {
        self.memory_child.map(|n| (n, false)).or(self.memory_child_separate.map(|n| (n, true)))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(threads) = args.busy_child {
        let spin = || {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        };
        for _ in 1..threads {
            std::thread::spawn(spin);
        }
        spin();
    }
    if args.contention_only {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
        let wide = std::thread::available_parallelism().map_or(2, usize::from);
        println!("contention_slowdown {:.3}", contention(&args, true, 1)?);
        println!("contention_slowdown_wide {:.3}", contention(&args, true, wide)?);
        println!("contention_slowdown_without_adapting {:.3}", contention(&args, false, 1)?);
        println!("contention_slowdown_wide_without_adapting {:.3}", contention(&args, false, wide)?);
        return Ok(());
    }
    if args.raw_child {
        let (tokens, tps) = raw_decode(&args)?;
        println!("{tokens} {tps}");
        return Ok(());
    }
    if let Some((specialists, separate)) = args.memory_child_job() {
        println!("{}", memory_child(&args, specialists, separate)?);
        return Ok(());
    }
    // Forced tokens, as `constrained_ratio` measures it; the other modes in `fast_forward` below.
    let model =
        LlamaModel::builder(&args.model).threads(args.threads).slots(1).fast_forward(FastForward::Forced).load()?;
    eprintln!("model {} | threads {} | rounds {}", model.name(), args.threads, args.rounds);

    // Warm up: first requests build the grammar engine and touch the weights.
    futures::executor::block_on(async {
        model.complete(Request::raw(PROMPT).with_max_tokens(8)).await?;
        model.generate_request::<Meeting>(meeting_request()).await?;
        Ok::<_, slm_agents::Error>(())
    })?;

    // decode_ratio_vs_raw
    let (mut sdk, mut raw) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (raw_tokens, raw_tps) = raw_in_child(&args)?;
        let c = futures::executor::block_on(model.complete(Request::raw(PROMPT).with_max_tokens(DECODE_TOKENS)))?;
        let sdk_tps = c.usage.decode_tokens_per_second();
        eprintln!(
            "  round {round}: sdk {sdk_tps:.1} tok/s ({} tokens), raw {raw_tps:.1} tok/s ({raw_tokens} tokens)",
            c.usage.completion_tokens
        );
        sdk.push(sdk_tps);
        raw.push(raw_tps);
    }
    let decode_ratio = median(&sdk) / median(&raw);

    // constrained_ratio
    let (mut free, mut constrained) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(3) * 2 {
        let t0 = Instant::now();
        let g = futures::executor::block_on(model.generate_request::<Meeting>(meeting_request()))?;
        let c_tps = g.completion.usage.decode_tokens_per_second();
        let u = futures::executor::block_on(model.complete(meeting_request().with_max_tokens(64)))?;
        let u_tps = u.usage.decode_tokens_per_second();
        if round == 0 {
            eprintln!("  constrained output: {}", g.completion.text);
        }
        eprintln!(
            "  round {round}: constrained {c_tps:.1} tok/s ({} tokens), unconstrained {u_tps:.1} tok/s ({} tokens), {:.0} ms",
            g.completion.usage.completion_tokens,
            u.usage.completion_tokens,
            t0.elapsed().as_secs_f64() * 1e3
        );
        constrained.push(c_tps);
        free.push(u_tps);
    }
    let constrained_ratio = median(&constrained) / median(&free);
    drop(model);

    let ff = fast_forward(&args)?;
    let wide = std::thread::available_parallelism().map_or(2, usize::from);
    let slowdown = contention(&args, true, 1)?;
    let slowdown_wide = contention(&args, true, wide)?;
    let slowdown_fixed = if args.contention_without_adapting { Some(contention(&args, false, 1)?) } else { None };

    let prefix_ratio = prefix_ttft(&args)?;
    let (concurrent, vs_one_lane, batched) = concurrency(&args)?;
    let (memory_ratio, separate_ratio) = memory(&args)?;

    println!("decode_ratio_vs_raw {decode_ratio:.3}");
    println!("constrained_ratio {constrained_ratio:.3}");
    println!("tool_call_decode_steps_ratio {:.3}", ff.steps_ratio);
    println!("constrained_ratio_confirmed {:.3}", ff.constrained_ratio_confirmed);
    println!("constrained_ratio_without_fast_forward {:.3}", ff.constrained_ratio_off);
    println!("fast_forward_outputs_agree {}/{}", ff.agree, ff.cases);
    println!("forced_outputs_agree {}/{}", ff.agree_forced, ff.cases);
    println!("contention_slowdown {slowdown:.3}");
    println!("contention_slowdown_wide {slowdown_wide:.3}");
    if let Some(fixed) = slowdown_fixed {
        println!("contention_slowdown_without_adapting {fixed:.3}");
    }
    println!("prefix_ttft_ratio {prefix_ratio:.3}");
    println!("concurrent_4_ratio {concurrent:.3}");
    println!("concurrent_4_ratio_vs_one_lane {vs_one_lane:.3}");
    println!("concurrent_4_ratio_batched_one_lane {batched:.3}");
    println!("memory_8_specialists_ratio {memory_ratio:.3}");
    println!("memory_8_models_ratio {separate_ratio:.3}");
    Ok(())
}

/// A specialist's instructions of about 300 tokens; `n` makes each specialist's text differ from the start.
fn specialist_prompt(n: usize) -> String {
    const JOBS: [&str; 8] = ["flights", "hotels", "sights", "restaurants", "trains", "weather", "visas", "budget"];
    let job = JOBS[n % JOBS.len()];
    format!(
        "Specialist {n} of the travel team: you handle {job} and nothing else. You receive one task at a time from \
         the manager, written in plain English, and you answer with the facts the manager needs to build the plan. \
         Work step by step. First read the task and find the city, the dates and the number of travellers. If the \
         task names a city you do not know, say so plainly instead of guessing. Use only the data your tools \
         return; never invent names, prices, times or numbers. When several options fit, list at most three, the \
         cheapest first, each on one line with its price in euros. Prices include taxes. Dates are written as \
         YYYY-MM-DD and times as HH:MM on a 24-hour clock. If the task asks for something outside {job}, answer \
         that another specialist handles it and stop. Keep every answer under eighty words. Do not greet, do not \
         apologise, and do not repeat the task. The traveller's personal data (names, emails, phone numbers, card \
         numbers) must never appear in your answer. If the tools fail, report the failure in one sentence so that \
         the manager can try again or ask another specialist. Remember: you are specialist {n}, for {job} only, \
         and your answers are read by code before a person sees them, so keep to the format."
    )
}

fn block<T>(f: impl std::future::Future<Output = slm_agents::Result<T>>) -> slm_agents::Result<T> {
    futures::executor::block_on(f)
}

fn prefix_ttft(args: &Args) -> Result<f64, Box<dyn std::error::Error>> {
    let model = LlamaModel::builder(&args.model).threads(args.threads).load()?;
    let ask = |n: usize, question: &str| {
        Request::chat([Message::system(specialist_prompt(n)), Message::user(question)]).with_max_tokens(4)
    };
    block(model.complete(ask(100, "warm-up")))?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(3) {
        let c = block(model.complete(ask(round, "Flights from Tel Aviv to St Petersburg on Friday?")))?;
        let w = block(model.complete(ask(round, "And on Saturday, for two people?")))?;
        eprintln!(
            "  prefix round {round}: cold {:.0} ms ({} prompt tokens, {} cached), warm {:.0} ms ({} prompt, {} cached)",
            c.usage.time_to_first_token.as_secs_f64() * 1e3,
            c.usage.prompt_tokens,
            c.usage.cached_prompt_tokens,
            w.usage.time_to_first_token.as_secs_f64() * 1e3,
            w.usage.prompt_tokens,
            w.usage.cached_prompt_tokens,
        );
        cold.push(c.usage.time_to_first_token.as_secs_f64());
        warm.push(w.usage.time_to_first_token.as_secs_f64());
    }
    Ok(median(&warm) / median(&cold))
}

fn story(i: usize) -> Request {
    Request::chat([Message::user(format!("Write a long story, number {i}, about a lighthouse keeper."))])
        .with_max_tokens(128)
}

/// Aggregate generated tokens per second of `requests` run one after the other, or all at once.
fn throughput(model: &LlamaModel, concurrent: bool) -> slm_agents::Result<f64> {
    let started = Instant::now();
    let tokens: usize = if concurrent {
        let all = block(async { Ok(futures::future::join_all((0..4).map(|i| model.complete(story(i)))).await) })?;
        all.into_iter().map(|c| c.map(|c| c.usage.completion_tokens)).sum::<slm_agents::Result<usize>>()?
    } else {
        let mut n = 0;
        for i in 0..4 {
            n += block(model.complete(story(i)))?.usage.completion_tokens;
        }
        n
    };
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

fn concurrency(args: &Args) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from).max(2);
    let lanes = LlamaModel::builder(&args.model).threads(cores).lanes(cores).load()?;
    let one = LlamaModel::builder(&args.model).threads(cores).load()?;
    throughput(&lanes, false)?;
    throughput(&one, false)?;
    let (mut l_seq, mut l_conc, mut o_seq, mut o_conc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let (a, b) = (throughput(&lanes, false)?, throughput(&lanes, true)?);
        let (c, d) = (throughput(&one, false)?, throughput(&one, true)?);
        eprintln!(
            "  concurrency round {round}: {cores} lanes x 1 thread: sequential {a:.0} tok/s, concurrent {b:.0}; \
             1 lane x {cores} threads: sequential {c:.0}, batched {d:.0}"
        );
        l_seq.push(a);
        l_conc.push(b);
        o_seq.push(c);
        o_conc.push(d);
    }
    Ok((median(&l_conc) / median(&l_seq), median(&l_conc) / median(&o_seq), median(&o_conc) / median(&o_seq)))
}

fn memory(args: &Args) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let run = |n: usize, separate: bool| -> Result<f64, Box<dyn std::error::Error>> {
        let flag = if separate { "--memory-child-separate" } else { "--memory-child" };
        let out = Command::new(std::env::current_exe()?)
            .args([flag, &n.to_string(), "--model", &args.model, "--threads", &args.threads.to_string()])
            .output()?;
        if !out.status.success() {
            return Err(format!("memory child failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8(out.stdout)?.trim().parse()?)
    };
    let one = run(1, false)?;
    let eight = run(8, false)?;
    let separate = run(8, true)?;
    eprintln!(
        "  memory: 1 specialist {:.0} MiB, 8 specialists on one model {:.0} MiB, 8 models {:.0} MiB",
        one / 1024.0,
        eight / 1024.0,
        separate / 1024.0
    );
    Ok((eight / one, separate / one))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Note {
    #[schemars(length(max = 40))]
    note: String,
}

/// Runs `n` specialists (different instructions) on one model, or on a model each, and returns the resident
/// memory in KiB.
fn memory_child(args: &Args, n: usize, separate: bool) -> Result<f64, Box<dyn std::error::Error>> {
    let load = || LlamaModel::builder(&args.model).threads(args.threads).load();
    let shared = load()?;
    let mut specialists = Vec::new();
    for i in 0..n {
        let model = if separate { load()? } else { shared.clone() };
        let specialist = ModelSpecialist::builder(format!("specialist-{i}"))
            .model(model)
            .instructions(specialist_prompt(i))
            .output::<Note>()
            .max_tokens(48)
            .build()?;
        if let Err(e) = block(specialist.run("Plan for Friday?".to_string(), &RunContext::new())) {
            eprintln!("  specialist {i}: {e}");
        }
        specialists.push(specialist);
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or("no VmRSS in /proc/self/status")?;
    Ok(rss)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Meeting {
    #[schemars(length(max = 60))]
    title: String,
    #[schemars(regex(pattern = r"^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"))]
    date: String,
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    start_time: String,
    #[schemars(range(min = 5, max = 480))]
    duration_minutes: u32,
    #[schemars(length(max = 8), inner(length(max = 40)))]
    attendees: Vec<String>,
}

/// What fast-forward does: from models loaded with each mode.
struct FastForwardFigures {
    /// Decode steps of a specialist's tool calls, confirmed drafts over every token decoded.
    steps_ratio: f64,
    /// `constrained_ratio` with confirmed drafts, and with every token decoded, for comparison.
    constrained_ratio_confirmed: f64,
    constrained_ratio_off: f64,
    /// Cases whose output is the same with confirmed drafts (forced tokens) as with every token decoded.
    agree: usize,
    agree_forced: usize,
    cases: usize,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)] // Read by the grammar, not by the tool.
struct Flights {
    /// Departure city
    #[schemars(length(max = 40))]
    from: String,
    /// Arrival city
    #[schemars(length(max = 40))]
    to: String,
    /// Day of the week
    day: Weekday,
}

#[derive(Deserialize, JsonSchema)]
enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)] // Read by the grammar, not by the tool.
struct Hotels {
    /// City to stay in
    #[schemars(length(max = 40))]
    city: String,
    /// Nights
    #[schemars(range(min = 1, max = 30))]
    nights: u32,
}

/// Typical specialist turns: a tool call each.
const TOOL_TASKS: [&str; 4] = [
    "Find me a flight from Tel Aviv to Rome on Friday",
    "I need a hotel in Lisbon for 3 nights",
    "Any flights from Paris to Berlin on Monday?",
    "Book somewhere to stay in Madrid for two nights",
];

fn tool_specialist(model: &LlamaModel) -> slm_agents::Result<ModelSpecialist> {
    ModelSpecialist::builder("travel")
        .model(model.clone())
        .instructions("You are a travel agent. Call search_flights or search_hotels for the request.")
        .tool_dyn(std::sync::Arc::new(tool_fn(
            "search_flights",
            "Find flights from one city to another on a day of the week",
            |_: Flights| async move { Ok::<_, std::io::Error>("[]") },
        )))
        .tool_dyn(std::sync::Arc::new(tool_fn(
            "search_hotels",
            "Find hotels in a city for a number of nights",
            |_: Hotels| async move { Ok::<_, std::io::Error>("[]") },
        )))
        .max_steps(1)
        .build()
}

/// The wall time of 4 specialist turns at once on a model with all the machine's threads, with a busy process
/// spinning `busy_threads` threads beside it over without; medians of 3 each, the first beside run included
/// (the lane has to notice the busy process).
fn contention(args: &Args, adapt: bool, busy_threads: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let model = LlamaModel::builder(&args.model).threads(threads).adapt_threads(adapt).load()?;
    let specialist = tool_specialist(&model)?;
    let ctx = RunContext::new();
    let workload = || {
        let t = Instant::now();
        futures::executor::block_on(futures::future::join_all(
            TOOL_TASKS.iter().map(|task| specialist.decide(task.to_string(), &ctx)),
        ));
        t.elapsed().as_secs_f64()
    };
    workload();
    let alone: Vec<f64> = (0..3).map(|_| workload()).collect();
    let mut busy = Command::new(std::env::current_exe()?).arg("--busy-child").arg(busy_threads.to_string()).spawn()?;
    // Let the busy process get going.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let beside: Vec<f64> = (0..3).map(|_| workload()).collect();
    busy.kill()?;
    busy.wait()?;
    let (a, b) = (median(&alone), median(&beside));
    eprintln!(
        "  contention ({threads} threads, adapting {}): 4 turns {a:.2}s alone, {b:.2}s beside a process spinning {busy_threads} threads",
        if adapt { "on" } else { "off" }
    );
    Ok(b / a)
}

/// Decode steps, outputs and constrained speed with each fast-forward mode.
fn fast_forward(args: &Args) -> Result<FastForwardFigures, Box<dyn std::error::Error>> {
    // No prefix cache: each request decodes its whole prompt, so that the models start every request from the
    // same state (a cached prefix is computed in other batch shapes, and greedy decoding can tip on that).
    let load = |mode: FastForward| {
        LlamaModel::builder(&args.model).threads(args.threads).slots(1).prefix_cache(false).fast_forward(mode).load()
    };
    let models = [load(FastForward::Confirmed)?, load(FastForward::Forced)?, load(FastForward::Off)?];
    let specialists = [tool_specialist(&models[0])?, tool_specialist(&models[1])?, tool_specialist(&models[2])?];
    let (mut steps, mut agree, mut agree_forced, mut cases) = ([0; 3], 0, 0, 0);
    for task in TOOL_TASKS {
        let mut outputs = Vec::new();
        for (specialist, steps) in specialists.iter().zip(&mut steps) {
            let events = std::sync::Arc::new(MemoryRecorder::default());
            let ctx = RunContext::new().with_recorder(events.clone());
            // One turn: the call is decided and recorded; what the tool answers does not matter here.
            let _ = futures::executor::block_on(specialist.decide(task.to_string(), &ctx));
            let call = events.model_calls().into_iter().next().ok_or("no model call")?;
            let usage = call.usage.unwrap_or_default();
            *steps += usage.completion_tokens - usage.forced_tokens;
            outputs.push(call.output.unwrap_or_default());
        }
        eprintln!("  tool call: {}", outputs[2]);
        for (mode, output) in ["confirmed", "forced"].iter().zip(&outputs) {
            if *output != outputs[2] {
                eprintln!("  {mode}: {output}");
            }
        }
        cases += 1;
        agree += usize::from(outputs[0] == outputs[2]);
        agree_forced += usize::from(outputs[1] == outputs[2]);
    }
    let steps_ratio = steps[0] as f64 / steps[2].max(1) as f64;
    eprintln!(
        "  tool calls: {} decode steps confirmed, {} forced, {} every token decoded",
        steps[0], steps[1], steps[2]
    );
    // The meeting object in each mode, and the same request unconstrained.
    let (mut confirmed, mut constrained_off, mut free) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(3) {
        // Raw completions under the schema: an output that does not parse is still an output to compare.
        let schema = OutputSchema::of::<Meeting>()?;
        let constrained = || meeting_request().with_constraint(schema.constraint());
        let [g_on, g_forced, g_off] = [0, 1, 2].map(|i| futures::executor::block_on(models[i].complete(constrained())));
        let (g_on, g_forced, g_off) = (g_on?, g_forced?, g_off?);
        let u = futures::executor::block_on(models[2].complete(meeting_request().with_max_tokens(64)))?;
        confirmed.push(g_on.usage.decode_tokens_per_second());
        constrained_off.push(g_off.usage.decode_tokens_per_second());
        free.push(u.usage.decode_tokens_per_second());
        if cases == TOOL_TASKS.len() {
            eprintln!(
                "  meeting: {} of {} tokens confirmed from drafts; {}",
                g_on.usage.forced_tokens, g_on.usage.completion_tokens, g_off.text
            );
            cases += 1;
            agree += usize::from(g_on.text == g_off.text);
            agree_forced += usize::from(g_forced.text == g_off.text);
            for (mode, g) in [("confirmed", &g_on), ("forced", &g_forced)] {
                if g.text != g_off.text {
                    eprintln!("  {mode}: {}", g.text);
                }
            }
        }
    }
    Ok(FastForwardFigures {
        steps_ratio,
        constrained_ratio_confirmed: median(&confirmed) / median(&free),
        constrained_ratio_off: median(&constrained_off) / median(&free),
        agree,
        agree_forced,
        cases,
    })
}

fn meeting_request() -> Request {
    Request::chat([
        Message::system("You turn requests into calendar entries. Today is 2026-11-28. Answer in JSON."),
        Message::user("Add a meeting with Dana, Lee and Sam tomorrow at 3pm for 30 minutes about the budget"),
    ])
    .with_max_tokens(120)
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn raw_in_child(args: &Args) -> Result<(usize, f64), Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--raw-child", "--model", &args.model, "--threads", &args.threads.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(format!("raw baseline failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace();
    let tokens = parts.next().ok_or("no output")?.parse()?;
    let tps = parts.next().ok_or("no output")?.parse()?;
    Ok((tokens, tps))
}

/// The baseline: the plainest llama-cpp-2 greedy decode loop, timed from the first sampled token.
fn raw_decode(args: &Args) -> Result<(usize, f64), Box<dyn std::error::Error>> {
    use llama_cpp_2::context::params::LlamaContextParams;
    use llama_cpp_2::llama_backend::LlamaBackend;
    use llama_cpp_2::llama_batch::LlamaBatch;
    use llama_cpp_2::model::params::LlamaModelParams;
    use llama_cpp_2::model::LlamaModel as RawModel;
    use llama_cpp_2::sampling::LlamaSampler;

    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init()?;
    let model = RawModel::load_from_file(&backend, &args.model, &LlamaModelParams::default())?;
    let threads = args.threads as i32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(2048))
        .with_n_batch(512)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(&backend, params)?;
    let vocab = model.vocab();
    let tokens = vocab.tokenize(PROMPT.as_bytes(), vocab.should_add_bos(), true);
    let mut batch = LlamaBatch::new(512, 1);
    for (i, &t) in tokens.iter().enumerate() {
        batch.add(t, i as i32, &[0], i + 1 == tokens.len())?;
    }
    ctx.decode(&mut batch)?;
    let mut sampler = LlamaSampler::greedy();
    let mut pos = tokens.len() as i32;
    let mut generated = 0usize;
    let mut text = Vec::new();
    let mut first: Option<Instant> = None;
    loop {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        first.get_or_insert_with(Instant::now);
        if vocab.is_eog(token) {
            break;
        }
        generated += 1;
        text.extend(vocab.token_to_piece(token, false, None));
        if generated >= DECODE_TOKENS as usize {
            break;
        }
        batch.clear();
        batch.add(token, pos, &[0], true)?;
        pos += 1;
        ctx.decode(&mut batch)?;
    }
    let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let tps = if generated > 1 { (generated - 1) as f64 / elapsed } else { 0.0 };
    Ok((generated, tps))
}
