//! Fast-forward on the real models: tokens a grammar forces are decoded together, split as the model's own
//! tokenizer splits them, so tool calls take far fewer decode steps and mostly come out as they do without it;
//! budgets still hold; SentencePiece vocabularies and requests for log-probabilities decode every token; it is
//! off by default.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::model::FinishReason;
use slm_agents::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
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
#[allow(dead_code)]
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
#[allow(dead_code)]
struct Hotels {
    /// City to stay in
    #[schemars(length(max = 40))]
    city: String,
    /// Nights
    #[schemars(range(min = 1, max = 30))]
    nights: u32,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Contact {
    #[schemars(length(max = 40))]
    name: String,
    #[schemars(regex(pattern = r"^[a-z]+@[a-z]+\.[a-z]{2,4}$"))]
    email: String,
    #[schemars(range(min = 0, max = 120))]
    age: u32,
}

const TASKS: [&str; 6] = [
    "Find me a flight from Tel Aviv to Rome on Friday",
    "I need a hotel in Lisbon for 3 nights",
    "Any flights from Paris to Berlin on Monday?",
    "Book somewhere to stay in Madrid for two nights",
    "Flights from London to Oslo on Sunday please",
    "A hotel in Vienna for 5 nights",
];

/// One model per setting, with no prefix cache, so that both decode every prompt from the same state.
fn model(fast_forward: bool) -> LlamaModel {
    LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .slots(1)
        .prefix_cache(false)
        .fast_forward(fast_forward)
        .load()
        .unwrap()
}

fn travel(model: &LlamaModel) -> ModelSpecialist {
    ModelSpecialist::builder("travel")
        .model(model.clone())
        .instructions("You are a travel agent. Call search_flights or search_hotels for the request.")
        .tool_dyn(Arc::new(tool_fn(
            "search_flights",
            "Find flights from one city to another on a day of the week",
            |_: Flights| async move { Ok::<_, std::io::Error>("[]") },
        )))
        .tool_dyn(Arc::new(tool_fn(
            "search_hotels",
            "Find hotels in a city for a number of nights",
            |_: Hotels| async move { Ok::<_, std::io::Error>("[]") },
        )))
        .max_steps(1)
        .build()
        .unwrap()
}

/// The first turn's model call: its output and usage.
fn first_turn(specialist: &ModelSpecialist, task: &str) -> (String, Usage) {
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let _ = futures::executor::block_on(specialist.decide(task.to_string(), &ctx));
    let call = events.model_calls().into_iter().next().expect("a model call");
    (call.output.unwrap_or_default(), call.usage.unwrap_or_default())
}

#[test]
fn tool_calls_take_fewer_decode_steps_and_come_out_the_same() {
    let (on, off) = (model(true), model(false));
    let (with, without) = (travel(&on), travel(&off));
    let (mut steps_on, mut steps_off, mut agree) = (0, 0, 0);
    for task in TASKS {
        let (out_on, usage_on) = first_turn(&with, task);
        let (out_off, usage_off) = first_turn(&without, task);
        assert!(out_on.starts_with(r#"{"tool": "search_"#), "{task}: {out_on}");
        assert_eq!(usage_off.forced_tokens, 0, "without fast-forward nothing is forced");
        assert!(usage_on.forced_tokens > 0, "{task}: nothing forced in {out_on}");
        // Forced tokens are split as the tokenizer splits them; left to itself under the grammar, the model
        // sometimes writes the same fixed text in more, smaller tokens.
        eprintln!(
            "{task}: {} tokens ({} forced) with, {} without",
            usage_on.completion_tokens, usage_on.forced_tokens, usage_off.completion_tokens
        );
        if out_on == out_off {
            agree += 1;
        } else {
            eprintln!("{task}:\n  with    {out_on}\n  without {out_off}");
        }
        steps_on += usage_on.completion_tokens - usage_on.forced_tokens;
        steps_off += usage_off.completion_tokens;
    }
    eprintln!("decode steps: {steps_on} with fast-forward, {steps_off} without; {agree}/{} outputs agree", TASKS.len());
    assert!(agree * 4 >= TASKS.len() * 3, "only {agree} of {} outputs agree", TASKS.len());
    assert!((steps_on as f64) < 0.7 * steps_off as f64, "{steps_on} steps against {steps_off}");
}

#[test]
fn typed_output_agrees_and_budgets_still_hold() {
    let (on, off) = (model(true), model(false));
    let system = "You extract contacts as JSON.";
    let prompts = [
        "Dana is 34, write to dana@example.com",
        "Contact: Lee (lee@mail.org), aged 51",
        "Sam, 27 years old, sam@test.io",
    ];
    let mut agree = 0;
    for prompt in prompts {
        let request = || Request::chat([Message::system(system), Message::user(prompt)]).with_max_tokens(96);
        let a = futures::executor::block_on(on.generate_request::<Contact>(request())).unwrap();
        let b = futures::executor::block_on(off.generate_request::<Contact>(request())).unwrap();
        assert!(a.completion.usage.forced_tokens > 0);
        agree += usize::from(a.completion.text == b.completion.text);
    }
    assert!(agree >= 2, "{agree} of 3 agree");

    // The budget counts forced tokens: a call cut at 6 tokens stops at 6, forced ones included.
    let schema = OutputSchema::of::<Contact>().unwrap();
    let cut = Request::chat([Message::system(system), Message::user(prompts[0])])
        .with_max_tokens(6)
        .with_constraint(schema.constraint());
    let c = futures::executor::block_on(on.complete(cut)).unwrap();
    assert!(c.usage.completion_tokens <= 6, "{:?}", c.usage);
    assert_eq!(c.finish_reason, FinishReason::MaxTokens);

    // Log-probabilities: every token is sampled, so every token has its own.
    let schema = OutputSchema::of::<Contact>().unwrap();
    let scored = Request::chat([Message::system(system), Message::user(prompts[0])])
        .with_max_tokens(96)
        .with_constraint(schema.constraint())
        .with_logprobs();
    let c = futures::executor::block_on(on.complete(scored)).unwrap();
    assert_eq!(c.usage.forced_tokens, 0);
    assert_eq!(c.logprobs.as_ref().map(Vec::len), Some(c.usage.completion_tokens));
}

#[test]
fn a_sentencepiece_vocabulary_decodes_every_token() {
    let gemma = LlamaModel::builder(support::gemma_path()).threads(1).fast_forward(true).load().unwrap();
    let schema = OutputSchema::of::<Contact>().unwrap();
    let request = Request::raw("Dana is 34, write to dana@example.com. As JSON: ")
        .with_max_tokens(64)
        .with_constraint(schema.constraint());
    let c = futures::executor::block_on(gemma.complete(request)).unwrap();
    assert!(c.usage.completion_tokens > 0);
    assert_eq!(c.usage.forced_tokens, 0, "{}", c.text);
}

#[test]
fn it_is_off_by_default() {
    let model = support::smollm2();
    let schema = OutputSchema::of::<Contact>().unwrap();
    let request = Request::chat([Message::user("Dana is 34, write to dana@example.com")])
        .with_max_tokens(64)
        .with_constraint(schema.constraint());
    let c = futures::executor::block_on(model.complete(request)).unwrap();
    assert!(c.usage.completion_tokens > 0);
    assert_eq!(c.usage.forced_tokens, 0);
}
