//! The local engine on real models: generation, streaming, batching, cancellation, caching, embeddings.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use slm_agents::model::{FinishReason, LanguageModel, LlamaModel, Message, Request, Sampling};
use slm_agents::Error;

fn chat(text: &str) -> Request {
    Request::chat([Message::user(text)])
}

#[tokio::test]
async fn greedy_generation_is_deterministic() {
    let model = support::smollm2();
    let request = chat("List three fruits.").with_max_tokens(40);
    let a = model.complete(request.clone()).await.unwrap();
    let b = model.complete(request).await.unwrap();
    assert!(!a.text.trim().is_empty());
    assert_eq!(a.text, b.text);
    assert!(a.usage.completion_tokens > 0 && a.usage.completion_tokens <= 40);
}

#[tokio::test]
async fn streaming_yields_the_same_text_as_complete() {
    let model = support::smollm2();
    let request = chat("Write one sentence about the sea.").with_max_tokens(48);
    let whole = model.complete(request.clone()).await.unwrap();
    let mut stream = model.stream(request);
    let mut pieces = Vec::new();
    while let Some(piece) = stream.next().await {
        pieces.push(piece.unwrap());
    }
    assert!(pieces.len() > 3, "expected several pieces, got {pieces:?}");
    assert_eq!(pieces.concat(), whole.text);
    let done = stream.completion().expect("completion after the stream ends");
    assert_eq!(done.text, whole.text);
    assert_eq!(done.usage.completion_tokens, whole.usage.completion_tokens);
}

#[test]
fn runs_without_an_async_runtime() {
    let model = support::smollm2();
    let out = futures::executor::block_on(model.complete(chat("Say hello.").with_max_tokens(8))).unwrap();
    assert!(out.usage.completion_tokens > 0);
}

#[tokio::test]
async fn max_tokens_and_stop_strings_end_generation() {
    let model = support::smollm2();
    let limited = model.complete(chat("Count from 1 to 100, comma separated.").with_max_tokens(5)).await.unwrap();
    assert_eq!(limited.finish_reason, FinishReason::MaxTokens);
    assert_eq!(limited.usage.completion_tokens, 5);

    let request = Request::raw("1, 2, 3, 4, 5, 6,").with_max_tokens(40).with_stop([" 9"]);
    let stopped = support::gemma().complete(request).await.unwrap();
    assert_eq!(stopped.finish_reason, FinishReason::Stop, "{:?}", stopped.text);
    assert!(!stopped.text.contains('9'), "{:?}", stopped.text);
    assert!(stopped.text.contains('8'), "{:?}", stopped.text);
}

#[tokio::test]
async fn concurrent_requests_from_many_tasks_all_complete() {
    let model = support::smollm2();
    let prompts =
        ["Name a colour.", "Name an animal.", "Name a city.", "Name a planet.", "Name a tree.", "Name a river."];
    let mut handles = Vec::new();
    for p in prompts {
        let model = model.clone();
        handles.push(tokio::spawn(async move { model.complete(chat(p).with_max_tokens(16)).await }));
    }
    for h in handles {
        let out = h.await.unwrap().unwrap();
        assert!(out.usage.completion_tokens > 0);
    }
}

#[tokio::test]
async fn concurrent_greedy_output_matches_sequential() {
    let model = support::smollm2();
    let prompts =
        ["Describe rain in one sentence.", "Describe snow in one sentence.", "Describe wind in one sentence."];
    let mut sequential = Vec::new();
    for p in prompts {
        sequential.push(model.complete(chat(p).with_max_tokens(24)).await.unwrap().text);
    }
    let together = futures::future::join_all(prompts.map(|p| model.complete(chat(p).with_max_tokens(24)))).await;
    for (seq, conc) in sequential.iter().zip(together) {
        assert_eq!(seq, &conc.unwrap().text);
    }
}

#[tokio::test]
async fn a_dropped_request_stops_generating() {
    // A model of its own, with one slot: if the dropped request kept generating, the next one would wait for it.
    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).context_size(2048).load().unwrap();
    let long = Request::raw("Once upon a time").with_max_tokens(1500).with_stop(["\u{0}"]);
    let mut stream = model.stream(long.clone());
    assert!(stream.next().await.is_some());
    drop(stream);
    let started = Instant::now();
    let short = model.complete(chat("Hi").with_max_tokens(4)).await.unwrap();
    assert!(short.usage.completion_tokens > 0);
    // 1500 tokens take about 10 s at 150 tok/s; a cancelled request frees the slot within a step.
    assert!(started.elapsed() < Duration::from_secs(4), "waited {:?}", started.elapsed());

    let fut = model.complete(long);
    let timed_out = tokio::time::timeout(Duration::from_millis(200), fut).await;
    assert!(timed_out.is_err(), "1500 tokens cannot finish in 200 ms");
    let started = Instant::now();
    model.complete(chat("Hi").with_max_tokens(4)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(4), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn a_shared_prefix_is_reused_from_the_cache() {
    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(2).load().unwrap();
    let system = Message::system("You are a travel assistant. ".repeat(20));
    let first =
        model.complete(Request::chat([system.clone(), Message::user("Hello")]).with_max_tokens(4)).await.unwrap();
    assert_eq!(first.usage.cached_prompt_tokens, 0);
    let second = model.complete(Request::chat([system, Message::user("Goodbye")]).with_max_tokens(4)).await.unwrap();
    assert!(second.usage.cached_prompt_tokens > 100, "expected the system prompt to be cached: {:?}", second.usage);
    assert!(second.usage.cached_prompt_tokens < second.usage.prompt_tokens);
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let model = support::smollm2();
    let request =
        chat("Invent a name for a boat.").with_max_tokens(16).with_sampling(Sampling::temperature(1.0).with_seed(11));
    let a = model.complete(request.clone()).await.unwrap();
    let b = model.complete(request).await.unwrap();
    assert_eq!(a.text, b.text);
}

#[tokio::test]
async fn embeddings_place_similar_texts_closer() {
    let model = support::smollm2();
    let texts: Vec<String> = ["Book a flight to Paris", "Find me a plane ticket to Rome", "The soup needs more salt"]
        .map(String::from)
        .to_vec();
    let e = model.embed(&texts).await.unwrap();
    assert_eq!(e.len(), 3);
    assert_eq!(e[0].len(), 576);
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((cos(&e[0], &e[0]) - 1.0).abs() < 1e-3, "vectors are unit length");
    assert!(cos(&e[0], &e[1]) > cos(&e[0], &e[2]), "travel requests should be closer to each other than to cooking");
}

#[tokio::test]
async fn base_model_without_template_serves_raw_prompts_only() {
    let model = support::gemma();
    assert!(!model.has_chat_template());
    let err = model.complete(chat("hello")).await.unwrap_err();
    assert!(matches!(err, Error::NoChatTemplate { .. }), "{err}");
    let out = model.complete(Request::raw("The Eiffel Tower is in the city of").with_max_tokens(8)).await.unwrap();
    assert!(out.text.contains("Paris"), "{:?}", out.text);
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_worker() {
    let model = LlamaModel::builder(support::smollm2_path()).threads(1).slots(1).name("short-lived").load().unwrap();
    model.complete(chat("Hi").with_max_tokens(2)).await.unwrap();
    let alive = || worker_threads("slm-short-lived");
    assert_eq!(alive(), 1);
    drop(model);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(alive(), 0, "the worker thread should exit");
}

/// Counts this process's threads with the given name (Linux).
fn worker_threads(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == &name[..name.len().min(15)])
        .count()
}

#[tokio::test]
async fn lanes_decode_in_parallel_and_keep_each_specialists_prefix() {
    // Two lanes of one thread each over one loaded model.
    let model = LlamaModel::builder(support::smollm2_path()).threads(2).lanes(2).slots(2).load().unwrap();
    assert_eq!((model.lanes(), model.batch_requests()), (2, 1));
    let flights = Message::system("You are the flights specialist of a travel team. ".repeat(12));
    let hotels = Message::system("You are the hotels specialist of a travel team. ".repeat(12));
    let ask = |system: &Message, q: &str| Request::chat([system.clone(), Message::user(q)]).with_max_tokens(24);

    // First round: each specialist's instructions are computed once, in parallel on the two lanes.
    let (a, b) = futures::join!(
        model.complete(ask(&flights, "Tel Aviv to Paris?")),
        model.complete(ask(&hotels, "Paris, 2 nights?"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.usage.cached_prompt_tokens < 10 && b.usage.cached_prompt_tokens < 10);

    // Second round, in the other order: each request goes to the lane that holds its prefix.
    for _ in 0..2 {
        let (b, a) = futures::join!(
            model.complete(ask(&hotels, "Rome, 3 nights?")),
            model.complete(ask(&flights, "Paris to Rome?"))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.usage.cached_prompt_tokens > 100, "flights prefix reused: {:?}", a.usage);
        assert!(b.usage.cached_prompt_tokens > 100, "hotels prefix reused: {:?}", b.usage);
    }
    assert_eq!(model.in_flight(), 0);
}
