//! A flights specialist with a `search_flights` tool over a small bundled data file.
//!
//! ```text
//! cargo run --release --example 03_tools -- [--model PATH] [--threads N] ["find me a flight ..."]
//! ```
//!
//! Each model turn is decoded under one grammar: either a call of `search_flights` with arguments that match
//! its schema, or the final `FlightAnswer`. The tool reads `examples/data/flights.json` (made-up data).

use clap::Parser;
use std::path::Path;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::prelude::*;
use slm_agents::run::{Outcome, RunEvent};

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_TASK: &str = "find me a flight from Tel Aviv to St Petersburg on Friday";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// Arguments of `search_flights`.
#[derive(Debug, Deserialize, JsonSchema)]
struct SearchFlightsArgs {
    /// Departure city, e.g. "Tel Aviv"
    #[schemars(length(min = 2, max = 40))]
    from: String,
    /// Arrival city, e.g. "Paris"
    #[schemars(length(min = 2, max = 40))]
    to: String,
    /// Day of the week
    day: Weekday,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flight {
    flight: String,
    from: String,
    to: String,
    day: Weekday,
    depart: String,
    arrive: String,
    price_eur: u32,
    seats_left: u32,
}

#[derive(Deserialize)]
struct FlightData {
    flights: Vec<Flight>,
}

/// The airline "API": the bundled data file.
struct SearchFlights {
    flights: Vec<Flight>,
}

#[derive(Debug, thiserror::Error)]
#[error("no city called `{0}` is served")]
struct UnknownCity(String);

/// Lower-case letters only, so "St. Petersburg" and "st petersburg" match.
fn city_key(city: &str) -> String {
    city.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>().replace("saint", "st")
}

impl Tool for SearchFlights {
    const NAME: &'static str = "search_flights";
    type Args = SearchFlightsArgs;
    type Output = Vec<Flight>;
    type Error = UnknownCity;

    fn description(&self) -> String {
        "Search flights between two cities on a day of the week; returns the cheapest first".into()
    }

    async fn call(&self, args: SearchFlightsArgs) -> Result<Vec<Flight>, UnknownCity> {
        let (from, to) = (city_key(&args.from), city_key(&args.to));
        for (key, name) in [(&from, &args.from), (&to, &args.to)] {
            if !self.flights.iter().any(|f| city_key(&f.from) == *key || city_key(&f.to) == *key) {
                return Err(UnknownCity(name.clone()));
            }
        }
        let mut found: Vec<Flight> = self
            .flights
            .iter()
            .filter(|f| city_key(&f.from) == from && city_key(&f.to) == to && f.day == args.day && f.seats_left > 0)
            .cloned()
            .collect();
        found.sort_by_key(|f| f.price_eur);
        found.truncate(3);
        Ok(found)
    }
}

/// The specialist's answer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct FlightAnswer {
    /// The chosen flight's number, or "none" if no flight fits.
    #[schemars(regex(pattern = r"^(SL[0-9]{3}|none)$"))]
    flight: String,
    /// Departure time, HH:MM.
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    depart: String,
    /// Price in euros.
    #[schemars(range(max = 5000))]
    price_eur: u32,
}

/// The example's options.
#[derive(Parser)]
#[command(about = "A flights specialist with a `search_flights` tool over a small bundled data file.")]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// The task for the flights specialist.
    #[arg(default_value = DEFAULT_TASK)]
    task: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, threads, task } = Args::parse();

    let data_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/flights.json");
    let data: FlightData = serde_json::from_str(&std::fs::read_to_string(&data_path)?)?;

    let mut builder = LlamaModel::builder(&model_path);
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    let slm = builder.load()?;

    let flights = ModelSpecialist::builder("flights")
        .description("Finds flights between two cities on a given day")
        .example("find me a flight from Tel Aviv to St Petersburg on Friday")
        .example("is there a flight from Paris to Rome on Monday?")
        .model(slm.clone())
        .instructions(
            "You are the flights specialist of a travel agency. First call search_flights with the cities and \
             the day from the request. Then answer with the cheapest flight it returned: its flight number, \
             departure time and price. If it returned no flight, answer with flight \"none\".",
        )
        .tool(SearchFlights { flights: data.flights })
        .output::<FlightAnswer>()
        // One search, then the answer: a narrow specialist needs no more, and a small model otherwise tends to
        // repeat the call instead of reading its result.
        .max_tool_calls(1)
        .max_steps(3)
        .build()?;

    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    eprintln!("task: {task}");
    let answer = futures::executor::block_on(flights.run(task, &ctx));

    for event in events.events() {
        match event {
            RunEvent::ModelCall(m) => {
                let u = m.usage.unwrap_or_default();
                eprintln!(
                    "[model {} step {}] {} prompt tokens ({} cached), {} generated, {:.0} ms: {}",
                    m.model,
                    m.step,
                    u.prompt_tokens,
                    u.cached_prompt_tokens,
                    u.completion_tokens,
                    m.latency.as_secs_f64() * 1e3,
                    m.output.as_deref().unwrap_or("-")
                );
            }
            RunEvent::ToolCall(t) => eprintln!(
                "[tool {}] {} -> {}",
                t.tool,
                t.arguments,
                match (&t.result, &t.outcome) {
                    (Some(r), _) => r.to_string(),
                    (None, Outcome::Failed { error }) => error.clone(),
                    (None, Outcome::Succeeded) => String::new(),
                }
            ),
            _ => {}
        }
    }
    println!("{}", serde_json::to_string_pretty(&answer?)?);
    Ok(())
}
