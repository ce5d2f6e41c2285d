//! Fast-forward on the real models. Confirmed: the tokens a grammar forces are decoded ahead as a draft that
//! the model confirms, so tool calls take far fewer decode steps and come out exactly as they do without it
//! (greedy and seeded sampling alike, log-probabilities included, one request or several batched); budgets
//! still hold; SentencePiece vocabularies draft too. Forced: llguidance forces the tokens, decoded without
//! logits, as few steps, outputs mostly the same. Off by default.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::model::{FastForward, FinishReason};
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
fn model(fast_forward: impl Into<FastForward>) -> LlamaModel {
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
    let (mut steps_on, mut steps_off) = (0, 0);
    for task in TASKS {
        let (out_on, usage_on) = first_turn(&with, task);
        let (out_off, usage_off) = first_turn(&without, task);
        assert!(out_on.starts_with(r#"{"tool": "search_"#), "{task}: {out_on}");
        assert_eq!(out_on, out_off, "{task}");
        assert_eq!(usage_on.completion_tokens, usage_off.completion_tokens, "{task}");
        assert_eq!(usage_off.forced_tokens, 0, "without fast-forward nothing is forced");
        assert!(usage_on.forced_tokens > 0, "{task}: nothing forced in {out_on}");
        steps_on += usage_on.completion_tokens - usage_on.forced_tokens;
        steps_off += usage_off.completion_tokens;
    }
    eprintln!("decode steps: {steps_on} with fast-forward, {steps_off} without");
    assert!((steps_on as f64) < 0.7 * steps_off as f64, "{steps_on} steps against {steps_off}");
}

#[test]
fn typed_output_comes_out_the_same_and_budgets_still_hold() {
    let (on, off) = (model(true), model(false));
    let system = "You extract contacts as JSON.";
    let prompts = [
        "Dana is 34, write to dana@example.com",
        "Contact: Lee (lee@mail.org), aged 51",
        "Sam, 27 years old, sam@test.io",
    ];
    for prompt in prompts {
        let request = || Request::chat([Message::system(system), Message::user(prompt)]).with_max_tokens(96);
        let a = futures::executor::block_on(on.generate_request::<Contact>(request())).unwrap();
        let b = futures::executor::block_on(off.generate_request::<Contact>(request())).unwrap();
        assert!(a.completion.usage.forced_tokens > 0);
        assert_eq!(a.completion.text, b.completion.text, "{prompt}");
    }

    // Seeded sampling draws the same random numbers at the same tokens, so it agrees too.
    let schema = OutputSchema::of::<Contact>().unwrap();
    for seed in 0..3 {
        let request = || {
            Request::chat([Message::system(system), Message::user(prompts[1])])
                .with_max_tokens(96)
                .with_sampling(Sampling::temperature(0.9).with_seed(seed))
                .with_constraint(schema.constraint())
        };
        let a = futures::executor::block_on(on.complete(request())).unwrap();
        let b = futures::executor::block_on(off.complete(request())).unwrap();
        assert!(a.usage.forced_tokens > 0);
        assert_eq!(a.text, b.text, "seed {seed}");
    }

    // The budget counts confirmed draft tokens: a call cut at 6 tokens stops at 6.
    let cut = Request::chat([Message::system(system), Message::user(prompts[0])])
        .with_max_tokens(6)
        .with_constraint(schema.constraint());
    let c = futures::executor::block_on(on.complete(cut)).unwrap();
    assert_eq!(c.usage.completion_tokens, 6, "{:?}", c.usage);
    assert_eq!(c.finish_reason, FinishReason::MaxTokens);

    // Log-probabilities: every token still has its own, the same as without fast-forward.
    let scored = || {
        Request::chat([Message::system(system), Message::user(prompts[0])])
            .with_max_tokens(96)
            .with_constraint(schema.constraint())
            .with_logprobs()
    };
    let a = futures::executor::block_on(on.complete(scored())).unwrap();
    let b = futures::executor::block_on(off.complete(scored())).unwrap();
    assert!(a.usage.forced_tokens > 0);
    let (la, lb) = (a.logprobs.unwrap(), b.logprobs.unwrap());
    assert_eq!(la.len(), a.usage.completion_tokens);
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x.token, y.token);
        assert!((x.logprob - y.logprob).abs() < 0.05, "{x:?} against {y:?}");
    }
}

#[test]
fn a_sentencepiece_vocabulary_drafts_too() {
    let load = |mode: FastForward| {
        LlamaModel::builder(support::gemma_path()).threads(1).slots(1).fast_forward(mode).load().unwrap()
    };
    let (on, forced, off) = (load(FastForward::Confirmed), load(FastForward::Forced), load(FastForward::Off));
    let schema = OutputSchema::of::<Contact>().unwrap();
    let request = || {
        Request::raw("Dana is 34, write to dana@example.com. As JSON: ")
            .with_max_tokens(64)
            .with_constraint(schema.constraint())
    };
    let a = futures::executor::block_on(on.complete(request())).unwrap();
    let b = futures::executor::block_on(off.complete(request())).unwrap();
    // Gemma's quantized matrix products round differently for a batch of tokens than for one (its log-
    // probabilities differ by about 0.1 between the two), so where two tokens are nearly tied the texts can
    // differ; both are the model's picks, and both follow the schema.
    eprintln!("with    {}\nwithout {}", a.text, b.text);
    let contact: Contact = serde_json::from_str(&a.text).unwrap();
    assert_eq!(contact.age, 34);
    assert!(a.usage.forced_tokens > 0, "{:?}: {}", a.usage, a.text);
    assert_eq!(b.usage.forced_tokens, 0);
    assert!(a.usage.completion_tokens - a.usage.forced_tokens < b.usage.completion_tokens);
    // Forced needs a canonical tokenizer, which SentencePiece fragments are not: every token is decoded.
    let c = futures::executor::block_on(forced.complete(request())).unwrap();
    assert_eq!(c.usage.forced_tokens, 0, "{}", c.text);
    assert_eq!(c.text, b.text);
}

#[test]
fn forced_tokens_take_no_logits_and_mostly_agree() {
    let (forced, off) = (model(FastForward::Forced), model(FastForward::Off));
    let (with, without) = (travel(&forced), travel(&off));
    let (mut steps_on, mut steps_off, mut agree) = (0, 0, 0);
    for task in TASKS {
        let (out_on, usage_on) = first_turn(&with, task);
        let (out_off, usage_off) = first_turn(&without, task);
        assert!(out_on.starts_with(r#"{"tool": "search_"#), "{task}: {out_on}");
        assert!(usage_on.forced_tokens > 0, "{task}: nothing forced in {out_on}");
        agree += usize::from(out_on == out_off);
        steps_on += usage_on.completion_tokens - usage_on.forced_tokens;
        steps_off += usage_off.completion_tokens;
    }
    eprintln!("forced: {steps_on} decode steps against {steps_off}; {agree}/{} agree", TASKS.len());
    assert!((steps_on as f64) < 0.7 * steps_off as f64, "{steps_on} steps against {steps_off}");
    // Forced tokens can be split otherwise than the model would split them: most, not all, agree.
    assert!(agree * 3 >= TASKS.len() * 2, "only {agree} of {} agree", TASKS.len());

    // A forced token has no log-probability of its own: a request that asks for them decodes every token.
    let schema = OutputSchema::of::<Contact>().unwrap();
    let scored = Request::chat([Message::user("Dana is 34, write to dana@example.com")])
        .with_max_tokens(64)
        .with_constraint(schema.constraint())
        .with_logprobs();
    let c = futures::executor::block_on(forced.complete(scored)).unwrap();
    assert_eq!(c.usage.forced_tokens, 0);
    assert_eq!(c.logprobs.as_ref().map(Vec::len), Some(c.usage.completion_tokens));
}

#[test]
fn it_is_off_by_default_and_free_text_has_no_draft() {
    let schema = OutputSchema::of::<Contact>().unwrap();
    let request = || {
        Request::chat([Message::user("Dana is 34, write to dana@example.com")])
            .with_max_tokens(64)
            .with_constraint(schema.constraint())
    };
    let c = futures::executor::block_on(support::smollm2().complete(request())).unwrap();
    assert!(c.usage.completion_tokens > 0);
    assert_eq!(c.usage.forced_tokens, 0);
    let on = model(true);
    let c = futures::executor::block_on(on.complete(request())).unwrap();
    assert!(c.usage.forced_tokens > 0);
    let free = Request::chat([Message::user("Say hello to Dana.")]).with_max_tokens(16);
    let c = futures::executor::block_on(on.complete(free)).unwrap();
    assert!(c.usage.completion_tokens > 0);
    assert_eq!(c.usage.forced_tokens, 0);
}

#[test]
fn batched_requests_come_out_the_same() {
    // Four requests decoded together in one lane: drafts of different lengths share each batch.
    let load = |on: bool| {
        LlamaModel::builder(support::smollm2_path())
            .threads(1)
            .slots(4)
            .batch_requests(4)
            .prefix_cache(false)
            .adapt_threads(false)
            .fast_forward(on)
            .load()
            .unwrap()
    };
    let (on, off) = (load(true), load(false));
    let (with, without) = (travel(&on), travel(&off));
    let run = |specialist: &ModelSpecialist| {
        futures::executor::block_on(futures::future::join_all(TASKS.iter().map(|task| async move {
            let events = Arc::new(MemoryRecorder::default());
            let ctx = RunContext::new().with_recorder(events.clone());
            let _ = specialist.decide(task.to_string(), &ctx).await;
            let call = events.model_calls().into_iter().next().expect("a model call");
            (call.output.unwrap_or_default(), call.usage.unwrap_or_default())
        })))
    };
    let (a, b) = (run(&with), run(&without));
    let mut same = 0;
    for ((task, (out_a, usage_a)), (out_b, _)) in TASKS.iter().zip(&a).zip(&b) {
        assert!(usage_a.forced_tokens > 0, "{task}");
        if out_a == out_b {
            same += 1;
        } else {
            eprintln!("{task}:\n  with    {out_a}\n  without {out_b}");
        }
    }
    assert_eq!(same, TASKS.len());
}

#[test]
fn drafts_stop_at_the_context_and_at_stop_strings_as_without() {
    // A context just big enough for the prompt and part of the object: the draft never runs past it, and
    // the request ends as it would without fast-forward.
    let load = |mode: FastForward| {
        LlamaModel::builder(support::smollm2_path())
            .threads(1)
            .slots(1)
            .context_size(256)
            .prefix_cache(false)
            .fast_forward(mode)
            .load()
            .unwrap()
    };
    let (on, forced, off) = (load(FastForward::Confirmed), load(FastForward::Forced), load(FastForward::Off));
    let schema = OutputSchema::of::<Contact>().unwrap();
    // llama.cpp rounds the context up (to 256 tokens): fill the prompt to leave about 16 tokens of room.
    let context = on.context_size();
    let mut words = context;
    let prompt = loop {
        let prompt = format!("{}\nDana is 34, write to dana@example.com", "note ".repeat(words));
        let rendered = on.render_chat(&[Message::user(prompt.as_str())]).unwrap();
        if on.count_tokens(&rendered) + 16 <= context {
            break prompt;
        }
        words -= 1;
    };
    let request =
        || Request::chat([Message::user(prompt.as_str())]).with_max_tokens(200).with_constraint(schema.constraint());
    let b = futures::executor::block_on(off.complete(request())).unwrap();
    assert_eq!(b.finish_reason, FinishReason::ContextFull, "{:?}: {}", b.usage, b.text);
    for model in [&on, &forced] {
        let a = futures::executor::block_on(model.complete(request())).unwrap();
        assert_eq!(a.finish_reason, FinishReason::ContextFull, "{:?}: {}", a.usage, a.text);
        assert!(a.usage.prompt_tokens + a.usage.completion_tokens <= context, "{:?}", a.usage);
    }
    let a = futures::executor::block_on(on.complete(request())).unwrap();
    assert_eq!(a.text, b.text);

    // A stop string inside the forced text: the output ends before it, as without.
    let (on, off) = (model(true), model(false));
    let stopped = || {
        Request::chat([Message::user("Dana is 34, write to dana@example.com")])
            .with_max_tokens(96)
            .with_constraint(schema.constraint())
            .with_stop(["\"email\""])
    };
    let a = futures::executor::block_on(on.complete(stopped())).unwrap();
    let b = futures::executor::block_on(off.complete(stopped())).unwrap();
    assert_eq!(a.finish_reason, FinishReason::Stop);
    assert_eq!(a.text, b.text);
    assert!(!a.text.contains("email"), "{}", a.text);
}
