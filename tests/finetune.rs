//! Fine-tuning in a child process on the real model (feature `train`). Its own `main` (no libtest harness):
//! the child is this test binary started again, so it must serve the job before anything else.

mod support;

use std::sync::atomic::AtomicBool;

use serde_json::json;
use slm_agents::finetune::{self, serve_child, FineTune, Progress};
use slm_agents::model::{LanguageModel, LlamaModel, Message, Request};
use slm_agents::Error;

/// A dozen weather calls in the chat fine-tuning format the conversion loop exports.
fn write_examples(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let tools = json!([{"type": "function", "function": {"name": "weather.current", "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let line = |city: &str, phrasing: &str| {
        json!({"messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": phrasing.replace("{c}", city)},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                "function": {"name": "weather.current", "arguments": json!({"city": city}).to_string()}}]}],
            "tools": tools})
        .to_string()
    };
    let phrasings = ["What's the weather in {c}?", "Is it raining in {c}?", "How warm is it in {c} today?"];
    let cities = ["Paris", "Rome", "Oslo", "Cairo", "Lima", "Kyiv", "Quito", "Hanoi"];
    let train: Vec<String> = cities.iter().enumerate().map(|(i, c)| line(c, phrasings[i % 3])).collect();
    let test: Vec<String> = ["Dublin", "Tokyo"].iter().map(|c| line(c, phrasings[0])).collect();
    let (a, b) = (dir.join("train.jsonl"), dir.join("test.jsonl"));
    std::fs::write(&a, train.join("\n")).unwrap();
    std::fs::write(&b, test.join("\n")).unwrap();
    (a, b)
}

fn a_short_run_makes_an_adapter_that_lowers_the_held_out_loss(dir: &std::path::Path) {
    let (train, test) = write_examples(dir);
    let (out, full) = (dir.join("adapter.gguf"), dir.join("tuned-f32.gguf"));
    let mut events = Vec::new();
    let tuned = FineTune::new(support::smollm2_path())
        .train(&train)
        .eval(&test)
        .out(&out)
        .keep_model(&full)
        .last_layers(2)
        .epochs(2)
        .learning_rate(2e-4)
        .ranks([2, 8])
        .threads(2)
        .run(|p: &Progress| events.push(p.clone()))
        .unwrap();
    eprintln!("{tuned:?}");
    assert!(matches!(events[0], Progress::Rendered { train: 8, eval: 2 }), "{:?}", events[0]);
    let windows =
        events.iter().find_map(|e| if let Progress::Started { windows, .. } = e { Some(*windows) } else { None });
    assert!(windows.is_some_and(|w| w > 0), "{events:?}");
    let losses: Vec<f64> =
        events.iter().filter_map(|e| if let Progress::Epoch { loss, .. } = e { Some(*loss) } else { None }).collect();
    assert_eq!(losses.len(), 2, "{events:?}");
    assert!(losses[1] < losses[0], "training lowers the loss: {losses:?}");
    assert!(events.iter().any(|e| matches!(e, Progress::Step { .. })));
    assert!(events.iter().any(|e| matches!(e, Progress::Factoring { .. })));

    // Both ranks and the base were scored; the chosen adapter is one of them, on disk, and beats the base on
    // the held-out replies.
    let ranks: Vec<usize> = tuned.rank_losses.iter().map(|(r, _)| *r).collect();
    assert_eq!(ranks, [0, 2, 8], "{tuned:?}");
    assert!([2, 8].contains(&tuned.rank));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), tuned.adapter_bytes);
    let (adapter_loss, base_loss) = tuned.adapter_loss().unwrap();
    assert!(adapter_loss < base_loss, "the adapter lowers the held-out loss: {adapter_loss} vs {base_loss}");
    assert!(tuned.peak_memory_bytes.is_some_and(|b| b > 100_000_000), "{tuned:?}");

    // The adapter applies to the quantized base in the engine, and changes what the model says.
    let base = LlamaModel::builder(support::smollm2_path()).threads(1).adapter("tuned", &out).load().unwrap();
    let with_adapter = base.with_adapter("tuned", 1.0).unwrap();
    let ask = |m: &LlamaModel| {
        let request =
            Request::chat([Message::user("What's the weather in Dublin?")]).with_max_tokens(12).with_logprobs();
        futures::executor::block_on(m.complete(request)).unwrap()
    };
    let (plain, adapted) = (ask(&base), ask(&with_adapter));
    let first = |c: &slm_agents::model::Completion| c.logprobs.as_ref().and_then(|l| l.first()).map(|t| t.logprob);
    assert_ne!(first(&plain), first(&adapted), "{plain:?} vs {adapted:?}");

    // The full model was kept too, and loads in the engine with its chat template (the metadata was repaired).
    assert_eq!(tuned.model.as_deref(), Some(full.as_path()));
    let model = LlamaModel::builder(&full).threads(1).load().unwrap();
    assert!(model.has_chat_template());
    // The held-out calls become evaluation cases.
    let cases = finetune::test_cases(&test).unwrap();
    assert_eq!(cases.len(), 2);

    // From the kept model, without training: an adapter of the same rank over 4 matrices only is smaller.
    let fewer = FineTune::new(support::smollm2_path())
        .train(&train)
        .eval(&test)
        .from_tuned(&full)
        .out(dir.join("adapter-4.gguf"))
        .ranks([tuned.rank])
        .max_matrices(4)
        .threads(2)
        .run(|_| {})
        .unwrap();
    assert_eq!(fewer.rank, tuned.rank);
    assert!(fewer.adapter_bytes < tuned.adapter_bytes / 2, "{fewer:?}");
    assert!(fewer.loss.is_none(), "nothing was trained: {fewer:?}");
}

fn a_crash_in_training_is_an_error_and_the_host_goes_on(dir: &std::path::Path) {
    let (train, _) = write_examples(dir);
    // A negative learning rate is checked before anything runs...
    let checked = FineTune::new(support::smollm2_path()).train(&train).learning_rate(-1.0).run(|_| {});
    assert!(matches!(checked, Err(Error::InvalidSetting { setting: "learning_rate", .. })), "{checked:?}");
    // ...and, past the checks, llama.cpp asserts on it and aborts the training process, not this one.
    let crashed = FineTune::new(support::smollm2_path())
        .train(&train)
        .out(dir.join("never.gguf"))
        .learning_rate(-1.0)
        .last_layers(1)
        .threads(1)
        .skip_checks()
        .run_cancellable(|_| {}, &AtomicBool::new(false));
    let Err(Error::Training { reason }) = crashed else { panic!("{crashed:?}") };
    eprintln!("{reason}");
    assert!(reason.contains("ended with") && reason.contains("GGML_ASSERT"), "{reason}");
    assert!(!dir.join("never.gguf").exists());
}

type Test = fn(&std::path::Path);

fn main() {
    if let Some(code) = serve_child() {
        std::process::exit(code);
    }
    let dir = std::env::temp_dir().join(format!("slm-finetune-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tests: [(&str, Test); 2] = [
        ("a_crash_in_training_is_an_error_and_the_host_goes_on", a_crash_in_training_is_an_error_and_the_host_goes_on),
        (
            "a_short_run_makes_an_adapter_that_lowers_the_held_out_loss",
            a_short_run_makes_an_adapter_that_lowers_the_held_out_loss,
        ),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, test) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        test(&dir);
        eprintln!("test {name} ... ok");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
