//! Evaluation: the runner and its report on scripted models, and the BFCL reader on the real BFCL files
//! (`models/bfcl`, from `scripts/fetch-bfcl.sh`; only the development split is looked at). The scorer's own
//! cases are unit tests in src/eval/score.rs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use slm_agents::eval::{bfcl, score, Case, CaseResult, Evaluation, Expected, ExpectedCall, Outcome, Report, ToolSpec};
use slm_agents::model::{
    Completion, FinishReason, LanguageModel, Message, Prompt, Request, ScriptedModel, TokenStream, Usage,
};
use slm_agents::specialist::ModelSpecialist;
use slm_agents::tool::{declared, ToolCall, Toolbox};

/// A model whose reply depends on the request's last user message (so that concurrent cases get their own
/// reply whatever the order), with a finish reason of its own: a cut-off is a reply that ends at the token
/// limit.
struct KeyedModel {
    replies: HashMap<String, (String, FinishReason)>,
}

impl KeyedModel {
    fn new(replies: &[(&str, &str, FinishReason)]) -> Self {
        Self { replies: replies.iter().map(|(k, r, f)| (k.to_string(), (r.to_string(), *f))).collect() }
    }
}

#[slm_agents::async_trait]
impl LanguageModel for KeyedModel {
    fn name(&self) -> &str {
        "keyed"
    }

    async fn complete(&self, request: Request) -> slm_agents::Result<Completion> {
        let Prompt::Chat(messages) = &request.prompt else { panic!("a chat request") };
        let last = &messages.last().expect("a message").content;
        let (text, finish_reason) = self
            .replies
            .iter()
            .find(|(key, _)| last.contains(key.as_str()))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no reply for {last:?}"));
        Ok(Completion {
            text,
            finish_reason,
            usage: Usage { prompt_tokens: 10, completion_tokens: 5, ..Usage::default() },
            logprobs: None,
            redactions: Vec::new(),
        })
    }

    fn stream(&self, request: Request) -> TokenStream {
        ScriptedModel::new(Vec::<String>::new()).stream(request)
    }

    async fn embed(&self, texts: &[String]) -> slm_agents::Result<Vec<Vec<f32>>> {
        ScriptedModel::default().embed(texts).await
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "weather.current".into(),
        description: "Current weather in a city".into(),
        parameters: json!({
            "type": "object",
            "properties": { "city": { "type": "string" }, "unit": { "type": "string", "enum": ["c", "f"] } },
            "required": ["city"],
            "additionalProperties": false,
        }),
    }
}

fn paris_call() -> Expected {
    Expected::Calls(vec![ExpectedCall {
        tool: "weather.current".into(),
        arguments: BTreeMap::from([
            ("city".to_string(), vec![json!("Paris")]),
            ("unit".to_string(), vec![json!("c"), json!("")]),
        ]),
    }])
}

fn case(id: &str, category: &str, question: &str, expected: Expected) -> Case {
    Case {
        id: id.into(),
        category: category.into(),
        messages: vec![Message::user(question)],
        tools: vec![weather_tool()],
        expected,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("right", "simple", "Weather in Paris? (right)", paris_call()),
        case("wrong_arg", "simple", "Weather in Paris? (wrong_arg)", paris_call()),
        case("cut", "simple", "Weather in Paris? (cut)", paris_call()),
        case("invalid", "simple", "Weather in Paris? (invalid)", paris_call()),
        case("wrong_abstain", "simple", "Weather in Paris? (wrong_abstain)", paris_call()),
        case("no_call", "irrelevance", "Book me a flight (no_call)", Expected::NoCall),
    ]
}

fn keyed() -> KeyedModel {
    use FinishReason::{EndOfText, MaxTokens};
    KeyedModel::new(&[
        ("(right)", r#"{"tool":"weather.current","arguments":{"city":"paris"}}"#, EndOfText),
        ("(wrong_arg)", r#"{"tool":"weather.current","arguments":{"city":"Rome"}}"#, EndOfText),
        ("(cut)", r#"{"tool":"weather.current","argum"#, MaxTokens),
        // The scripted model does not follow the grammar: arguments that do not match the schema.
        ("(invalid)", r#"{"tool":"weather.current","arguments":{"city":"Paris","unit":"kelvin"}}"#, EndOfText),
        ("(wrong_abstain)", r#"{"answer":"It is sunny."}"#, EndOfText),
        ("(no_call)", r#"{"answer":"I can only tell the weather."}"#, EndOfText),
    ])
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn the_runner_scores_and_reports_concurrent_cases() {
    let done = Arc::new(AtomicUsize::new(0));
    let seen = done.clone();
    let evaluation = Evaluation::new(cases()).on_progress(move |n, total, _| {
        assert_eq!(total, 6);
        assert_eq!(n, seen.fetch_add(1, Ordering::SeqCst) + 1);
    });
    let report = futures::executor::block_on(evaluation.run(Arc::new(keyed()), 3));
    assert_eq!(done.load(Ordering::SeqCst), 6, "progress after every case");

    let by_id: HashMap<&str, &CaseResult> = report.results.iter().map(|r| (r.id.as_str(), r)).collect();
    let ids: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["right", "wrong_arg", "cut", "invalid", "wrong_abstain", "no_call"], "in the cases' order");

    let right = by_id["right"];
    assert!(right.verdict.correct, "{}", right.verdict.reason);
    assert!(right.schema_valid);
    assert_eq!(
        right.outcome,
        Outcome::Calls(vec![ToolCall { tool: "weather.current".into(), arguments: json!({"city": "paris"}) }])
    );
    assert_eq!((right.prompt_tokens, right.completion_tokens), (10, 5));
    assert_eq!(right.model.as_deref(), Some("keyed"));

    let wrong = by_id["wrong_arg"];
    assert!(!wrong.verdict.correct);
    assert!(wrong.verdict.reason.contains("`city`"), "{}", wrong.verdict.reason);
    assert!(wrong.schema_valid);

    let cut = by_id["cut"];
    assert!(!cut.verdict.correct);
    assert!(!cut.schema_valid);
    match &cut.outcome {
        Outcome::Error { kind, cut_off, .. } => {
            assert!(cut_off);
            assert_eq!(kind, "InvalidOutput");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!((cut.prompt_tokens, cut.completion_tokens), (10, 5), "a failed turn's tokens count");

    let invalid = by_id["invalid"];
    assert!(!invalid.schema_valid, "`kelvin` is not in the enum");
    assert!(!invalid.verdict.correct);

    assert!(!by_id["wrong_abstain"].verdict.correct);
    assert!(by_id["no_call"].verdict.correct);
    assert!(by_id["no_call"].expects_no_call());

    let s = &report.summary;
    assert_eq!((s.cases, s.correct), (6, 2));
    assert!(close(s.accuracy, 2.0 / 6.0));
    assert_eq!((s.categories["simple"].cases, s.categories["simple"].correct), (5, 1));
    assert_eq!((s.categories["irrelevance"].cases, s.categories["irrelevance"].correct), (1, 1));
    assert!(close(s.categories["irrelevance"].accuracy, 1.0));
    assert!(close(s.schema_valid_rate, 4.0 / 6.0), "{}", s.schema_valid_rate);
    assert_eq!((s.errors, s.cut_off), (1, 1));
    assert_eq!(s.abstention_precision, Some(0.5), "two abstained, one rightly");
    assert_eq!(s.abstention_recall, Some(1.0));
    assert_eq!((s.prompt_tokens, s.completion_tokens), (60, 30));
    assert!(s.latency_p50_ms <= s.latency_p95_ms);
    assert!(s.latency_mean_ms >= 0.0);
    assert_eq!(s.model.as_deref(), Some("keyed"));

    // The summary as a table and as one JSON line; the cases as JSON Lines.
    let table = report.to_string();
    assert!(table.contains("irrelevance") && table.contains("33.3%") && table.contains("precision 50.0%"), "{table}");
    let line = report.to_json();
    assert!(!line.contains('\n'));
    let summary: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(summary["correct"], 2);
    assert_eq!(summary["categories"]["simple"]["cases"], 5);

    let path = std::env::temp_dir().join(format!("slm-eval-{}.jsonl", std::process::id()));
    report.write_jsonl(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let back: Vec<CaseResult> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(back, report.results);
    // A report made again from the lines has the same figures (but the wall time).
    let again = Report::new(back, std::time::Duration::ZERO);
    assert_eq!(again.summary.correct, 2);
    assert_eq!(again.summary.abstention_precision, Some(0.5));
}

#[test]
fn the_runner_works_on_the_scripted_model_one_case_at_a_time() {
    let model = Arc::new(ScriptedModel::new([
        r#"{"tool":"weather.current","arguments":{"city":"Paris","unit":"c"}}"#,
        r#"{"answer":"No tool books flights."}"#,
    ]));
    let mut with_context = case("context", "simple", "And in Paris?", paris_call());
    with_context.messages.insert(0, Message::user("Weather in Rome?"));
    with_context.messages.insert(1, Message::assistant("Sunny in Rome."));
    let cases = vec![with_context, case("no", "irrelevance", "Book a flight", Expected::NoCall)];
    let report = futures::executor::block_on(Evaluation::new(cases).run(model.clone(), 1));
    assert!(report.results.iter().all(|r| r.verdict.correct), "{report}");
    assert_eq!(report.summary.abstention_recall, Some(1.0));

    // The earlier messages come before the request, in the one user message; the tools are in the prompt.
    let requests = model.requests();
    let Prompt::Chat(messages) = &requests[0].prompt else { panic!() };
    assert_eq!(messages.last().unwrap().content, "user: Weather in Rome?\nassistant: Sunny in Rome.\n\nAnd in Paris?");
    assert!(messages[0].content.contains("weather.current"), "{}", messages[0].content);
    assert!(requests[0].constraint.is_some(), "decoded under the turn's grammar");
}

/// A typed answer.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Forecast {
    city: String,
    celsius: i32,
}

#[test]
fn run_with_evaluates_a_specialist_of_ones_own_with_typed_answers() {
    let model: Arc<dyn LanguageModel> = Arc::new(KeyedModel::new(&[
        ("Lisbon", r#"{"answer":{"city":"Lisbon","celsius":21}}"#, FinishReason::EndOfText),
        ("Oslo", r#"{"answer":{"city":"Oslo","celsius":30}}"#, FinishReason::EndOfText),
        ("bad", r#"{"answer":"x"}"#, FinishReason::EndOfText),
    ]));
    let typed = |id: &str, q: &str, want: Value| Case {
        id: id.into(),
        category: "forecast".into(),
        messages: vec![Message::user(q)],
        tools: vec![],
        expected: Expected::Answer(want),
    };
    let cases = vec![
        typed("lisbon", "Forecast for Lisbon", json!({"city": "Lisbon", "celsius": 21})),
        typed("oslo", "Forecast for Oslo", json!({"city": "Oslo", "celsius": 5})),
        typed("bad", "bad tool", json!(null)),
    ];
    let built = Arc::new(AtomicUsize::new(0));
    let counter = built.clone();
    let report = futures::executor::block_on(Evaluation::new(cases).run_with(2, move |case| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut b = ModelSpecialist::builder("forecaster").model_arc(model.clone()).instructions("Forecast.");
        if case.id == "bad" {
            b = b.tool_dyn(Arc::new(declared("has space", "", json!({"type": "object"}))));
        }
        b.output::<Forecast>().build()
    }));
    assert_eq!(built.load(Ordering::SeqCst), 3, "one specialist per case");
    let r = &report.results;
    assert!(r[0].verdict.correct, "{}", r[0].verdict.reason);
    assert!(!r[1].verdict.correct && r[1].verdict.reason.contains("expected"), "{}", r[1].verdict.reason);
    // A specialist that cannot be built is an error of its case, not of the evaluation.
    match &r[2].outcome {
        Outcome::Error { kind, message, cut_off: false } => {
            assert_eq!(kind, "Config");
            assert!(message.contains("has space"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(report.summary.errors, 1);
}

#[test]
fn cases_round_trip_through_json_lines() {
    let path = std::env::temp_dir().join(format!("slm-cases-{}.jsonl", std::process::id()));
    let all = cases();
    let text: String = all.iter().map(|c| serde_json::to_string(c).unwrap() + "\n\n").collect();
    std::fs::write(&path, text).unwrap();
    let back = slm_agents::eval::read_cases(&path).unwrap();
    std::fs::write(&path, "{\"id\": 1}\n").unwrap();
    let err = slm_agents::eval::read_cases(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert_eq!(back, all);
    assert!(err.to_string().contains("line 1"), "{err}");
    assert_eq!(err.kind(), slm_agents::ErrorKind::Config);
    // The shape users write by hand.
    let written = serde_json::to_value(&all[5]).unwrap();
    assert_eq!(written["expected"], json!("no_call"));
    assert_eq!(serde_json::to_value(&all[0]).unwrap()["expected"]["calls"][0]["arguments"]["city"], json!(["Paris"]));
}

// --- BFCL ------------------------------------------------------------------------------------------------

fn bfcl_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bfcl");
    assert!(
        dir.join("BFCL_v4_simple_python.json").exists(),
        "models/bfcl is missing: run scripts/fetch-bfcl.sh (make test-deps)"
    );
    dir
}

/// The development split of a category (nothing else is looked at).
fn dev(category: &str) -> Vec<Case> {
    let cases = bfcl::load(bfcl_dir(), category).unwrap();
    bfcl::filter_ids(cases, &bfcl::dev_split(category).unwrap())
}

/// Every schema type in a mapped schema, recursively.
fn types(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(t)) = map.get("type") {
                out.push(t.clone());
            }
            for (key, v) in map {
                if key != "enum" && key != "default" {
                    types(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| types(v, out)),
        _ => {}
    }
}

#[test]
fn bfcl_dev_split_sizes() {
    for (category, n) in
        [("simple_python", 200), ("multiple", 100), ("parallel", 50), ("irrelevance", 120), ("live_simple", 100)]
    {
        let cases = dev(category);
        assert_eq!(cases.len(), n, "{category}");
        assert!(cases.iter().all(|c| c.category == category && !c.tools.is_empty() && !c.messages.is_empty()));
    }
}

#[test]
fn bfcl_first_simple_python_case() {
    let cases = dev("simple_python");
    let first = &cases[0];
    assert_eq!(first.id, "simple_python_0");
    assert_eq!(first.input_text(), "Find the area of a triangle with a base of 10 units and height of 5 units.");
    assert_eq!(first.tools.len(), 1);
    let tool = &first.tools[0];
    assert_eq!(tool.name, "calculate_triangle_area");
    assert_eq!(tool.parameters["type"], "object");
    assert_eq!(tool.parameters["properties"]["base"]["type"], "integer");
    assert_eq!(tool.parameters["required"], json!(["base", "height"]), "`unit` is optional");
    let Expected::Calls(calls) = &first.expected else { panic!("{:?}", first.expected) };
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "calculate_triangle_area");
    assert_eq!(calls[0].arguments["base"], [json!(10)]);
    assert_eq!(calls[0].arguments["height"], [json!(5)]);
    assert_eq!(calls[0].arguments["unit"], [json!("units"), json!("")]);
    let right = ToolCall { tool: "calculate_triangle_area".into(), arguments: json!({"base": 10, "height": 5}) };
    assert!(score(&first.expected, &Outcome::Calls(vec![right])).correct);
}

#[test]
fn bfcl_mapping_dotted_names_optional_args_and_categories() {
    let multiple = dev("multiple");
    let first = &multiple[0];
    assert!(first.tools.len() > 1);
    assert_eq!(first.tools[0].name, "triangle_properties.get", "dots kept");
    let p = &first.tools[0].parameters;
    assert_eq!(p["properties"]["get_area"]["type"], "boolean");
    assert_eq!(p["properties"]["get_area"]["default"], true);
    assert!(p["properties"]["get_area"].get("optional").is_none(), "BFCL's own keys are dropped");
    assert!(!p["required"].as_array().unwrap().contains(&json!("get_area")));
    assert!(first.tools.iter().any(|t| t.parameters["properties"]["radius"]["type"] == "number"), "float is number");

    let parallel = dev("parallel");
    let Expected::Calls(calls) = &parallel[0].expected else { panic!() };
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.tool == "spotify.play"));

    assert!(dev("irrelevance").iter().all(|c| c.expected == Expected::NoCall));

    let live = dev("live_simple");
    assert_eq!(live[0].id, "live_simple_0-0-0");
    let Expected::Calls(calls) = &live[0].expected else { panic!() };
    assert_eq!(calls[0].arguments["user_id"], [json!(7890)]);

    // No BFCL type is left, and every schema compiles (a toolbox accepts every tool, dotted names included).
    for category in bfcl::CATEGORIES {
        for case in dev(category) {
            let mut ts = Vec::new();
            let mut toolbox = Toolbox::new();
            for tool in &case.tools {
                types(&tool.parameters, &mut ts);
                toolbox = toolbox
                    .with_dyn(Arc::new(declared(&tool.name, &tool.description, tool.parameters.clone())))
                    .unwrap_or_else(|e| panic!("{}: {e}", case.id));
            }
            for t in ts {
                assert!(
                    ["object", "number", "integer", "string", "boolean", "array"].contains(&t.as_str()),
                    "{}: {t}",
                    case.id
                );
            }
        }
    }
}

/// A value an accepted value accepts: a dict's keys take their first accepted value (left out where it is
/// `""`), recursively.
fn instance(accepted: &Value) -> Value {
    match accepted {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter_map(|(k, acc)| {
                    let first = acc.as_array().map_or(acc, |a| &a[0]);
                    (first != &json!("")).then(|| (k.clone(), instance(first)))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(instance).collect()),
        other => other.clone(),
    }
}

/// The ground truth itself, as calls (each argument's first accepted value; left out where it is `""`):
/// every one scores right, and nearly every one validates against the mapped schemas (BFCL's answers are not
/// always of the declared type).
#[test]
fn bfcl_ground_truth_scores_right_and_fits_the_mapped_schemas() {
    for category in ["simple_python", "multiple", "parallel", "live_simple"] {
        let cases = dev(category);
        let (mut valid, mut total) = (0, 0);
        for case in &cases {
            let Expected::Calls(want) = &case.expected else { panic!("{}", case.id) };
            let calls: Vec<ToolCall> = want
                .iter()
                .map(|w| ToolCall {
                    tool: w.tool.clone(),
                    arguments: Value::Object(
                        w.arguments
                            .iter()
                            .filter(|(_, acc)| acc[0] != json!(""))
                            .map(|(k, acc)| (k.clone(), instance(&acc[0])))
                            .collect(),
                    ),
                })
                .collect();
            let v = score(&case.expected, &Outcome::Calls(calls.clone()));
            assert!(v.correct, "{}: {}", case.id, v.reason);
            let mut toolbox = Toolbox::new();
            for tool in &case.tools {
                toolbox = toolbox
                    .with_dyn(Arc::new(declared(&tool.name, &tool.description, tool.parameters.clone())))
                    .unwrap();
            }
            for call in &calls {
                total += 1;
                if toolbox.validate(&call.tool, &call.arguments).is_ok() {
                    valid += 1;
                }
            }
        }
        eprintln!("{category}: {valid}/{total} ground-truth calls fit the mapped schemas");
        assert!(valid * 100 >= total * 95, "{category}: {valid}/{total}");
    }
}
