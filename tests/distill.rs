//! The conversion loop's curation (S2) over a ledger of real runs: failed calls dropped, duplicates dropped,
//! personal data gone from everything kept; near-duplicates found with the real model's embeddings.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::distill::{curate, remove_near_duplicates};
use slm_agents::ledger::LedgerRecord;
use slm_agents::model::ScriptedModel;
use slm_agents::prelude::*;
use slm_agents::run::MemoryRecorder;
use slm_agents::tool::tool_fn;

#[derive(Deserialize, JsonSchema)]
struct Mail {
    #[schemars(length(max = 80))]
    to: String,
}

fn records(events: &MemoryRecorder) -> Vec<LedgerRecord> {
    events
        .events()
        .into_iter()
        .enumerate()
        .map(|(i, event)| LedgerRecord { schema: 1, seq: i as u64, at_ms: 0, event })
        .collect()
}

fn run(events: &Arc<MemoryRecorder>, request: &str, reply: &str) {
    let s = ModelSpecialist::builder("mailer")
        .model(ScriptedModel::new([reply, r#"{"answer": "sent"}"#]))
        .tool_dyn(Arc::new(tool_fn("mail.send", "Sends a mail to an address", |m: Mail| async move {
            Ok::<_, std::io::Error>(format!("sent to {}", m.to))
        })))
        .build()
        .unwrap();
    let ctx = RunContext::new().with_recorder(events.clone());
    let _ = futures::executor::block_on(s.run(request.to_string(), &ctx));
}

#[test]
fn curation_drops_failures_and_duplicates_and_scrubs_personal_data() {
    let events = Arc::new(MemoryRecorder::default());
    let call = r#"{"tool": "mail.send", "arguments": {"to": "dana@example.com"}}"#;
    run(&events, "Send the mail to dana@example.com", call);
    run(&events, "Send the mail to dana@example.com", call);
    run(
        &events,
        "Mail the report to joe@example.org, or call +44 20 7946 0958",
        r#"{"tool": "mail.send", "arguments": {"to": "joe@example.org"}}"#,
    );
    run(&events, "Send it", "this is not JSON");
    let curated = curate(&records(&events));
    let r = &curated.report;
    eprintln!("{r}");
    // Per run: a call turn and an answer turn; the last run's only turn failed.
    assert_eq!(r.calls, 7);
    assert_eq!(r.failed_dropped, 1);
    assert_eq!(r.duplicates_removed, 2, "the second run repeats the first, both turns");
    assert_eq!(r.kept, 4);
    assert!(r.redacted_calls >= 3, "{r:?}");
    let all = serde_json::to_string(&curated.calls).unwrap();
    for secret in ["dana@example.com", "joe@example.org", "7946"] {
        assert!(!all.contains(secret), "{secret} left in {all}");
    }
    // One numbering per call: the address in the request and in the call's arguments is one placeholder.
    let first = &curated.calls[0];
    let placeholder = first.tool_calls[0].arguments["to"].as_str().unwrap();
    assert!(placeholder.starts_with('[') && first.request().contains(placeholder), "{first:?}");
    // The tools the model was shown travel with the call.
    assert_eq!(first.tools[0].name, "mail.send");
}

#[tokio::test]
async fn near_duplicates_are_found_with_the_real_models_embeddings() {
    let events = Arc::new(MemoryRecorder::default());
    let call = r#"{"tool": "mail.send", "arguments": {"to": "the team"}}"#;
    run(&events, "Send the weekly report to the team", call);
    run(&events, "Send the weekly report to the team!", call);
    run(&events, "What is the capital of France?", r#"{"answer": "Paris"}"#);
    let mut curated = curate(&records(&events));
    let before = curated.calls.len();
    let model = support::smollm2();
    let dropped = remove_near_duplicates(&mut curated, &model, 0.97).await.unwrap();
    eprintln!("{}", curated.report);
    assert!(dropped >= 1, "the retyped request is a near-duplicate");
    assert_eq!(curated.calls.len(), before - dropped);
    assert!(curated.calls.iter().any(|c| c.request().contains("capital")), "a different request is kept");
    assert_eq!(curated.report.near_duplicates_removed, dropped);
}

// ---------------------------------------------------------------------------------------------------------
// The loop on the bundled workload (examples/data/workload.jsonl, written by examples/make_workload.rs).

mod workload {
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;

    use regex::Regex;
    use serde_json::Value;
    use slm_agents::distill::{self, Candidate, ClusterOptions, Curated, SelectOptions};
    use slm_agents::ledger;
    use slm_agents::router::Router;
    use slm_agents::run::RunContext;

    fn data(file: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data").join(file)
    }

    struct Truth {
        tasks: HashMap<String, String>,
        repeats: Vec<(String, String, bool)>,
    }

    fn truth() -> Truth {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(data("workload.truth.json")).unwrap()).unwrap();
        let tasks = serde_json::from_value(v["tasks"].clone()).unwrap();
        let repeats = v["repeats"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(run, r)| (run.clone(), r["of"].as_str().unwrap().to_owned(), r["exact"].as_bool().unwrap()))
            .collect();
        Truth { tasks, repeats }
    }

    /// Every email address, phone number and card number written in the raw ledger.
    fn personal_data(raw: &str) -> HashSet<String> {
        let re = Regex::new(r"[\w.]+@[\w.]+\.\w+|\+1 415 555 \d{4}|\d{4} \d{4} \d{4} \d{4}").unwrap();
        re.find_iter(raw).map(|m| m.as_str().to_owned()).collect()
    }

    #[tokio::test]
    async fn the_loop_finds_the_workloads_tasks_repeats_and_removes_its_personal_data() {
        let (records, _) = ledger::read_jsonl(data("workload.jsonl")).unwrap();
        let truth = truth();
        let mut curated: Curated = distill::curate(&records);
        let model = std::sync::Arc::new(super::support::smollm2());
        let mut embeddings = distill::embed_requests(&curated, &*model).await.unwrap();
        distill::drop_near_duplicates(&mut curated, &mut embeddings, 0.97);
        let r = &curated.report;
        eprintln!("{r}");
        assert!(r.failed_dropped > 0 && r.duplicates_removed > 0 && r.near_duplicates_removed > 0, "{r:?}");

        // Every repeat is found: of a run and its repeat, at most one first turn is kept.
        let first_turns: HashSet<&str> =
            curated.calls.iter().filter(|c| c.messages.len() == 2).map(|c| c.run.as_str()).collect();
        for (run, of, exact) in &truth.repeats {
            assert!(
                !(first_turns.contains(run.as_str()) && first_turns.contains(of.as_str())),
                "{run} repeats {of} (exact: {exact}) and both were kept"
            );
        }

        // Clusters match the tasks, the open questions apart.
        let clustering = distill::fit(&curated, &embeddings, &ClusterOptions::default()).unwrap();
        eprintln!("{clustering}");
        let labels: Vec<&str> = curated.calls.iter().map(|c| truth.tasks[&c.run].as_str()).collect();
        let purity = distill::purity(&clustering.assignments, &labels);
        eprintln!("purity {purity:.3}");
        assert!(purity >= 0.9, "purity {purity}");
        for (call, &k) in curated.calls.iter().zip(&clustering.assignments) {
            let open = truth.tasks[&call.run] == "open";
            assert_eq!(
                clustering.clusters[k].open_ended,
                open,
                "{:?} in {:?}",
                call.request(),
                clustering.clusters[k].label
            );
        }
        let tools: HashSet<_> = clustering.clusters.iter().filter_map(|c| c.tool.clone()).collect();
        assert_eq!(tools.len(), 6, "one cluster per tool at least: {tools:?}");

        // The router built from the centroids sends requests to their cluster.
        let router = clustering.router(model.clone(), 0.0);
        let ctx = RunContext::new();
        let mut right = 0;
        let sample: Vec<usize> = (0..curated.calls.len()).step_by(37).collect();
        for &i in &sample {
            let d = router.route(curated.calls[i].request(), &ctx).await.unwrap();
            let k = d.route.unwrap();
            right += usize::from(
                truth.tasks[&curated.calls[i].run]
                    == truth.tasks
                        [&curated.calls.iter().zip(&clustering.assignments).find(|(_, &a)| a == k).unwrap().0.run],
            );
        }
        eprintln!("router: {right}/{} to a cluster of their task", sample.len());
        assert!(right * 10 >= sample.len() * 8, "{right}/{}", sample.len());

        // The export holds none of the personal data, and each line is a chat example ending in the
        // assistant's turn.
        let dir = std::env::temp_dir().join(format!("slm-distill-export-{}", std::process::id()));
        let exported = distill::export(&curated, &clustering, &dir, 0.2).unwrap();
        assert_eq!(exported.len(), clustering.clusters.len());
        let raw = std::fs::read_to_string(data("workload.jsonl")).unwrap();
        let secrets = personal_data(&raw);
        assert!(secrets.len() > 20, "the workload has personal data: {}", secrets.len());
        let mut lines = 0;
        for e in &exported {
            assert!(e.train_examples > 0 && e.test_examples > 0, "{e:?}");
            for path in [&e.train, &e.test] {
                let text = std::fs::read_to_string(path).unwrap();
                for secret in &secrets {
                    assert!(!text.contains(secret.as_str()), "{secret} in {}", path.display());
                }
                for line in text.lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    let last = v["messages"].as_array().unwrap().last().unwrap();
                    assert_eq!(last["role"], "assistant", "{line}");
                    assert!(v["tools"].as_array().is_some_and(|t| t.len() == 6));
                    lines += 1;
                }
            }
        }
        assert_eq!(lines, curated.calls.len());
        let _ = std::fs::remove_dir_all(&dir);

        // S4 on the real model: a table per cluster, its accuracy what its agreements say.
        let options = SelectOptions::default().max_cases(3);
        let selection = distill::select(&curated, &clustering, &[Candidate::new(model.clone())], &options, None).await;
        eprintln!("{selection}");
        assert_eq!(selection.clusters.len(), clustering.clusters.len());
        let mut agreed = 0;
        for c in &selection.clusters {
            assert_eq!(c.cases, 3, "{c:?}");
            let s = &c.candidates[0];
            assert_eq!(s.cases, 3);
            assert!((s.accuracy - s.agreed as f64 / 3.0).abs() < 1e-9);
            assert!(s.latency_mean_ms > 0.0 && c.logged_latency_ms > 0.0);
            agreed += s.agreed;
        }
        assert!(agreed > 0, "SmolLM2 agrees with the large model on some calls");
    }
}

// ---------------------------------------------------------------------------------------------------------
// S6: shadow and promote.

mod shadow {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use slm_agents::agent::{from_fn, Agent};
    use slm_agents::distill::{self, PromotionRule, Shadowed};
    use slm_agents::prelude::*;
    use slm_agents::router::RuleRouter;
    use slm_agents::run::{MemoryRecorder, RunEvent};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
    struct City {
        /// The city's name.
        #[schemars(length(max = 40))]
        city: String,
    }

    const CITIES: [&str; 8] = ["Paris", "London", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Dublin"];

    /// The large model's part: reads the city off the request.
    fn current() -> impl Agent<Input = String, Output = City> {
        from_fn(|request: String| async move {
            let city = request.trim_end_matches('?').rsplit(' ').next().unwrap_or_default().to_owned();
            Ok::<_, std::io::Error>(City { city })
        })
        .named("large-model")
    }

    fn smol(name: &str, instructions: &str) -> ModelSpecialist<String, City> {
        ModelSpecialist::builder(name)
            .model(super::support::smollm2())
            .instructions(instructions)
            .output::<City>()
            .build()
            .unwrap()
    }

    /// The same model with an adapter that shifts what it says: a fine-tune gone wrong.
    fn shifted() -> ModelSpecialist<String, City> {
        let base = LlamaModel::builder(super::support::smollm2_path())
            .threads(1)
            .adapter("shift", super::support::adapter_path("shift"))
            .load()
            .unwrap();
        ModelSpecialist::builder("smol-shifted")
            .lora(&base, "shift", 1.0)
            .instructions("Say which city the request is about.")
            .output::<City>()
            .build()
            .unwrap()
    }

    fn promotions(events: &MemoryRecorder) -> Vec<(usize, bool, String)> {
        events
            .events()
            .into_iter()
            .filter_map(|e| match e {
                RunEvent::Promotion(p) => Some((p.cluster, p.promoted, p.reason)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_small_model_that_agrees_is_promoted_one_that_does_not_is_not() {
        // The route decision comes from the centroids of a clustering of logged calls.
        let events = Arc::new(MemoryRecorder::default());
        for (i, request) in ["What's the weather in Oslo?", "What's the weather in Cairo?", "Weather in Tokyo?"]
            .into_iter()
            .chain(["Send the report to the team", "Mail the invoice to accounts", "Email the minutes to Ana"])
            .enumerate()
        {
            let _ = i;
            super::run(&events, request, r#"{"answer": "done"}"#);
        }
        let records: Vec<_> = events
            .events()
            .into_iter()
            .enumerate()
            .map(|(i, event)| slm_agents::ledger::LedgerRecord { schema: 1, seq: i as u64, at_ms: 0, event })
            .collect();
        let curated = distill::curate(&records);
        let model: Arc<dyn LanguageModel> = Arc::new(super::support::smollm2());
        let clustering =
            distill::cluster(&curated, &*model, &distill::ClusterOptions::default().k_range(2..=2)).await.unwrap();
        let weather = clustering.assignments[0];
        let router = clustering.router(model, 0.0);

        let rule = PromotionRule::new(5, 0.8);
        let good = Shadowed::builder(current(), router)
            .candidate(weather, smol("smol-city", "Say which city the request is about."))
            .rule(rule)
            .build();
        let bad = Shadowed::builder(current(), clustering.router(Arc::new(super::support::smollm2()), 0.0))
            .candidate(weather, shifted())
            .rule(rule)
            .build();
        let ledger = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(ledger.clone());
        for (i, city) in CITIES.iter().take(5).enumerate() {
            let request = format!("What's the weather in {city}?");
            // The answer is the current agent's, before any comparison ran.
            assert_eq!(good.run(request.clone(), &ctx).await.unwrap().city, *city);
            assert_eq!(bad.run(request, &ctx).await.unwrap().city, *city);
            assert!(!good.is_promoted(weather), "promoted after {i} comparisons");
            assert_eq!(good.settle().await, 1);
            assert_eq!(bad.settle().await, 1);
        }
        eprintln!("{:?}\n{:?}", good.status(), bad.status());

        assert!(good.is_promoted(weather), "{:?}", good.status());
        assert!(!bad.is_promoted(weather), "{:?}", bad.status());
        let decisions = promotions(&ledger);
        assert_eq!(decisions.len(), 1, "{decisions:?}");
        assert!(decisions[0].1 && decisions[0].2.contains("80%"), "{decisions:?}");
        let shadows = ledger.events().into_iter().filter(|e| matches!(e, RunEvent::Shadow(_))).count();
        assert_eq!(shadows, 10);

        // Promoted, the small model serves the cluster and the large one runs in its shadow.
        let before = ledger.events().len();
        let answer = good.run("What's the weather in Vienna?".into(), &ctx).await.unwrap();
        let served: Vec<String> = ledger.events()[before..]
            .iter()
            .filter_map(|e| if let RunEvent::ModelCall(m) = e { Some(m.specialist.clone()) } else { None })
            .collect();
        assert_eq!(served, ["smol-city"], "{answer:?}");
        assert_eq!(good.settle().await, 1);
    }

    #[tokio::test]
    async fn a_promoted_candidate_that_stops_agreeing_is_rolled_back() {
        // Orchestration only: stand-in agents. The candidate agrees for 4 requests, then names another city.
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let candidate = from_fn(move |request: String| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let city = if n < 4 {
                    request.rsplit(' ').next().unwrap_or_default().trim_end_matches('?').to_owned()
                } else {
                    "Tokyo".into()
                };
                Ok::<_, std::io::Error>(City { city })
            }
        })
        .named("candidate");
        let router = RuleRouter::new(None).keywords(["weather"], Some(0usize));
        let shadowed = Shadowed::builder(current(), router)
            .candidate(0, candidate)
            .rule(PromotionRule::new(4, 0.75).rollback_below(0.5))
            .build();
        let ledger = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(ledger.clone());
        // Other requests are not routed to the candidate.
        shadowed.run("Send the mail".into(), &ctx).await.unwrap();
        assert_eq!(shadowed.settle().await, 0);
        for city in CITIES.iter().cycle().take(8) {
            shadowed.run(format!("What's the weather in {city}?"), &ctx).await.unwrap();
            shadowed.settle().await;
        }
        let decisions = promotions(&ledger);
        eprintln!("{decisions:#?}");
        assert_eq!(decisions.iter().map(|d| d.1).collect::<Vec<_>>(), [true, false], "{decisions:?}");
        assert!(decisions[1].2.contains("fell below 50%"));
        assert!(!shadowed.is_promoted(0));
        // The worker, spawned, runs comparisons as they come.
        let worker = tokio::spawn(shadowed.worker());
        shadowed.run("What's the weather in Rome?".into(), &ctx).await.unwrap();
        for _ in 0..100 {
            if shadowed.status()[0].compared == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(shadowed.status()[0].compared, 1);
        worker.abort();
    }

    #[tokio::test]
    async fn a_promoted_candidate_that_fails_is_covered_and_counted() {
        let failing =
            from_fn(|_: String| async move { Err::<City, _>(std::io::Error::other("out of memory")) }).named("failing");
        let shadowed = Shadowed::builder(current(), RuleRouter::new(None).keywords(["weather"], Some(0usize)))
            .candidate(0, failing)
            .promoted(0)
            .max_pending(2)
            .build();
        let ledger = Arc::new(MemoryRecorder::default());
        let ctx = RunContext::new().with_recorder(ledger.clone());
        let answer = shadowed.run("What's the weather in Oslo?".into(), &ctx).await.unwrap();
        assert_eq!(answer.city, "Oslo", "the current agent answers for the failed candidate");
        assert_eq!(shadowed.settle().await, 1);
        let status = &shadowed.status()[0];
        assert_eq!((status.compared, status.agreement), (1, 0.0));
        let shadow =
            ledger.events().into_iter().find_map(|e| if let RunEvent::Shadow(s) = e { Some(s) } else { None }).unwrap();
        assert!(!shadow.agreed && shadow.error.as_deref().is_some_and(|e| e.contains("out of memory")), "{shadow:?}");
        // Nothing drains the queue: beyond two waiting comparisons, new ones are dropped.
        for _ in 0..5 {
            shadowed.run("What's the weather in Rome?".into(), &ctx).await.unwrap();
        }
        assert_eq!(shadowed.settle().await, 2);
    }
}
