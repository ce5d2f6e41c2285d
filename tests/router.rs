//! Routers on a labelled set of requests (tests/data/routing.json, written in our own words).

mod support;

use serde::Deserialize;
use slm_agents::graph::Graph;
use slm_agents::model::LlamaModel;
use slm_agents::router::{EmbeddingRouter, Router, RuleRouter};
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

    eprintln!("majority baseline {baseline:.3}; rules {rule_acc:.3}; embedding {emb_acc:.3}");
    eprintln!("embedding misses:\n{}", emb_wrong.join("\n"));
    eprintln!("rule misses:\n{}", rule_wrong.join("\n"));
    assert!(emb_acc > baseline, "embedding router {emb_acc:.3} vs majority {baseline:.3}");
    assert!(rule_acc > baseline, "rule router {rule_acc:.3} vs majority {baseline:.3}");
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
