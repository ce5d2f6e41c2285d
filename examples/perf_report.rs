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
//! - `constrained_ratio <x>`: SDK tokens/s under a JSON-Schema constraint over unconstrained tokens/s.
//!   Target ≥ 0.95.

use std::num::NonZeroU32;
use std::process::Command;
use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::prelude::*;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const PROMPT: &str =
    "<|im_start|>user\nWrite a long story about a lighthouse keeper and a storm.<|im_end|>\n<|im_start|>assistant\n";
const DECODE_TOKENS: u32 = 256;

struct Args {
    model: String,
    threads: usize,
    rounds: usize,
    raw_child: bool,
}

fn args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args { model: DEFAULT_MODEL.into(), threads: 1, rounds: 3, raw_child: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--model" => a.model = it.next().ok_or("--model needs a path")?,
            "--threads" => a.threads = it.next().ok_or("--threads needs a number")?.parse()?,
            "--rounds" => a.rounds = it.next().ok_or("--rounds needs a number")?.parse()?,
            "--raw-child" => a.raw_child = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    if args.raw_child {
        let (tokens, tps) = raw_decode(&args)?;
        println!("{tokens} {tps}");
        return Ok(());
    }
    let model = LlamaModel::builder(&args.model).threads(args.threads).slots(1).load()?;
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

    println!("decode_ratio_vs_raw {decode_ratio:.3}");
    println!("constrained_ratio {constrained_ratio:.3}");
    Ok(())
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
