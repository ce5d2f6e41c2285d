//! The typed task graph: concurrency, branches, timeouts, retries, panics, cancellation, reports.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::graph::{Graph, NodeOutcome, Retry};
use slm_agents::model::ScriptedModel;
use slm_agents::prelude::*;
use slm_agents::Error;

type R<T> = Result<T, Error>;

fn sleeper(ms: u64) -> impl Fn(u32) -> futures::future::BoxFuture<'static, R<u32>> + Send + Sync + 'static {
    move |x: u32| {
        Box::pin(async move {
            futures_timer::Delay::new(Duration::from_millis(ms)).await;
            Ok(x + 1)
        })
    }
}

fn two_sleepers() -> Graph<u32, u32> {
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let a = g.add(sleeper(300)).named("a").after(&x);
    let b = g.add(sleeper(300)).named("b").after(&x);
    let sum = g.add(|(a, b): (u32, u32)| async move { R::Ok(a + b) }).named("sum").after((&a, &b));
    g.output(sum).build().unwrap()
}

#[tokio::test]
async fn independent_nodes_run_in_parallel_under_tokio() {
    let graph = two_sleepers();
    let started = Instant::now();
    assert_eq!(graph.run(1, &RunContext::new()).await.unwrap(), 4);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(550), "two 300 ms nodes took {took:?}: they ran one after the other");
}

#[test]
fn independent_nodes_run_in_parallel_without_a_runtime() {
    let graph = two_sleepers();
    let started = Instant::now();
    assert_eq!(futures::executor::block_on(graph.run(1, &RunContext::new())).unwrap(), 4);
    assert!(started.elapsed() < Duration::from_millis(550));
}

#[tokio::test]
async fn skipped_branches_do_not_run() {
    #[derive(Debug, Clone, PartialEq)]
    enum Size {
        Small,
        Big,
    }
    let ran_small = Arc::new(AtomicBool::new(false));
    let ran_big = Arc::new(AtomicBool::new(false));
    let (s, b) = (ran_small.clone(), ran_big.clone());
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let size = g.branch(&x, |n: &u32| if *n < 10 { Size::Small } else { Size::Big });
    let small = g
        .add(move |n: u32| {
            let s = s.clone();
            async move {
                s.store(true, Ordering::SeqCst);
                R::Ok(format!("small {n}"))
            }
        })
        .named("small")
        .on(&size, Size::Small)
        .after(&x);
    let big = g
        .add(move |n: u32| {
            let b = b.clone();
            async move {
                b.store(true, Ordering::SeqCst);
                R::Ok(format!("big {n}"))
            }
        })
        .named("big")
        .on(&size, Size::Big)
        .after(&x);
    // Depends only on the big branch: skipped with it.
    let shout = g.add(|s: String| async move { R::Ok(s.to_uppercase()) }).named("shout").after(&big);
    let out = g.merge([&small, &shout]);
    let graph = g.output(out).build().unwrap();

    let (result, report) = graph.run_with_report(3, &RunContext::new()).await;
    assert_eq!(result.unwrap(), "small 3");
    assert!(ran_small.load(Ordering::SeqCst));
    assert!(!ran_big.load(Ordering::SeqCst), "the big branch must not run");
    let outcome = |name: &str| report.nodes.iter().find(|n| n.name == name).unwrap().outcome.clone();
    assert_eq!(outcome("big"), NodeOutcome::Skipped);
    assert_eq!(outcome("shout"), NodeOutcome::Skipped);
    assert_eq!(outcome("small"), NodeOutcome::Succeeded);

    assert_eq!(graph.run(30, &RunContext::new()).await.unwrap(), "BIG 30");
    let mermaid = graph.to_mermaid();
    assert!(mermaid.starts_with("flowchart TD"));
    assert!(mermaid.contains("-. Small .->") && mermaid.contains("-. Big .->"), "{mermaid}");
}

#[tokio::test]
async fn a_timeout_names_the_node_and_retries_recover() {
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let slow = g.add(sleeper(2_000)).named("slow lookup").timeout(Duration::from_millis(50)).after(&x);
    let graph = g.output(slow).build().unwrap();
    let started = Instant::now();
    let err = graph.run(1, &RunContext::new()).await.unwrap_err();
    assert!(matches!(&err, Error::NodeTimeout { node, .. } if node == "slow lookup"), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));

    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let flaky = g
        .add(move |n: u32| {
            let t = t.clone();
            async move {
                if t.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(std::io::Error::other("try again"))
                } else {
                    Ok(n * 10)
                }
            }
        })
        .named("flaky")
        .retry(Retry::new(3, Duration::from_millis(5)))
        .after(&x);
    let graph = g.output(flaky).build().unwrap();
    let (result, report) = graph.run_with_report(4, &RunContext::new()).await;
    assert_eq!(result.unwrap(), 40);
    assert_eq!(report.nodes[1].attempts, 3);
}

#[tokio::test]
async fn errors_name_the_node_and_keep_the_cause() {
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let bad = g
        .add(|_: u32| async move { Err::<u32, _>(std::io::Error::other("disk on fire")) })
        .named("load file")
        .after(&x);
    let graph = g.output(bad).build().unwrap();
    let (result, report) = graph.run_with_report(1, &RunContext::new()).await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("load file"), "{err}");
    let source = std::error::Error::source(&err).expect("the cause is kept");
    assert!(source.to_string().contains("disk on fire"));
    assert!(
        matches!(&report.nodes[1].outcome, NodeOutcome::Failed(m) if m.contains("load file")),
        "{:?}",
        report.nodes[1]
    );
}

#[tokio::test]
async fn a_panicking_node_becomes_an_error_naming_it() {
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let boom = g
        .add(|n: u32| async move {
            if n > 0 {
                panic!("node exploded");
            }
            R::Ok(n)
        })
        .named("boom")
        .after(&x);
    let graph = g.output(boom).build().unwrap();
    let err = graph.run(1, &RunContext::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::NodePanicked { node, message } if node == "boom" && message.contains("exploded")),
        "{err}"
    );
}

#[tokio::test]
async fn dropping_the_run_cancels_running_nodes() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let (d, f) = (dropped.clone(), finished.clone());
    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let long = g
        .add(move |n: u32| {
            let (d, f) = (d.clone(), f.clone());
            async move {
                let _guard = Guard(d);
                futures_timer::Delay::new(Duration::from_secs(5)).await;
                f.store(true, Ordering::SeqCst);
                R::Ok(n)
            }
        })
        .named("long")
        .after(&x);
    let graph = g.output(long).build().unwrap();
    let ctx = RunContext::new();
    assert!(tokio::time::timeout(Duration::from_millis(50), graph.run(1, &ctx)).await.is_err());
    assert!(dropped.load(Ordering::SeqCst), "the node's future was dropped");
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test]
async fn graphs_nest_and_report_every_node() {
    let mut inner = Graph::builder::<u32>();
    let x = inner.input();
    let double = inner.add(|n: u32| async move { R::Ok(n * 2) }).named("double").after(&x);
    let inner = inner.output(double).build().unwrap().named("doubler");

    let mut g = Graph::builder::<u32>();
    let x = g.input();
    let d = g.add(inner).after(&x);
    let text = g.add(|n: u32| async move { R::Ok(n.to_string()) }).named("to text").after(&d);
    let both = g.add(|(n, s): (u32, String)| async move { R::Ok(format!("{n}={s}")) }).named("both").after((&d, &text));
    let graph = g.output(both).build().unwrap();
    let (result, report) = graph.run_with_report(21, &RunContext::new()).await;
    assert_eq!(result.unwrap(), "42=42");
    let names: Vec<_> = report.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["input", "doubler", "to text", "both"]);
    for n in &report.nodes {
        assert_eq!(n.outcome, NodeOutcome::Succeeded);
        assert!(n.started.unwrap() <= n.finished.unwrap());
    }
    assert!(report.to_string().contains("doubler"));
}

#[test]
fn handles_of_another_graph_are_refused() {
    let other = Graph::builder::<u32>();
    let foreign = other.input();
    let mut g = Graph::builder::<u32>();
    let bad = g.add(|n: u32| async move { R::Ok(n) }).after(&foreign);
    assert!(matches!(g.output(bad).build(), Err(Error::Graph { .. })));
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Note {
    #[schemars(length(max = 60))]
    text: String,
}

#[tokio::test]
async fn specialists_are_nodes() {
    let model =
        Arc::new(ScriptedModel::new([r#"{"answer": {"text": "flights ok"}}"#, r#"{"answer": {"text": "plan ok"}}"#]));
    let flights = ModelSpecialist::builder("flights").model_arc(model.clone()).output::<Note>().build().unwrap();
    let writer =
        ModelSpecialist::builder("writer").model_arc(model.clone()).input::<Note>().output::<Note>().build().unwrap();
    let mut g = Graph::builder::<String>();
    let task = g.input();
    let f = g.add(flights).after(&task);
    let w = g.add(writer).after(&f);
    let graph = g.output(w).build().unwrap();
    assert_eq!(graph.run("go".into(), &RunContext::new()).await.unwrap().text, "plan ok");
    assert!(graph.to_mermaid().contains("flights"));
}

#[tokio::test]
async fn a_fan_out_fan_in_graph_of_real_specialists_runs() {
    let model = support::smollm2();
    let specialist = |name: &str, job: &str| {
        ModelSpecialist::builder(name)
            .model(model.clone())
            .instructions(format!("You are the {job} specialist of a travel team. Answer in one short sentence."))
            .output::<Note>()
            .max_tokens(64)
            .build()
            .unwrap()
    };
    let mut g = Graph::builder::<String>();
    let trip = g.input();
    let flights = g.add(specialist("flights", "flights")).after(&trip);
    let hotels = g.add(specialist("hotels", "hotels")).after(&trip);
    let merge = g
        .add(|(f, h): (Note, Note)| async move { R::Ok(format!("Flights: {}\nHotels: {}", f.text, h.text)) })
        .named("join")
        .after((&flights, &hotels));
    let secretary = g.add(specialist("secretary", "secretary; you summarise the notes you get")).after(&merge);
    let graph = g.output(secretary).build().unwrap();

    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let (result, report) = graph.run_with_report("A weekend in St Petersburg from Tel Aviv".into(), &ctx).await;
    let plan = result.unwrap();
    assert!(!plan.text.is_empty() && plan.text.len() <= 60);
    let calls = events.model_calls();
    let by = |s: &str| calls.iter().filter(|c| c.specialist == s).count();
    assert_eq!((by("flights"), by("hotels"), by("secretary")), (1, 1, 1));
    // flights and hotels overlapped in time.
    let node = |n: &str| report.nodes.iter().find(|r| r.name == n).unwrap().clone();
    let (f, h) = (node("flights"), node("hotels"));
    assert!(f.started.unwrap() < h.finished.unwrap() && h.started.unwrap() < f.finished.unwrap(), "{report}");
    assert!(node("secretary").started.unwrap() >= f.finished.unwrap().max(h.finished.unwrap()));
}
