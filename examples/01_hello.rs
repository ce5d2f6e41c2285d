//! Streams a chat answer from a local model to stdout.
//!
//! ```text
//! cargo run --release --example 01_hello -- [--model PATH] [--threads N] [PROMPT]
//! ```
//!
//! No async runtime is needed: the model runs on its own worker thread, and `futures::executor::block_on`
//! is enough to drive the stream.

use clap::Parser;
use std::io::Write;

use futures::StreamExt;
use slm_agents::prelude::*;

const DEFAULT_PROMPT: &str = "In two sentences, why do small language models suit on-device assistants?";
const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The example's options.
#[derive(Parser)]
#[command(about = "Streams a chat answer from a local model to stdout.")]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// A model by Hugging Face name, REPO/FILE (e.g. HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf),
    /// downloaded into the Hugging Face cache with a progress bar; needs `--features hf-hub`.
    #[arg(long, conflicts_with = "model")]
    hf: Option<String>,
    /// The prompt.
    #[arg(default_value = DEFAULT_PROMPT)]
    prompt: String,
}

/// The file of `REPO/FILE` (the repository is `owner/name`), from the Hugging Face cache or downloaded with a
/// progress bar.
#[cfg(feature = "hf-hub")]
fn from_hf(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut parts = name.splitn(3, '/');
    let (Some(owner), Some(repo), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("--hf {name}: expected OWNER/REPO/FILE").into());
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")?
            .progress_chars("=> "),
    );
    bar.set_message(file.to_owned());
    let path = slm_agents::model::HfFile::new(format!("{owner}/{repo}"), file).download(|p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    })?;
    bar.finish_and_clear();
    Ok(path.display().to_string())
}

#[cfg(not(feature = "hf-hub"))]
fn from_hf(_: &str) -> Result<String, Box<dyn std::error::Error>> {
    Err("--hf needs the `hf-hub` feature: cargo run --release --features hf-hub --example 01_hello -- --hf ...".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model, threads, hf, prompt } = Args::parse();
    let model_path = match hf {
        Some(name) => from_hf(&name)?,
        None => model,
    };

    let mut builder = LlamaModel::builder(&model_path);
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    let model = builder.load()?;

    futures::executor::block_on(async {
        let request = Request::chat([Message::user(prompt)]).with_max_tokens(200);
        let mut stream = model.stream(request);
        let mut stdout = std::io::stdout();
        while let Some(piece) = stream.next().await {
            write!(stdout, "{}", piece?)?;
            stdout.flush()?;
        }
        writeln!(stdout)?;
        if let Some(done) = stream.completion() {
            let u = done.usage;
            eprintln!(
                "[{}] prompt {} tokens ({} cached), completion {} tokens, first token {:.0} ms, total {:.0} ms, {:.1} tok/s, finish {:?}",
                model.name(),
                u.prompt_tokens,
                u.cached_prompt_tokens,
                u.completion_tokens,
                u.time_to_first_token.as_secs_f64() * 1e3,
                u.total_time.as_secs_f64() * 1e3,
                u.decode_tokens_per_second(),
                done.finish_reason,
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
