//! Specialists on the real model: every tool call parses, names one of the specialist's own tools and
//! validates against that tool's schema; failures are contained.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slm_agents::model::Role;
use slm_agents::prelude::*;
use slm_agents::run::{Outcome, RunEvent};
use slm_agents::specialist::ModelSpecialist;
use slm_agents::tool::tool_fn;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
enum Currency {
    EUR,
    USD,
    GBP,
    ILS,
}

#[derive(Deserialize, JsonSchema)]
struct SearchFlights {
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
struct FlightStatus {
    /// Flight number such as SL311
    #[schemars(regex(pattern = r"^SL[0-9]{3}$"))]
    flight: String,
}

#[derive(Deserialize, JsonSchema)]
struct SearchHotels {
    /// City to stay in
    #[schemars(length(max = 40))]
    city: String,
    /// Number of nights
    #[schemars(range(min = 1, max = 14))]
    nights: u8,
}

#[derive(Deserialize, JsonSchema)]
struct HotelReviews {
    /// Hotel name
    #[schemars(length(max = 40))]
    hotel: String,
}

#[derive(Deserialize, JsonSchema)]
struct Convert {
    /// Amount of money
    #[schemars(range(min = 0.0, max = 1000000.0))]
    amount: f64,
    /// Currency of the amount
    from: Currency,
    /// Currency wanted
    to: Currency,
}

#[derive(Deserialize, JsonSchema)]
struct SplitBill {
    /// Total of the bill
    #[schemars(range(min = 0.0, max = 100000.0))]
    total: f64,
    /// Number of people sharing it
    #[schemars(range(min = 1, max = 50))]
    people: u8,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Reply {
    #[schemars(length(max = 80))]
    summary: String,
}

type Fail = std::io::Error;

fn flights(model: &LlamaModel) -> ModelSpecialist<String, Reply> {
    ModelSpecialist::builder("flights")
        .description("Finds flights and their status")
        .model(model.clone())
        .instructions("You are the flights specialist. Use search_flights to find flights between cities on a day, and flight_status for the status of a flight number.")
        .tool_dyn(Arc::new(tool_fn("search_flights", "Find flights from one city to another on a day of the week", |a: SearchFlights| async move {
            Ok::<_, Fail>(json!([{ "flight": "SL311", "from": a.from, "to": a.to, "day": a.day, "price_eur": 189 }]))
        })))
        .tool_dyn(Arc::new(tool_fn("flight_status", "Current status of a flight by its number", |a: FlightStatus| async move {
            Ok::<_, Fail>(json!({ "flight": a.flight, "status": "on time" }))
        })))
        .output::<Reply>()
        .max_tool_calls(1)
        .max_steps(2)
        .build()
        .unwrap()
}

fn hotels(model: &LlamaModel) -> ModelSpecialist<String, Reply> {
    ModelSpecialist::builder("hotels")
        .description("Finds hotels and their reviews")
        .model(model.clone())
        .instructions("You are the hotels specialist. Use search_hotels to find hotels in a city for a number of nights, and hotel_reviews for what guests say about a hotel.")
        .tool_dyn(Arc::new(tool_fn("search_hotels", "Find hotels in a city for a number of nights", |a: SearchHotels| async move {
            Ok::<_, Fail>(json!([{ "hotel": "Neva View", "city": a.city, "nights": a.nights, "price_eur": 95 }]))
        })))
        .tool_dyn(Arc::new(tool_fn("hotel_reviews", "Guest reviews of a hotel by its name", |a: HotelReviews| async move {
            Ok::<_, Fail>(json!({ "hotel": a.hotel, "rating": 4.5, "reviews": ["clean", "quiet"] }))
        })))
        .output::<Reply>()
        .max_tool_calls(1)
        .max_steps(2)
        .build()
        .unwrap()
}

fn money(model: &LlamaModel) -> ModelSpecialist<String, Reply> {
    ModelSpecialist::builder("money")
        .description("Converts currencies and splits bills")
        .model(model.clone())
        .instructions("You are the money specialist. Use convert_currency to convert an amount between EUR, USD, GBP and ILS, and split_bill to divide a total between people.")
        .tool_dyn(Arc::new(tool_fn("convert_currency", "Convert an amount of money from one currency to another", |a: Convert| async move {
            Ok::<_, Fail>(json!({ "amount": a.amount * 1.1, "currency": a.to, "from": a.from }))
        })))
        .tool_dyn(Arc::new(tool_fn("split_bill", "Divide a bill's total equally between people", |a: SplitBill| async move {
            Ok::<_, Fail>(json!({ "each": a.total / f64::from(a.people) }))
        })))
        .output::<Reply>()
        .max_tool_calls(1)
        .max_steps(2)
        .build()
        .unwrap()
}

/// (prompt, expected tool, expected arguments that must match)
type Case = (&'static str, &'static str, Value);

fn flight_cases() -> Vec<Case> {
    vec![
        (
            "Find me a flight from Tel Aviv to St Petersburg on Friday",
            "search_flights",
            json!({"from": "Tel Aviv", "to": "St Petersburg", "day": "Friday"}),
        ),
        (
            "Flights from Paris to Rome on Monday?",
            "search_flights",
            json!({"from": "Paris", "to": "Rome", "day": "Monday"}),
        ),
        (
            "I need to fly Berlin to London on Tuesday",
            "search_flights",
            json!({"from": "Berlin", "to": "London", "day": "Tuesday"}),
        ),
        (
            "Any flight London to Lisbon this Sunday?",
            "search_flights",
            json!({"from": "London", "to": "Lisbon", "day": "Sunday"}),
        ),
        (
            "Search flights Istanbul to St Petersburg, Wednesday",
            "search_flights",
            json!({"from": "Istanbul", "to": "St Petersburg", "day": "Wednesday"}),
        ),
        (
            "Fly from Rome to Berlin on Thursday",
            "search_flights",
            json!({"from": "Rome", "to": "Berlin", "day": "Thursday"}),
        ),
        (
            "Get me from Lisbon to Paris on Saturday",
            "search_flights",
            json!({"from": "Lisbon", "to": "Paris", "day": "Saturday"}),
        ),
        (
            "What flights go from Tel Aviv to Istanbul on Monday?",
            "search_flights",
            json!({"from": "Tel Aviv", "to": "Istanbul", "day": "Monday"}),
        ),
        ("Is flight SL311 on time?", "flight_status", json!({"flight": "SL311"})),
        ("What is the status of SL207?", "flight_status", json!({"flight": "SL207"})),
        ("Check flight SL150 please", "flight_status", json!({"flight": "SL150"})),
        ("Has SL499 been delayed?", "flight_status", json!({"flight": "SL499"})),
        ("Status of my flight SL123", "flight_status", json!({"flight": "SL123"})),
        (
            "Flight from St Petersburg to Tel Aviv on Sunday",
            "search_flights",
            json!({"from": "St Petersburg", "to": "Tel Aviv", "day": "Sunday"}),
        ),
    ]
}

fn hotel_cases() -> Vec<Case> {
    vec![
        ("Find a hotel in St Petersburg for 2 nights", "search_hotels", json!({"city": "St Petersburg", "nights": 2})),
        ("I need a room in Paris for 3 nights", "search_hotels", json!({"city": "Paris", "nights": 3})),
        ("Hotels in Rome, one night", "search_hotels", json!({"city": "Rome", "nights": 1})),
        ("Book somewhere to stay in Lisbon for 5 nights", "search_hotels", json!({"city": "Lisbon", "nights": 5})),
        ("A hotel in Berlin for a week", "search_hotels", json!({"city": "Berlin", "nights": 7})),
        ("Where can I sleep in London for 4 nights?", "search_hotels", json!({"city": "London", "nights": 4})),
        ("Search hotels in Istanbul for 2 nights", "search_hotels", json!({"city": "Istanbul", "nights": 2})),
        ("What do guests say about the Neva View hotel?", "hotel_reviews", json!({"hotel": "Neva View"})),
        ("Reviews of Hotel Roma please", "hotel_reviews", json!({"hotel": "Hotel Roma"})),
        ("Is the Grand Lisboa any good?", "hotel_reviews", json!({"hotel": "Grand Lisboa"})),
        ("Show me reviews for Seaside Inn", "hotel_reviews", json!({"hotel": "Seaside Inn"})),
        ("How is the Berlin Loft rated?", "hotel_reviews", json!({"hotel": "Berlin Loft"})),
        ("Hotels in Tel Aviv for 3 nights", "search_hotels", json!({"city": "Tel Aviv", "nights": 3})),
    ]
}

fn money_cases() -> Vec<Case> {
    vec![
        ("Convert 100 EUR to USD", "convert_currency", json!({"amount": 100.0, "from": "EUR", "to": "USD"})),
        ("How much is 50 dollars in euros?", "convert_currency", json!({"amount": 50.0, "from": "USD", "to": "EUR"})),
        ("Change 200 GBP into ILS", "convert_currency", json!({"amount": 200.0, "from": "GBP", "to": "ILS"})),
        ("What is 1000 ILS in EUR?", "convert_currency", json!({"amount": 1000.0, "from": "ILS", "to": "EUR"})),
        ("75 EUR in GBP please", "convert_currency", json!({"amount": 75.0, "from": "EUR", "to": "GBP"})),
        ("Convert 20 USD to ILS", "convert_currency", json!({"amount": 20.0, "from": "USD", "to": "ILS"})),
        ("Split a bill of 120 between 4 people", "split_bill", json!({"total": 120.0, "people": 4})),
        ("We are 3 and the dinner cost 90, how much each?", "split_bill", json!({"total": 90.0, "people": 3})),
        ("Divide 250 among 5 friends", "split_bill", json!({"total": 250.0, "people": 5})),
        ("The taxi was 60 for 2 of us; split it", "split_bill", json!({"total": 60.0, "people": 2})),
        ("Split 48 between 6 people", "split_bill", json!({"total": 48.0, "people": 6})),
        ("How much is 10 GBP in USD?", "convert_currency", json!({"amount": 10.0, "from": "GBP", "to": "USD"})),
        ("Share a 300 hotel bill between 3", "split_bill", json!({"total": 300.0, "people": 3})),
    ]
}

/// Lower-case letters and digits only: "St. Petersburg" is "St Petersburg".
fn normalize(s: &str) -> String {
    s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect()
}

fn args_match(expected: &Value, actual: &Value) -> bool {
    let (Some(e), Some(a)) = (expected.as_object(), actual.as_object()) else { return false };
    e.iter().all(|(k, ev)| match (ev, a.get(k)) {
        (Value::String(x), Some(Value::String(y))) => normalize(x) == normalize(y),
        (Value::Number(x), Some(Value::Number(y))) => {
            (x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(1.0)).abs() < 1e-6
        }
        _ => false,
    })
}

#[tokio::test]
async fn every_tool_call_parses_names_an_own_tool_and_validates() {
    let model = support::smollm2();
    let specialists =
        [(flights(&model), flight_cases()), (hotels(&model), hotel_cases()), (money(&model), money_cases())];
    let total: usize = specialists.iter().map(|(_, c)| c.len()).sum();
    assert!(total >= 40);

    let events = Arc::new(MemoryRecorder::default());
    let mut runs = Vec::new();
    for (specialist, cases) in &specialists {
        for (prompt, tool, args) in cases {
            let ctx = RunContext::new().with_recorder(events.clone());
            runs.push(async move {
                let recorder = Arc::new(MemoryRecorder::default());
                let own = ctx.clone().with_recorder(recorder.clone());
                let result = specialist.run(prompt.to_string(), &own).await;
                for e in recorder.events() {
                    ctx.record(e);
                }
                (specialist, *prompt, *tool, args, result, recorder.tool_calls())
            });
        }
    }
    let outcomes = futures::future::join_all(runs).await;

    let (mut calls, mut right_tool, mut right_args) = (0, 0, 0);
    for (specialist, prompt, tool, args, result, tool_calls) in outcomes {
        let answer = result.unwrap_or_else(|e| panic!("{prompt}: {e}"));
        assert!(
            answer.summary.chars().count() <= 80,
            "{prompt}: {:?} ({} chars)",
            answer.summary,
            answer.summary.chars().count()
        );
        for call in &tool_calls {
            calls += 1;
            assert!(
                specialist.tools().get(&call.tool).is_some(),
                "{prompt}: `{}` is not a tool of {}",
                call.tool,
                specialist.card().name
            );
            specialist.tools().validate(&call.tool, &call.arguments).unwrap_or_else(|e| panic!("{prompt}: {e}"));
            assert!(call.outcome.is_success(), "{prompt}: {:?}", call.outcome);
        }
        if let Some(first) = tool_calls.first() {
            if first.tool == tool {
                right_tool += 1;
                if args_match(args, &first.arguments) {
                    right_args += 1;
                } else {
                    eprintln!("args  {prompt:?}: expected {args}, got {}", first.arguments);
                }
            } else {
                eprintln!("tool  {prompt:?}: expected {tool}, got {}", first.tool);
            }
        } else {
            eprintln!("none  {prompt:?}: answered without a tool");
        }
    }
    // Every model turn was one JSON object: a call of an own tool or an answer.
    for e in events.events() {
        if let RunEvent::ModelCall(m) = e {
            let v: Value = serde_json::from_str(m.output.as_deref().unwrap()).unwrap();
            assert!(v.get("tool").is_some() || v.get("answer").is_some(), "{v}");
        }
    }
    eprintln!(
        "tool calls: {calls} over {total} prompts, all parsed and valid; right tool {right_tool}/{total}, right tool and arguments {right_args}/{total}"
    );
    assert!(calls >= total / 2, "most prompts should lead to a tool call");
}

#[tokio::test]
async fn a_failing_tool_is_told_to_the_real_model_and_named_in_the_error() {
    let model = support::smollm2();
    let specialist = ModelSpecialist::builder("flights")
        .model(model.clone())
        .instructions("You find flights with search_flights.")
        .tool_dyn(Arc::new(tool_fn(
            "search_flights",
            "Find flights between two cities on a day",
            |_: SearchFlights| async move { Err::<Value, _>(std::io::Error::other("the airline API is down")) },
        )))
        .output::<Reply>()
        .max_tool_errors(1)
        .max_steps(4)
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let result = specialist.run("Flights from Paris to Rome on Monday".to_string(), &ctx).await;
    let calls = events.tool_calls();
    assert!(!calls.is_empty(), "the model called the tool");
    assert!(
        matches!(&calls[0].outcome, Outcome::Failed { error } if error.contains("the airline API is down")),
        "{:?}",
        calls[0].outcome
    );
    // The error went back to the model as a tool message.
    let second = &events.model_calls()[1];
    let fed_back =
        second.messages.iter().any(|m| m.role == Role::Tool && m.content.contains("the airline API is down"));
    assert!(fed_back, "{:?}", second.messages);
    match result {
        Ok(_) => {}
        Err(e @ slm_agents::Error::Tool { .. }) => {
            let text = e.to_string();
            assert!(text.contains("flights") && text.contains("search_flights"), "{text}");
        }
        Err(other) => panic!("unexpected: {other}"),
    }
}

#[tokio::test]
async fn on_the_real_model_a_blocking_tool_is_cut_off_and_a_huge_result_is_cut_to_size() {
    let model = support::smollm2();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());

    // A tool that blocks its thread for 3 s, on an isolated specialist with a 300 ms timeout.
    let blocking = ModelSpecialist::builder("flights")
        .model(model.clone())
        .instructions("You find flights with search_flights.")
        .tool_dyn(Arc::new(tool_fn(
            "search_flights",
            "Find flights between two cities on a day",
            |_: SearchFlights| async move {
                std::thread::sleep(std::time::Duration::from_secs(3));
                Ok::<_, Fail>(json!(["SL311"]))
            },
        )))
        .output::<Reply>()
        .tool_timeout(std::time::Duration::from_millis(300))
        .isolate_tools(true)
        .max_tool_errors(0)
        .build()
        .unwrap();
    let result = blocking.run("Flights from Paris to Rome on Monday".to_string(), &ctx).await;
    let calls = events.tool_calls();
    assert!(!calls.is_empty(), "the model called the tool");
    assert!(matches!(result, Err(slm_agents::Error::Tool { .. })), "{result:?}");
    assert!(calls[0].result.is_none());
    // The tool call itself was cut off at its timeout, not after the tool's 3 s (the model's turns around it
    // take what they take on a busy machine).
    assert!(calls[0].latency < std::time::Duration::from_millis(2000), "held {:?}", calls[0].latency);

    // A tool that returns about 5 MB: the model sees 2 KB of it, with the tool named.
    let huge = ModelSpecialist::builder("hotels")
        .model(model)
        .instructions("You find hotels with search_hotels.")
        .tool_dyn(Arc::new(tool_fn("search_hotels", "Find hotels in a city", |_: SearchHotels| async move {
            Ok::<_, Fail>(json!(vec!["a very long hotel description ".repeat(40); 4000]))
        })))
        .output::<Reply>()
        .max_tool_result_bytes(2048)
        .max_tool_calls(1)
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let _ = huge.run("A hotel in Rome for 2 nights".to_string(), &ctx).await;
    let calls = events.tool_calls();
    let call = calls.first().expect("the model called the tool");
    let shown = call.result.clone().expect("the tool succeeded");
    assert_eq!((shown["tool"].as_str(), shown["truncated"].as_bool()), (Some("search_hotels"), Some(true)));
    let next = events.model_calls();
    assert!(next.len() >= 2);
    assert!(next[1].messages.iter().all(|m| m.content.len() < 4096));
}

#[tokio::test]
async fn on_the_real_model_decide_gives_the_call_without_running_it() {
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    let specialist = ModelSpecialist::builder("flights")
        .model(support::smollm2())
        .instructions("You find flights with flights.search.")
        .tool_dyn(Arc::new(tool_fn(
            "flights.search",
            "Find flights between two cities on a day",
            move |_: SearchFlights| {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                async move { Ok::<_, Fail>(json!(["SL311"])) }
            },
        )))
        .output::<Reply>()
        .build()
        .unwrap();
    let decided =
        specialist.decide("Flights from Paris to Rome on Monday".to_string(), &RunContext::new()).await.unwrap();
    match decided {
        slm_agents::specialist::Decided::Calls(calls) => {
            assert_eq!(calls[0].tool, "flights.search");
            assert!(specialist.tools().validate("flights.search", &calls[0].arguments).is_ok());
        }
        slm_agents::specialist::Decided::Answer(_) => {}
    }
    assert!(!ran.load(std::sync::atomic::Ordering::SeqCst), "deciding runs no tool");
}

mod scripted {
    use std::time::{Duration, Instant};

    use slm_agents::model::{Constraint, ScriptedModel};
    use slm_agents::tool::ToolError;
    use slm_agents::Error;

    use super::*;

    fn call(args: Value) -> String {
        json!({ "tool": "lookup", "arguments": args }).to_string()
    }

    const ANSWER: &str = r#"{"answer": {"summary": "done"}}"#;

    #[derive(Deserialize, JsonSchema)]
    struct Lookup {
        #[schemars(range(min = 0, max = 99))]
        n: u8,
    }

    fn specialist<F, Fut>(model: ScriptedModel, tool: F) -> (Arc<ScriptedModel>, ModelSpecialist<String, Reply>)
    where
        F: Fn(Lookup) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, std::io::Error>> + Send + 'static,
    {
        let model = Arc::new(model);
        let s = ModelSpecialist::builder("clerk")
            .model_arc(model.clone())
            .tool_dyn(Arc::new(tool_fn("lookup", "Looks a number up", tool)))
            .output::<Reply>()
            .max_tool_errors(1)
            .tool_timeout(Duration::from_millis(100))
            .max_steps(3)
            .build()
            .unwrap();
        (model, s)
    }

    fn run(s: &ModelSpecialist<String, Reply>) -> slm_agents::Result<Reply> {
        futures::executor::block_on(s.run("look up 7".into(), &RunContext::new()))
    }

    #[test]
    fn tool_errors_are_fed_back_then_bounded() {
        let (model, s) =
            specialist(ScriptedModel::new([call(json!({"n": 7})), call(json!({"n": 8})), ANSWER.into()]), |_| async {
                Err(std::io::Error::other("backend down"))
            });
        let err = run(&s).unwrap_err();
        match &err {
            Error::Tool { specialist, tool, source: ToolError::Failed(_) } => {
                assert_eq!((specialist.as_str(), tool.as_str()), ("clerk", "lookup"))
            }
            other => panic!("{other}"),
        }
        let second = &model.requests()[1];
        let slm_agents::model::Prompt::Chat(messages) = &second.prompt else { panic!() };
        assert!(messages.last().unwrap().content.contains("backend down"));
    }

    #[test]
    fn a_panicking_tool_is_caught() {
        let (_, s) = specialist(ScriptedModel::new([call(json!({"n": 1})), call(json!({"n": 2}))]), |_| async {
            panic!("boom")
        });
        let err = run(&s).unwrap_err();
        assert!(matches!(&err, Error::Tool { source: ToolError::Panicked(m), .. } if m.contains("boom")), "{err}");
    }

    #[test]
    fn a_hanging_tool_times_out() {
        let (_, s) = specialist(ScriptedModel::new([call(json!({"n": 1})), call(json!({"n": 2}))]), |_| async {
            futures::future::pending::<()>().await;
            Ok(json!(null))
        });
        let started = Instant::now();
        let err = run(&s).unwrap_err();
        assert!(matches!(&err, Error::Tool { source: ToolError::Timeout(_), .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn arguments_that_do_not_match_the_schema_never_reach_the_tool() {
        let reached = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = reached.clone();
        let (model, s) = specialist(ScriptedModel::new([call(json!({"n": 500})), ANSWER.into()]), move |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            async { Ok(json!(1)) }
        });
        assert_eq!(run(&s).unwrap().summary, "done");
        assert!(!reached.load(std::sync::atomic::Ordering::SeqCst));
        let slm_agents::model::Prompt::Chat(messages) = &model.requests()[1].prompt else { panic!() };
        assert!(messages.last().unwrap().content.contains("invalid arguments"), "{:?}", messages.last());
    }

    #[test]
    fn too_many_steps_is_an_error_naming_the_specialist() {
        let (_, s) = specialist(
            ScriptedModel::new([call(json!({"n": 1})), call(json!({"n": 2})), call(json!({"n": 3}))]),
            |a| async move { Ok(json!(a.n)) },
        );
        let err = run(&s).unwrap_err();
        assert!(matches!(&err, Error::MaxSteps { specialist, steps: 3 } if specialist == "clerk"), "{err}");
    }

    #[test]
    fn a_repeated_call_makes_the_next_turn_answer_only() {
        let (model, s) = specialist(
            ScriptedModel::new([call(json!({"n": 1})), call(json!({"n": 1})), ANSWER.into()]),
            |a| async move { Ok(json!(a.n)) },
        );
        assert_eq!(run(&s).unwrap().summary, "done");
        let requests = model.requests();
        assert_eq!(requests.len(), 3);
        let schema = |i: usize| match &requests[i].constraint {
            Some(Constraint::JsonSchema(v)) => v.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(schema(0).contains("lookup"));
        assert!(!schema(2).contains("lookup"), "the third turn may only answer");
    }

    #[test]
    fn the_grammar_allows_only_own_tools_or_the_answer() {
        let (model, s) = specialist(ScriptedModel::new([ANSWER]), |a| async move { Ok(json!(a.n)) });
        run(&s).unwrap();
        let Some(Constraint::JsonSchema(schema)) = &model.requests()[0].constraint else { panic!() };
        let validator = jsonschema::validator_for(schema).unwrap();
        assert!(validator.is_valid(&json!({"tool": "lookup", "arguments": {"n": 3}})));
        assert!(!validator.is_valid(&json!({"tool": "delete_everything", "arguments": {}})));
        assert!(!validator.is_valid(&json!({"tool": "lookup", "arguments": {"n": "three"}})));
        assert!(validator.is_valid(&json!({"answer": {"summary": "ok"}})));
        assert!(!validator.is_valid(&json!({"answer": {"summary": 3}})));
    }
}

/// The checks of the first turn (docs/specialists.md): relevance, narrowing, grounding.
mod first_turn {
    use slm_agents::model::{Constraint, ScriptedModel};
    use slm_agents::run::MemoryRecorder;
    use slm_agents::specialist::{Decided, ToolFormat};

    use super::*;

    #[derive(Deserialize, JsonSchema)]
    struct City {
        #[schemars(length(max = 40))]
        city: String,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Convert {
        amount: f64,
        to: Currency,
    }

    fn two_tools(model: Arc<dyn LanguageModel>) -> slm_agents::specialist::ModelSpecialistBuilder<String, Reply> {
        ModelSpecialist::builder("desk")
            .model_arc(model)
            .tool_dyn(Arc::new(tool_fn("weather.current", "Current weather in a city", |a: City| async move {
                Ok::<_, Fail>(format!("sunny in {}", a.city))
            })))
            .tool_dyn(Arc::new(tool_fn(
                "money.convert",
                "Converts an amount of money into another currency",
                |a: Convert| async move { Ok::<_, Fail>(json!({ "amount": a.amount, "currency": a.to })) },
            )))
            .output::<Reply>()
    }

    #[test]
    fn an_off_topic_request_is_answered_without_offering_a_call() {
        let model = Arc::new(ScriptedModel::new([r#"{"answer": {"summary": "I only do weather and money."}}"#]));
        let s = two_tools(model.clone()).build().unwrap();
        let d =
            futures::executor::block_on(s.decision("Write a poem about the sea".into(), &RunContext::new())).unwrap();
        assert!(matches!(d.decided, Decided::Answer(_)));
        assert_eq!(d.relevance, Some(0.0));
        let Some(Constraint::JsonSchema(schema)) = &model.requests()[0].constraint else { panic!() };
        assert!(!schema.to_string().contains("weather.current"), "the only turn may only answer");
        // Without the check, the model is asked to choose.
        let model = Arc::new(ScriptedModel::new([r#"{"answer": {"summary": "no"}}"#]));
        let s = two_tools(model.clone()).relevance_threshold(None).build().unwrap();
        futures::executor::block_on(s.decide("Write a poem about the sea".into(), &RunContext::new())).unwrap();
        let Some(Constraint::JsonSchema(schema)) = &model.requests()[0].constraint else { panic!() };
        assert!(schema.to_string().contains("weather.current"));
    }

    #[test]
    fn the_first_turn_offers_only_the_tools_the_request_is_about() {
        let call = r#"{"tool": "weather.current", "arguments": {"city": "Oslo"}}"#;
        let model = Arc::new(ScriptedModel::new([call]));
        let s = two_tools(model.clone()).build().unwrap();
        futures::executor::block_on(s.decide("What is the weather in Oslo?".into(), &RunContext::new())).unwrap();
        let Some(Constraint::JsonSchema(schema)) = &model.requests()[0].constraint else { panic!() };
        let validator = jsonschema::validator_for(schema).unwrap();
        assert!(validator.is_valid(&serde_json::from_str::<Value>(call).unwrap()));
        assert!(!validator.is_valid(&json!({"tool": "money.convert", "arguments": {"amount": 3, "to": "EUR"}})));
        assert!(validator.is_valid(&json!({"answer": {"summary": "ok"}})));
    }

    #[test]
    fn a_call_with_a_number_the_request_never_gave_becomes_an_answer() {
        let made_up = r#"{"tool": "money.convert", "arguments": {"amount": 250, "to": "EUR"}}"#;
        let answer = r#"{"answer": {"summary": "How much should I convert?"}}"#;
        let model = Arc::new(ScriptedModel::new([made_up, answer]));
        let s = two_tools(model.clone()).build().unwrap();
        let events = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(events.clone());
        let out = futures::executor::block_on(s.run("Convert my salary into euros".into(), &ctx)).unwrap();
        assert_eq!(out.summary, "How much should I convert?");
        assert!(events.tool_calls().is_empty(), "the made-up call was not run");
        // Stated, it runs.
        let model = Arc::new(ScriptedModel::new([made_up, answer]));
        let s = two_tools(model).build().unwrap();
        let events = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(events.clone());
        futures::executor::block_on(s.run("Convert $250 into euros".into(), &ctx)).unwrap();
        assert_eq!(events.tool_calls().len(), 1);
    }

    #[test]
    fn strings_can_be_held_to_spans_of_the_request() {
        let model = Arc::new(ScriptedModel::new([r#"{"tool": "weather.current", "arguments": {"city": "Oslo"}}"#]));
        let s = two_tools(model.clone()).ground_strings(true).build().unwrap();
        futures::executor::block_on(s.decide("Weather in Oslo, Norway?".into(), &RunContext::new())).unwrap();
        let Some(Constraint::JsonSchema(schema)) = &model.requests()[0].constraint else { panic!() };
        let validator = jsonschema::validator_for(schema).unwrap();
        for city in ["Oslo", "Oslo, Norway", "Norway"] {
            assert!(validator.is_valid(&json!({"tool": "weather.current", "arguments": {"city": city}})), "{city}");
        }
        assert!(!validator.is_valid(&json!({"tool": "weather.current", "arguments": {"city": "San Francisco, CA"}})));
    }

    #[test]
    fn the_ledger_says_whether_each_turn_validated() {
        // A model that ignores the grammar: `city` is a number.
        let model = Arc::new(ScriptedModel::new([
            r#"{"tool": "weather.current", "arguments": {"city": 1}}"#,
            r#"{"answer": {"summary": "sorry"}}"#,
        ]));
        let s = two_tools(model).build().unwrap();
        let events = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(events.clone());
        futures::executor::block_on(s.run("Weather in Oslo?".into(), &ctx)).unwrap();
        let valid: Vec<Option<bool>> = events.model_calls().iter().map(|c| c.schema_valid).collect();
        assert_eq!(valid, [Some(false), Some(true)]);
    }

    #[test]
    fn the_ledger_keeps_the_tools_shown_and_the_grammar() {
        let model = Arc::new(ScriptedModel::new([r#"{"answer": {"summary": "sunny"}}"#]));
        let s = two_tools(model).build().unwrap();
        let events = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(events.clone());
        futures::executor::block_on(s.run("Weather in Oslo?".into(), &ctx)).unwrap();
        let call = &events.model_calls()[0];
        let names: Vec<&str> = call.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["money.convert", "weather.current"]);
        assert_eq!(call.tools[1].description, "Current weather in a city");
        assert!(call.tools[1].parameters["properties"]["city"].is_object());
        assert!(matches!(&call.constraint, Some(Constraint::JsonSchema(_))));
        // Both survive a ledger line, and a line written before they existed still reads.
        let line = serde_json::to_value(RunEvent::ModelCall(call.clone())).unwrap();
        let back: RunEvent = serde_json::from_value(line.clone()).unwrap();
        assert_eq!(back, RunEvent::ModelCall(call.clone()));
        let mut old = line;
        let fields =
            old.as_object_mut().unwrap().values_mut().find_map(|v| v.as_object_mut()).unwrap_or_else(|| panic!());
        fields.remove("tools");
        fields.remove("constraint");
        let RunEvent::ModelCall(read) = serde_json::from_value::<RunEvent>(old).unwrap() else { panic!() };
        assert!(read.tools.is_empty() && read.constraint.is_none());
    }

    #[tokio::test]
    async fn on_the_real_model_the_first_turn_checks_hold() {
        let model: Arc<dyn LanguageModel> = Arc::new(support::smollm2());
        for format in [ToolFormat::Lines, ToolFormat::Json, ToolFormat::Compact] {
            let s = two_tools(model.clone()).tool_format(format).build().unwrap();
            // Off topic: answered in words, in one model call (the answer turn).
            let events = Arc::new(MemoryRecorder::default());
            let ctx = RunContext::new().with_recorder(events.clone());
            let d = s.decision("Write a short poem about the sea".into(), &ctx).await.unwrap();
            assert!(matches!(d.decided, Decided::Answer(_)), "{format:?}: {:?}", d.decided);
            assert_eq!(events.model_calls().len(), 1, "{format:?}");
            // On topic: if it calls, it calls the weather tool, with a valid call recorded as valid.
            let events = Arc::new(MemoryRecorder::default());
            let ctx = RunContext::new().with_recorder(events.clone());
            let d = s.decision("What is the weather in Oslo today?".into(), &ctx).await.unwrap();
            assert!(d.relevance.unwrap() > 0.3, "{format:?}");
            if let Decided::Calls(calls) = &d.decided {
                assert!(calls.iter().all(|c| c.tool == "weather.current"), "{format:?}: {calls:?}");
                assert_eq!(events.model_calls()[0].schema_valid, Some(true), "{format:?}");
            }
            // A conversion without an amount: never a call with a made-up amount.
            let d = s.decision("Convert my salary into euros".into(), &RunContext::new()).await.unwrap();
            if let Decided::Calls(calls) = &d.decided {
                panic!("{format:?}: called {calls:?} without an amount");
            }
        }
    }
}
