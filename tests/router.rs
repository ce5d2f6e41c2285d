//! Routers on a labelled set of requests (tests/data/routing.json, written in our own words).

mod support;

use serde::Deserialize;
use slm_agents::graph::Graph;
use slm_agents::model::LlamaModel;
use slm_agents::model::{LanguageModel, Message, Request};
use slm_agents::router::{CascadeRouter, EmbeddingRouter, ModelRouter, Router, RuleRouter};
use slm_agents::run::RunContext;

#[derive(Deserialize)]
struct Data {
    examples: std::collections::BTreeMap<String, Vec<String>>,
    requests: Vec<(String, String)>,
}

fn data() -> Data {
    serde_json::from_str(include_str!("data/routing.json")).unwrap()
}

fn majority_baseline(d: &Data) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for (_, label) in &d.requests {
        *counts.entry(label.as_str()).or_insert(0usize) += 1;
    }
    *counts.values().max().unwrap() as f64 / d.requests.len() as f64
}

async fn accuracy(router: &dyn Router<String>, d: &Data) -> (f64, Vec<String>) {
    let ctx = RunContext::new();
    let mut right = 0;
    let mut wrong = Vec::new();
    for (text, label) in &d.requests {
        let decision = router.route(text, &ctx).await.unwrap();
        assert!((0.0..=1.0).contains(&decision.confidence));
        assert!(!decision.reason.is_empty());
        if &decision.route == label {
            right += 1;
        } else {
            wrong.push(format!("{text:?}: {label} -> {} ({})", decision.route, decision.reason));
        }
    }
    (right as f64 / d.requests.len() as f64, wrong)
}

fn rules() -> RuleRouter<String> {
    RuleRouter::new("other".to_string())
        .keywords(["flight", "fly", "plane", "airline", "airfare", "seat"], "flights".to_string())
        .keywords(
            ["hotel", "room", "stay", "accommodation", "hostel", "guesthouse", "apartment", "check-in"],
            "hotels".to_string(),
        )
        .keywords(
            [
                "museum",
                "sight",
                "visit",
                "landmark",
                "gallery",
                "galleries",
                "palace",
                "church",
                "tour",
                "see",
                "viewpoint",
            ],
            "sights".to_string(),
        )
        .keywords(
            [
                "weather",
                "rain",
                "snow",
                "forecast",
                "temperature",
                "hot",
                "cold",
                "sunny",
                "windy",
                "storm",
                "umbrella",
                "humidity",
                "coat",
            ],
            "weather".to_string(),
        )
}

#[tokio::test]
async fn rule_and_embedding_routers_beat_the_majority_baseline() {
    let d = data();
    assert!(d.requests.len() >= 60);
    let baseline = majority_baseline(&d);

    let (rule_acc, rule_wrong) = accuracy(&rules(), &d).await;

    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    let mut builder = EmbeddingRouter::builder(model, "other".to_string()).threshold(0.0);
    for (route, examples) in &d.examples {
        builder = builder.route(route.clone(), examples.clone());
    }
    let embedding = builder.build().await.unwrap();
    let (emb_acc, emb_wrong) = accuracy(&embedding, &d).await;

    let chooser = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    let mut builder = ModelRouter::builder(chooser)
        .route("flights".to_string(), "flights", "flights, planes, airlines and plane tickets")
        .route("hotels".to_string(), "hotels", "hotels, rooms and places to stay")
        .route("sights".to_string(), "sights", "museums, landmarks and things to see or visit")
        .route("weather".to_string(), "weather", "weather, forecasts, rain, snow and temperature")
        .route("other".to_string(), "other", "anything that is not about travel");
    for i in 0..5 {
        for (route, examples) in &d.examples {
            builder = builder.example(examples[i].clone(), route.clone());
        }
    }
    let model_router = builder.example("write me a haiku", "other").build().unwrap();
    let (model_acc, model_wrong) = accuracy(&model_router, &d).await;

    eprintln!(
        "majority baseline {baseline:.3}; rules {rule_acc:.3}; embedding {emb_acc:.3}; model choice {model_acc:.3}"
    );
    eprintln!("model-choice misses:\n{}", model_wrong.join("\n"));
    eprintln!("embedding misses:\n{}", emb_wrong.join("\n"));
    eprintln!("rule misses:\n{}", rule_wrong.join("\n"));
    assert!(emb_acc > baseline, "embedding router {emb_acc:.3} vs majority {baseline:.3}");
    assert!(rule_acc > baseline, "rule router {rule_acc:.3} vs majority {baseline:.3}");
    assert!(model_acc > baseline, "model-choice router {model_acc:.3} vs majority {baseline:.3}");

    // The cascade: the model's choice when it is sure, otherwise the large model.
    let cascade = CascadeRouter::new(model_router, 0.5, "escalate".to_string());
    let ctx = RunContext::new();
    let mut escalated = 0;
    let mut right_when_kept = (0, 0);
    for (text, label) in &d.requests {
        let decision = cascade.route(text, &ctx).await.unwrap();
        if decision.route == "escalate" {
            assert!(decision.reason.starts_with("escalated"), "{}", decision.reason);
            escalated += 1;
        } else {
            right_when_kept.1 += 1;
            if &decision.route == label {
                right_when_kept.0 += 1;
            }
        }
    }
    eprintln!(
        "cascade at 0.5: escalation rate {:.3}; accuracy of the routes kept {}/{}",
        escalated as f64 / d.requests.len() as f64,
        right_when_kept.0,
        right_when_kept.1
    );
    assert!(escalated > 0 && escalated < d.requests.len());
}

#[tokio::test]
async fn log_probabilities_follow_the_constraint() {
    let model = support::smollm2();
    let request = Request::chat([Message::user("Is the sky blue? Answer yes or no.")])
        .with_constraint(slm_agents::model::Constraint::Regex("(yes|no)".into()))
        .with_logprobs()
        .with_max_tokens(4);
    let c = model.complete(request).await.unwrap();
    let lps = c.logprobs.expect("asked for log-probabilities");
    assert_eq!(lps.len(), c.usage.completion_tokens);
    let first = &lps[0];
    assert!(first.logprob <= 0.0);
    // Under the constraint only "yes"/"no" beginnings are possible: their probabilities add up to about 1.
    let total: f32 = first.top.iter().map(|(_, lp)| lp.exp()).sum();
    assert!((total - 1.0).abs() < 0.02, "{:?}", first.top);
    assert!(
        first.top.iter().all(|(t, _)| "yes".starts_with(t.as_str()) || "no".starts_with(t.as_str())),
        "{:?}",
        first.top
    );
    // Without it, a plain request reports probabilities over the whole vocabulary.
    let free =
        model.complete(Request::chat([Message::user("Say hi.")]).with_logprobs().with_max_tokens(3)).await.unwrap();
    assert!(free.logprobs.unwrap().iter().all(|t| t.logprob <= 0.0 && t.top.len() == 5));
}

#[tokio::test]
async fn a_router_decides_a_graph_branch() {
    let mut g = Graph::builder::<String>();
    let task = g.input();
    let desk = g.route(&task, rules());
    let flights = g
        .add(|t: String| async move { Ok::<_, slm_agents::Error>(format!("flights desk: {t}")) })
        .named("flights")
        .on(&desk, "flights".to_string())
        .after(&task);
    let other = g
        .add(|t: String| async move { Ok::<_, slm_agents::Error>(format!("front desk: {t}")) })
        .named("front")
        .on(&desk, "other".to_string())
        .after(&task);
    let answer = g.merge([&flights, &other]);
    let graph = g.output(answer).build().unwrap();
    let ctx = RunContext::new();
    assert_eq!(graph.run("a flight to Rome".into(), &ctx).await.unwrap(), "flights desk: a flight to Rome");
    assert_eq!(graph.run("tell me a joke".into(), &ctx).await.unwrap(), "front desk: tell me a joke");
}
