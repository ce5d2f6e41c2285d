//! Load: a thousand requests at one model from many tasks, then a thousand more with half cancelled mid-way.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use slm_agents::model::{LanguageModel, LlamaModel, Request};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches("kB").trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

const PROMPTS: [&str; 10] = [
    "The capital of France is",
    "One, two, three,",
    "The opposite of hot is",
    "Monday, Tuesday,",
    "The colour of the sky is",
    "Water freezes at",
    "The largest planet is",
    "A, B, C,",
    "Rust is a programming",
    "The sun rises in the",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_requests_complete_with_correct_output_and_bounded_memory() {
    // A small queue, so that most requests wait for room (back-pressure) rather than pile up.
    let model = LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .slots(4)
        .batch_requests(4)
        .queue_size(8)
        .context_size(256)
        .load()
        .unwrap();
    let request = |p: &str| Request::raw(p).with_max_tokens(3);
    let mut expected = HashMap::new();
    for p in PROMPTS {
        expected.insert(p, model.complete(request(p)).await.unwrap().text);
    }
    let before = resident_kib();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let model = model.clone();
        let prompt = PROMPTS[i % PROMPTS.len()];
        tasks.push(tokio::spawn(async move { (prompt, model.complete(request(prompt)).await) }));
    }
    let mut done = 0;
    for task in tasks {
        let (prompt, result) =
            tokio::time::timeout(Duration::from_secs(120), task).await.expect("no deadlock").unwrap();
        let completion = result.unwrap();
        assert_eq!(completion.text, expected[prompt], "output for {prompt:?}");
        done += 1;
    }
    assert_eq!(done, 1000);
    assert_eq!(model.in_flight(), 0);
    let grown = resident_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB over 1000 requests");
    eprintln!("1000 requests in {:.1} s, memory grew {} KiB", started.elapsed().as_secs_f64(), grown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_half_of_them_mid_way_frees_their_slots() {
    let model = LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .slots(4)
        .batch_requests(4)
        .queue_size(8)
        .context_size(512)
        .load()
        .unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let model = model.clone();
        let prompt = PROMPTS[i % PROMPTS.len()];
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                // Would run for 400 tokens; it is dropped after its first piece. Were cancelled requests to keep
                // generating, 500 of them would take about half an hour.
                let mut stream = model.stream(Request::raw(prompt).with_max_tokens(400));
                let first = stream.next().await;
                assert!(matches!(first, Some(Ok(_))), "{first:?}");
                None
            } else {
                Some(model.complete(Request::raw(prompt).with_max_tokens(2)).await)
            }
        }));
    }
    let mut completed = 0;
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(180), task).await.expect("no deadlock").unwrap();
        if let Some(result) = outcome {
            assert!(result.unwrap().usage.completion_tokens > 0);
            completed += 1;
        }
    }
    assert_eq!(completed, 500);
    // Cancellation is noticed before the next step; give the worker a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while model.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(model.in_flight(), 0, "every slot is free again");
    let t = Instant::now();
    model.complete(Request::raw("Hello").with_max_tokens(2)).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    eprintln!("1000 requests, 500 cancelled, in {:.1} s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_model_says_busy_at_once_instead_of_queueing() {
    // One slot, one queued request: the third in flight finds the model full.
    let model = LlamaModel::builder(support::smollm2_path())
        .threads(1)
        .slots(1)
        .queue_size(1)
        .context_size(256)
        .load()
        .unwrap();
    let long = || Request::raw("Count from one to a hundred: one, two,").with_max_tokens(120);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let model = model.clone();
                async move { model.complete(long()).await }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while model.in_flight() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let asked = Instant::now();
    let err = model.try_complete(long()).await.unwrap_err();
    assert!(matches!(err, slm_agents::Error::Busy { .. }), "{err}");
    assert!(err.is_retryable());
    assert!(asked.elapsed() < Duration::from_millis(100), "{:?}", asked.elapsed());
    for task in busy {
        task.await.unwrap().unwrap();
    }
    // Once there is room again, the same call goes through.
    assert!(model.try_complete(Request::raw("Hello").with_max_tokens(2)).await.is_ok());
}
