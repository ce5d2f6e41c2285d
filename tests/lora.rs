//! LoRA adapters on the shared weights: test adapters made with the `gguf` Python package
//! (`scripts/make-test-adapters.sh`).

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::prelude::*;
use slm_agents::specialist::ModelSpecialist;

const PROMPTS: [&str; 3] = ["Name three rivers.", "What is a lighthouse?", "Describe the sea in one sentence."];

fn model() -> LlamaModel {
    LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .slots(1)
        .context_size(512)
        .adapter("zero", support::adapter_path("zero"))
        .adapter("shift", support::adapter_path("shift"))
        .load()
        .unwrap()
}

async fn answers(model: &LlamaModel) -> Vec<String> {
    let mut out = Vec::new();
    for p in PROMPTS {
        out.push(model.complete(Request::chat([Message::user(p)]).with_max_tokens(24)).await.unwrap().text);
    }
    out
}

#[tokio::test]
async fn a_zero_adapter_changes_nothing_and_a_real_one_changes_the_output() {
    let base = model();
    let zero = base.with_adapter("zero", 1.0).unwrap();
    let shift = base.with_adapter(support::adapter_path("shift").to_str().unwrap(), 1.0).unwrap();
    assert_eq!(zero.adapter(), Some("zero@1"));
    assert!(shift.name().contains("shift"));

    let (b, z, s) = (answers(&base).await, answers(&zero).await, answers(&shift).await);
    assert_eq!(b, z, "B = 0 makes the adapter a no-op");
    assert!(b.iter().zip(&s).any(|(x, y)| x != y), "a non-zero adapter changes the output: {b:?} vs {s:?}");

    // The same (adapter, scale) reuses its lane; the base handle still answers as the base model.
    let again = base.with_adapter("shift", 1.0).unwrap();
    assert_eq!(answers(&again).await, s);
    assert_eq!(answers(&base).await, b);
}

#[test]
fn a_corrupt_adapter_file_is_a_clear_error() {
    let err = LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .adapter("bad", support::adapter_path("corrupt"))
        .load()
        .unwrap_err();
    match &err {
        slm_agents::Error::Adapter { path, reason } => {
            assert!(path.ends_with("smollm2-lora-corrupt.gguf"));
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("expected an adapter error, got {other}"),
    }
}

#[test]
fn a_model_file_is_not_an_adapter_and_an_adapter_is_not_a_model() {
    let err = LlamaModel::builder(support::smollm2_path()).adapter("x", support::smollm2_path()).load().unwrap_err();
    assert!(matches!(err, slm_agents::Error::Adapter { .. }), "{err}");
    let err = LlamaModel::builder(support::adapter_path("shift")).load().unwrap_err();
    assert!(matches!(err, slm_agents::Error::InvalidGguf { .. }), "{err}");
    assert!(err.to_string().contains("adapter"), "{err}");
}

#[test]
fn an_adapter_that_was_not_loaded_is_named_in_the_error() {
    let base = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).load().unwrap();
    let err = base.with_adapter("flights", 1.0).unwrap_err();
    assert!(err.to_string().contains("flights"), "{err}");
    assert!(base.with_adapter("flights", f32::NAN).is_err());
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Reply {
    #[schemars(length(max = 60))]
    text: String,
}

#[tokio::test]
async fn specialists_with_and_without_adapters_share_one_model() {
    let base = model();
    let plain = ModelSpecialist::builder("plain")
        .model(base.clone())
        .instructions("Answer briefly.")
        .output::<Reply>()
        .build()
        .unwrap();
    let tuned = ModelSpecialist::builder("tuned")
        .lora(&base, "shift", 1.0)
        .instructions("Answer briefly.")
        .output::<Reply>()
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let (a, b) =
        futures::join!(plain.run("Name a colour.".to_string(), &ctx), tuned.run("Name a colour.".to_string(), &ctx));
    assert!(a.unwrap().text.len() <= 60);
    assert!(b.unwrap().text.len() <= 60);
    let models: Vec<String> = events.model_calls().into_iter().map(|m| m.model).collect();
    assert!(models.iter().any(|m| m.ends_with("+shift@1")), "{models:?}");
    assert!(models.iter().any(|m| !m.contains('+')), "{models:?}");

    let err = ModelSpecialist::builder("missing").lora(&base, "nope", 1.0).build().unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
