//! Four routers on the same requests: rules, embeddings, a small model's choice, and the cascade that escalates
//! when the small model is unsure.
//!
//! ```text
//! cargo run --release --example 05_router -- [--model PATH] [--threads N] [REQUEST ...]
//! ```

use clap::Parser;
use slm_agents::prelude::*;
use slm_agents::router::{CascadeRouter, Decision, EmbeddingRouter, ModelRouter, Router, RuleRouter};

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The example's options.
#[derive(Parser)]
#[command(
    about = "Four routers on the same requests: rules, embeddings, a small model's choice, and the cascade that escalates."
)]
struct Args {
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// Requests to route (default: a built-in set).
    requests: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args { model: model_path, threads, mut requests } = Args::parse();
    if requests.is_empty() {
        requests = [
            "find me a flight from Tel Aviv to St Petersburg on Friday",
            "a quiet hotel near the Hermitage for two nights",
            "what should we see on Saturday?",
            "tell me about the Baroque architecture of St Petersburg",
        ]
        .map(String::from)
        .to_vec();
    }
    let mut builder = LlamaModel::builder(&model_path);
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    let slm = builder.load()?;

    let examples: [(&str, &str, [&str; 3]); 3] = [
        (
            "flights",
            "flights, planes and airline tickets",
            ["book a flight to Rome", "is there a plane to Paris on Monday", "cheapest airline ticket to Lisbon"],
        ),
        (
            "hotels",
            "hotels, rooms and places to stay",
            ["find me a hotel in Lisbon", "a room for two nights", "where can we stay in Paris"],
        ),
        (
            "guide",
            "sights, museums and things to see",
            ["what should I visit in Rome", "famous museums in Berlin", "things to see in Istanbul"],
        ),
    ];
    let rules = RuleRouter::new("escalate")
        .keywords(["flight", "fly", "plane", "airline"], "flights")
        .keywords(["hotel", "room", "stay", "night"], "hotels")
        .keywords(["see", "visit", "museum", "sight"], "guide");

    futures::executor::block_on(async {
        let mut emb = EmbeddingRouter::builder(slm.clone(), "escalate").threshold(0.75);
        let mut choice = ModelRouter::builder(slm.clone());
        for (name, description, utterances) in examples {
            emb = emb.route(name, utterances);
            choice = choice.route(name, name, description);
            for u in utterances {
                choice = choice.example(u, name);
            }
        }
        let emb = emb.build().await?;
        let choice = choice
            .route("escalate", "escalate", "open-ended questions for a large model")
            .example("explain the history of jazz", "escalate")
            .build()?;
        // The cascade asks the small model to pick among the specialists only, and escalates when it is unsure.
        let mut small = ModelRouter::builder(slm.clone());
        for (name, description, utterances) in examples {
            small = small.route(name, name, description);
            for u in utterances {
                small = small.example(u, name);
            }
        }
        let cascade = CascadeRouter::new(small.build()?, 0.5, "escalate");
        let ctx = RunContext::new();
        let routers: [(&str, &dyn Router<&str>); 4] =
            [("rules", &rules), ("embedding", &emb), ("model choice", &choice), ("cascade", &cascade)];
        for request in &requests {
            println!("{request}");
            for (name, router) in routers {
                let d: Decision<&str> = router.route(request, &ctx).await?;
                println!("  {name:<13} -> {:<9} confidence {:.2}  {}", d.route, d.confidence, d.reason);
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
