//! Writes `examples/data/workload.jsonl`: the ledger of an imagined assistant agent whose every call went to a
//! large remote model, for the conversion loop (`examples/convert.rs`, docs/distill.md) to run on.
//!
//! Nothing in it was recorded from a real model: this script writes it, from templates, with a fixed seed.
//! It holds six recurring tool tasks (weather, flights, hotels, calendar, email, order tracking), each asked
//! in about ten phrasings with varied values; open questions answered in words; exact repeats of runs;
//! retyped near-repeats; failed calls; and personal data (email addresses, phone numbers, card numbers).
//! Every run is two model calls (the call, then the answer from the tool's result), or one for an open
//! question or a failure. Beside it, `workload.truth.json` gives each run's task (`tasks`, to measure clusters
//! against) and which runs repeat which (`repeats`: `{"run-0412": {"of": "run-0007", "exact": false}}`).
//!
//! ```text
//! cargo run --example make_workload [-- OUT_DIR]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use slm_agents::ledger::{LedgerRecord, SCHEMA_VERSION};
use slm_agents::model::{Message, Usage};
use slm_agents::run::{CallIds, ModelCallEvent, Outcome, RunEvent};
use slm_agents::tool::{ToolCall, ToolSpec};

/// A small deterministic generator (xorshift), so that the file is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

const CITIES: &[&str] = &[
    "Paris", "London", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Tokyo", "Oslo", "Dublin", "Athens",
    "Istanbul", "Chicago", "Boston", "Seattle", "Toronto", "Sydney", "Cairo", "Nairobi",
];
const NAMES: &[&str] = &["dana", "joe", "maria", "li.wei", "sam", "priya", "olga", "tom", "ines", "kofi"];
const DOMAINS: &[&str] = &["example.com", "example.org", "mail.example.net", "corp.example.io"];
const TITLES: &[&str] = &[
    "Team sync",
    "Dentist",
    "Budget review",
    "Lunch with Ana",
    "Quarterly planning",
    "Yoga class",
    "Call with the bank",
    "Project kickoff",
    "Parents' evening",
    "Car service",
];
const SUBJECTS: &[&str] = &["Invoice", "Meeting notes", "Travel plans", "Weekly report", "Thank you", "Contract draft"];
const BODIES: &[&str] = &[
    "the report is ready for review",
    "I will be ten minutes late tomorrow",
    "the contract draft is attached",
    "thanks for your help last week",
    "can we move our call to Friday",
    "the invoice has been paid",
];
const TOPICS: &[&str] = &[
    "the French Revolution",
    "photosynthesis",
    "black holes",
    "the stock market",
    "machine learning",
    "climate change",
    "the Roman Empire",
    "vaccines",
    "inflation",
    "the immune system",
    "quantum computing",
    "jazz",
    "the printing press",
    "plate tectonics",
    "democracy",
];
const OPEN: &[&str] = &[
    "Explain {t} in simple terms.",
    "Write a short poem about {t}.",
    "What are the main ideas behind {t}?",
    "Give me three surprising facts about {t}.",
    "Summarize the history of {t} in a paragraph.",
    "What are the pros and cons of studying {t}?",
    "How would you teach {t} to a ten-year-old?",
    "Why do people find {t} hard to understand?",
];

fn date(rng: &mut Rng) -> String {
    format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28))
}

fn phone(rng: &mut Rng) -> String {
    format!("+1 415 555 {:04}", rng.below(10_000))
}

fn card(rng: &mut Rng) -> String {
    // Visa test numbers (they pass the Luhn check).
    rng.pick(&["4111 1111 1111 1111", "4012 8888 8888 1881", "4242 4242 4242 4242"]).to_owned()
}

fn email(rng: &mut Rng) -> String {
    format!("{}@{}", rng.pick(NAMES), rng.pick(DOMAINS))
}

fn tools() -> Vec<ToolSpec> {
    let spec = |name: &str, description: &str, parameters: Value| ToolSpec {
        name: name.into(),
        description: description.into(),
        parameters,
    };
    vec![
        spec(
            "weather.current",
            "The current weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}),
        ),
        spec(
            "flights.search",
            "Searches flights between two cities on a date",
            json!({"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                "date": {"type": "string", "format": "date"}}, "required": ["origin", "destination", "date"]}),
        ),
        spec(
            "hotels.search",
            "Searches hotel rooms in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}, "check_in": {"type": "string", "format": "date"},
                "nights": {"type": "integer", "minimum": 1}}, "required": ["city", "check_in", "nights"]}),
        ),
        spec(
            "calendar.create_event",
            "Adds an event to the user's calendar",
            json!({"type": "object", "properties": {"title": {"type": "string"}, "date": {"type": "string", "format": "date"},
                "time": {"type": "string"}}, "required": ["title", "date", "time"]}),
        ),
        spec(
            "email.send",
            "Sends an email",
            json!({"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"},
                "body": {"type": "string"}}, "required": ["to", "subject", "body"]}),
        ),
        spec(
            "orders.status",
            "Looks up the delivery status of an order",
            json!({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}),
        ),
    ]
}

/// One generated request: its task, its text, the call the large model made (or none) and its final answer.
#[derive(Clone)]
struct Request {
    task: &'static str,
    /// For a repeat: the index of the request it repeats, and whether exactly.
    repeats: Option<(usize, bool)>,
    text: String,
    call: Option<(String, Value, Value)>,
    answer: String,
}

fn tool_request(rng: &mut Rng, task: usize) -> Request {
    let fill = |template: &str, pairs: &[(&str, &str)]| {
        let mut t = template.to_owned();
        for (k, v) in pairs {
            t = t.replace(k, v);
        }
        t
    };
    match task {
        0 => {
            let city = rng.pick(CITIES);
            let f = rng.chance(0.2);
            let templates = if f {
                &[
                    "What's the temperature in {c} in fahrenheit?",
                    "How hot is it in {c}? Fahrenheit please.",
                    "{c} weather in °F?",
                ][..]
            } else {
                &[
                    "What's the weather in {c}?",
                    "Is it raining in {c} right now?",
                    "How warm is it in {c} today?",
                    "Weather for {c} please",
                    "Do I need an umbrella in {c}?",
                    "What's it like outside in {c} at the moment?",
                    "Current conditions in {c}?",
                    "Is it sunny in {c}?",
                ][..]
            };
            let mut args = json!({"city": city});
            if f {
                args["unit"] = json!("fahrenheit");
            }
            let temp = 5 + rng.below(25);
            Request {
                repeats: None,
                task: "weather",
                text: fill(rng.pick(templates), &[("{c}", city)]),
                call: Some((
                    "weather.current".into(),
                    args,
                    json!({"temp_c": temp, "sky": rng.pick(&["clear", "cloudy", "rain"])}),
                )),
                answer: format!("It is {temp}°C in {city} right now."),
            }
        }
        1 => {
            let (a, mut b) = (rng.pick(CITIES), rng.pick(CITIES));
            if a == b {
                b = "Paris";
            }
            let d = date(rng);
            let t = rng.pick(&[
                "Find me a flight from {a} to {b} on {d}",
                "Any planes from {a} to {b} on {d}?",
                "I need to fly {a} to {b}, leaving {d}",
                "Search flights {a} -> {b} for {d}",
                "Can I get from {a} to {b} by air on {d}?",
                "Book me on a flight to {b} from {a}, date {d}",
                "What flights are there between {a} and {b} on {d}?",
                "Flights {a} to {b} on {d}, cheapest first",
            ]);
            Request {
                repeats: None,
                task: "flights",
                text: fill(t, &[("{a}", a), ("{b}", b), ("{d}", &d)]),
                call: Some((
                    "flights.search".into(),
                    json!({"origin": a, "destination": b, "date": d}),
                    json!([{"flight": format!("XY{}", 100 + rng.below(900)), "price_eur": 80 + rng.below(400)}]),
                )),
                answer: format!("I found a flight from {a} to {b} on {d}."),
            }
        }
        2 => {
            let city = rng.pick(CITIES);
            let d = date(rng);
            let nights = 1 + rng.below(6);
            let n = nights.to_string();
            let t = rng.pick(&[
                "Find a hotel in {c} for {n} nights from {d}",
                "I need a room in {c}, arriving {d}, staying {n} nights",
                "Hotels in {c}? Check-in {d}, {n} nights",
                "Book somewhere to stay in {c} from {d} for {n} nights",
                "Any rooms free in {c} on {d}? {n} nights.",
                "Look for accommodation in {c}: {n} nights starting {d}",
            ]);
            let mut text = fill(t, &[("{c}", city), ("{d}", &d), ("{n}", &n)]);
            if rng.chance(0.3) {
                text.push_str(&format!(". Charge my card {}", card(rng)));
            }
            Request {
                repeats: None,
                task: "hotels",
                text,
                call: Some((
                    "hotels.search".into(),
                    json!({"city": city, "check_in": d, "nights": nights}),
                    json!([{"hotel": "Hotel Central", "price_eur": 90 + rng.below(200)}]),
                )),
                answer: format!("Hotel Central in {city} has a room from {d} for {nights} nights."),
            }
        }
        3 => {
            let title = rng.pick(TITLES);
            let d = date(rng);
            let time = format!("{:02}:{}", 8 + rng.below(11), rng.pick(&["00", "15", "30", "45"]));
            let t = rng.pick(&[
                "Put '{t}' on my calendar on {d} at {h}",
                "Schedule {t} for {d} at {h}",
                "Add an event: {t}, {d}, {h}",
                "Remind me of {t} on {d} at {h}",
                "Block {h} on {d} for {t}",
                "Create a calendar entry '{t}' {d} {h}",
            ]);
            Request {
                repeats: None,
                task: "calendar",
                text: fill(t, &[("{t}", title), ("{d}", &d), ("{h}", &time)]),
                call: Some((
                    "calendar.create_event".into(),
                    json!({"title": title, "date": d, "time": time}),
                    json!({"created": true}),
                )),
                answer: format!("'{title}' is on your calendar on {d} at {time}."),
            }
        }
        4 => {
            let to = email(rng);
            let subject = rng.pick(SUBJECTS);
            let body = rng.pick(BODIES);
            let t = rng.pick(&[
                "Email {to} that {b}",
                "Send a message to {to} with subject '{s}': {b}",
                "Write to {to} about '{s}' saying {b}",
                "Mail {to}: {b} (subject {s})",
                "Let {to} know by email that {b}",
                "Drop {to} an email titled {s}: {b}",
            ]);
            Request {
                repeats: None,
                task: "email",
                text: fill(t, &[("{to}", &to), ("{s}", subject), ("{b}", body)]),
                call: Some((
                    "email.send".into(),
                    json!({"to": to, "subject": subject, "body": body}),
                    json!({"sent": true}),
                )),
                answer: format!("Your email to {to} has been sent."),
            }
        }
        _ => {
            let id = format!("{}", 100_000 + rng.below(900_000));
            let t = rng.pick(&[
                "Where is my order {o}?",
                "Track order #{o}",
                "Has order {o} shipped yet?",
                "What's the status of order {o}?",
                "My package {o} hasn't arrived, can you check?",
                "When will order {o} be delivered?",
            ]);
            let mut text = fill(t, &[("{o}", &id)]);
            if rng.chance(0.4) {
                text.push_str(&format!(" You can reach me at {}.", phone(rng)));
            }
            Request {
                repeats: None,
                task: "orders",
                text,
                call: Some(("orders.status".into(), json!({"order_id": id}), json!({"status": "in transit"}))),
                answer: format!("Order {id} is in transit."),
            }
        }
    }
}

fn open_request(rng: &mut Rng) -> Request {
    let topic = rng.pick(TOPICS);
    let text = rng.pick(OPEN).replace("{t}", topic);
    let answer = format!(
        "Here is an overview of {topic}. It is a broad subject with a long history, and people study it from many \
         angles; the key ideas are easier to follow with examples."
    );
    Request { repeats: None, task: "open", text, call: None, answer }
}

const SYSTEM: &str = "You are a helpful assistant. Call a tool when one fits the request; otherwise answer in words. \
Reply with JSON: {\"tool\": NAME, \"arguments\": {...}} or {\"answer\": TEXT}.";

fn main() -> std::io::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "examples/data".into());
    std::fs::create_dir_all(&out)?;
    let mut rng = Rng(0x5eed_2026_1130);
    let tools = tools();
    let mut requests: Vec<Request> = Vec::new();
    for _ in 0..480 {
        let r = if rng.chance(0.18) {
            open_request(&mut rng)
        } else {
            let task = rng.below(6);
            tool_request(&mut rng, task)
        };
        requests.push(r);
    }
    // Exact repeats and retyped near-repeats of earlier requests.
    let base = requests.len();
    for i in 0..40 {
        let j = rng.below(base);
        let src = &requests[j];
        let text =
            if i % 2 == 0 { src.text.clone() } else { format!("{}!!", src.text.trim_end_matches(['?', '.', '!'])) };
        requests.push(Request { repeats: Some((j, i % 2 == 0)), text, ..src.clone() });
    }
    // Shuffle (Fisher-Yates) so repeats are spread over the file; `place[i]`: where request i went.
    let mut order: Vec<usize> = (0..requests.len()).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    let mut place = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        place[old] = new;
    }
    let requests: Vec<Request> = order.iter().map(|&old| requests[old].clone()).collect();
    let mut repeats = BTreeMap::new();

    let mut lines = Vec::new();
    let mut tasks = BTreeMap::new();
    let mut seq = 0u64;
    let mut at_ms = 1_780_000_000_000u64;
    for (n, r) in requests.iter().enumerate() {
        let run = format!("run-{n:04}");
        tasks.insert(run.clone(), r.task);
        if let Some((of, exact)) = r.repeats {
            repeats.insert(run.clone(), json!({"of": format!("run-{:04}", place[of]), "exact": exact}));
        }
        let mut messages = vec![Message::system(SYSTEM), Message::user(r.text.clone())];
        let failed = rng.chance(0.04);
        let mut push =
            |step: usize, messages: &[Message], output: Option<String>, tool_calls: Vec<ToolCall>, latency_ms: u64| {
                let prompt: usize = messages.iter().map(|m| m.content.len() / 4 + 4).sum::<usize>() + 180;
                let completion = output.as_ref().map_or(0, |o| o.len() / 4 + 1);
                let event = ModelCallEvent {
                    ids: CallIds { run: run.clone(), id: step as u64, parent: None, node: None },
                    specialist: "assistant".into(),
                    model: "gpt-4o".into(),
                    remote: true,
                    step,
                    messages: messages.to_vec(),
                    output: output.clone(),
                    tool_calls,
                    schema_valid: output.as_ref().map(|_| true),
                    tools: tools.clone(),
                    constraint: None,
                    usage: output.as_ref().map(|_| Usage {
                        prompt_tokens: prompt,
                        completion_tokens: completion,
                        time_to_first_token: Duration::from_millis(latency_ms / 3),
                        total_time: Duration::from_millis(latency_ms),
                        ..Usage::default()
                    }),
                    latency: Duration::from_millis(latency_ms),
                    outcome: if output.is_some() {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed { error: "remote model `gpt-4o`: HTTP 503: the server is overloaded".into() }
                    },
                    escalation: Some("remote model".into()),
                    redactions: Vec::new(),
                };
                at_ms += latency_ms + 50;
                lines.push(
                    serde_json::to_string(&LedgerRecord {
                        schema: SCHEMA_VERSION,
                        seq,
                        at_ms,
                        event: RunEvent::ModelCall(event),
                    })
                    .unwrap(),
                );
                seq += 1;
            };
        if failed {
            push(0, &messages, None, Vec::new(), 30_000);
            continue;
        }
        match &r.call {
            Some((tool, args, result)) => {
                let call = json!({"tool": tool, "arguments": args}).to_string();
                let latency = 700 + rng.below(900) as u64;
                push(
                    0,
                    &messages,
                    Some(call.clone()),
                    vec![ToolCall { tool: tool.clone(), arguments: args.clone() }],
                    latency,
                );
                messages.push(Message::assistant(call));
                messages.push(Message::tool(result.to_string()));
                let latency = 600 + rng.below(800) as u64;
                push(1, &messages, Some(json!({"answer": r.answer}).to_string()), Vec::new(), latency);
            }
            None => {
                let latency = 2_000 + rng.below(3_000) as u64;
                push(0, &messages, Some(json!({"answer": r.answer}).to_string()), Vec::new(), latency);
            }
        }
    }
    let ledger = format!("{out}/workload.jsonl");
    std::fs::write(&ledger, lines.join("\n") + "\n")?;
    let truth = json!({"tasks": tasks, "repeats": repeats});
    std::fs::write(format!("{out}/workload.truth.json"), serde_json::to_string_pretty(&truth).unwrap() + "\n")?;
    println!("wrote {} model calls of {} runs to {ledger}", lines.len(), requests.len());
    Ok(())
}
