//! Turns a sentence into a typed `MeetingRequest`: the seed's calendar request.
//!
//! ```text
//! cargo run --release --example 02_typed_output -- [--model PATH] [--threads N] ["Add a meeting ..."]
//! ```
//!
//! The model's output is constrained by a grammar built from `MeetingRequest`'s JSON Schema, then validated
//! and deserialized, so what is printed is always one well-formed `MeetingRequest`.

use clap::Parser;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::prelude::*;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_SENTENCE: &str = "Add a meeting with Dana tomorrow at 3pm for 30 minutes about the budget";

/// A meeting to put in the calendar.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct MeetingRequest {
    /// What the meeting is about.
    #[schemars(length(min = 1, max = 60))]
    title: String,
    /// The day, as YYYY-MM-DD.
    #[schemars(regex(pattern = r"^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"))]
    date: String,
    /// The start, as 24-hour HH:MM.
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    start_time: String,
    /// How long it lasts.
    #[schemars(range(min = 5, max = 480))]
    duration_minutes: u32,
    /// Who takes part (not counting the user).
    #[schemars(length(max = 8), inner(length(min = 1, max = 40)))]
    attendees: Vec<String>,
}

/// The example's options.
#[derive(Parser)]
#[command(about = "Turns a sentence into a typed `MeetingRequest`: the seed's calendar request.")]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// The sentence to read a meeting request from.
    #[arg(default_value = DEFAULT_SENTENCE)]
    sentence: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, threads, sentence } = Args::parse();

    let mut builder = LlamaModel::builder(&model_path);
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    let model = builder.load()?;

    let (today, weekday, tomorrow) = dates();
    let instructions = format!(
        "You turn a request into a calendar entry. Today is {weekday} {today}; tomorrow is {tomorrow}. \
         Answer with JSON: title, date (YYYY-MM-DD), start_time (HH:MM, 24-hour), duration_minutes, attendees."
    );
    // One worked example teaches a small model more than a paragraph of rules.
    let example_answer = MeetingRequest {
        title: "Hiring plan".into(),
        date: today.clone(),
        start_time: "10:00".into(),
        duration_minutes: 45,
        attendees: vec!["Sam".into()],
    };
    let request = Request::chat([
        Message::system(instructions),
        Message::user("Set up a call with Sam today at 10am for 45 minutes about the hiring plan"),
        Message::assistant(serde_json::to_string(&example_answer)?),
        Message::user(sentence),
    ])
    .with_max_tokens(200);

    let generated = futures::executor::block_on(model.generate_request::<MeetingRequest>(request))?;
    println!("{}", serde_json::to_string_pretty(&generated.value)?);
    let u = generated.completion.usage;
    eprintln!(
        "[{}] prompt {} tokens, completion {} tokens, first token {:.0} ms, total {:.0} ms, {:.1} tok/s",
        model.name(),
        u.prompt_tokens,
        u.completion_tokens,
        u.time_to_first_token.as_secs_f64() * 1e3,
        u.total_time.as_secs_f64() * 1e3,
        u.decode_tokens_per_second(),
    );
    Ok(())
}

/// Today's date (UTC) as YYYY-MM-DD, its weekday, and tomorrow's date, without a date crate.
fn dates() -> (String, &'static str, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    const WEEKDAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    (civil(days), WEEKDAYS[days.rem_euclid(7) as usize], civil(days + 1))
}

/// Days since 1970-01-01 to YYYY-MM-DD (Howard Hinnant's civil-from-days algorithm).
fn civil(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}
