//! Every door through which text can reach a remote model obeys the privacy policy: a model's own policy
//! (set on its builder), a run's policy, or both. Each test points a `RemoteModel` at a local listener that
//! counts connections and keeps what it was sent: under `LocalOnly` there must be no connection at all, under
//! `Redact` no raw value may arrive. Doors: complete, stream, embed, generate, the embedding router's build,
//! a specialist, a team's manager, a model-choice router.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::agent::{from_fn, Agent, Team, TeamResults};
use slm_agents::model::{LanguageModel, Message, RemoteModel, Request};
use slm_agents::privacy::Privacy;
use slm_agents::router::{EmbeddingRouter, ModelRouter, Router};
use slm_agents::run::{MemoryRecorder, RunContext};
use slm_agents::specialist::ModelSpecialist;
use slm_agents::structured::StructuredExt;
use slm_agents::{Error, ErrorKind};

const EMAIL: &str = "dana@example.com";
const CARD: &str = "4111 1111 1111 1111";

/// A listener on 127.0.0.1 that answers every connection with `content` as a chat completion (or embeddings,
/// by path) and keeps what it received.
struct Listener {
    url: String,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<String>>,
}

impl Listener {
    fn start(content: &str) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(String::new()));
        let (count, log, content) = (connections.clone(), received.clone(), content.to_owned());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let request = read_request(&mut conn);
                log.lock().unwrap().push_str(&request);
                let body = if request.starts_with("POST /v1/embeddings") {
                    let inputs = request.matches("\",\"").count() + 1;
                    let data: Vec<_> = (0..inputs).map(|_| serde_json::json!({ "embedding": [1.0, 0.0] })).collect();
                    serde_json::json!({ "data": data }).to_string()
                } else if request.contains("\"stream\":true") {
                    let chunk = serde_json::json!({ "choices": [{ "delta": { "content": content } }] });
                    let reply = format!("data: {chunk}\n\ndata: [DONE]\n\n");
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        reply.len()
                    );
                    let _ = conn.write_all(format!("{head}{reply}").as_bytes());
                    continue;
                } else {
                    serde_json::json!({
                        "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
                        "usage": { "prompt_tokens": 5, "completion_tokens": 3 }
                    })
                    .to_string()
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        Listener { url, connections, received }
    }

    fn connections(&self) -> usize {
        // Give a connection that is on its way a moment to arrive.
        std::thread::sleep(Duration::from_millis(50));
        self.connections.load(Ordering::SeqCst)
    }

    fn received(&self) -> String {
        self.received.lock().unwrap().clone()
    }

    fn model(&self, privacy: Privacy) -> RemoteModel {
        RemoteModel::builder(&self.url, "remote").privacy(privacy).retries(0, Duration::ZERO).build().unwrap()
    }

    /// Asserts that nothing personal arrived (and that something did).
    fn assert_clean(&self) {
        let received = self.received();
        assert!(!received.is_empty(), "the call was expected to reach the server");
        assert!(!received.contains(EMAIL) && !received.contains(CARD), "raw value sent: {received}");
        assert!(received.contains("[EMAIL_1]"), "{received}");
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            while buf.len() < i + 4 + length {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn personal() -> String {
    format!("Write to {EMAIL} about card {CARD}.")
}

fn ask() -> Request {
    Request::chat([Message::user(personal())]).with_max_tokens(16)
}

fn assert_refused(result: Result<impl std::fmt::Debug, Error>) {
    let err = result.unwrap_err();
    assert_eq!(err.root().kind(), ErrorKind::Privacy, "{err:?}");
}

/// The policies a door is tried under: the model's own, the run's, and both.
fn local_only_cases(listener: &Listener) -> Vec<(RemoteModel, RunContext)> {
    vec![
        (listener.model(Privacy::LocalOnly), RunContext::new()),
        (listener.model(Privacy::Allow), RunContext::new().with_privacy(Privacy::LocalOnly)),
        (listener.model(Privacy::redact()), RunContext::new().with_privacy(Privacy::LocalOnly)),
        (listener.model(Privacy::LocalOnly), RunContext::new().with_privacy(Privacy::redact())),
    ]
}

#[tokio::test]
async fn complete_obeys_the_model_and_the_run() {
    let listener = Listener::start("ok");
    assert_refused(listener.model(Privacy::LocalOnly).complete(ask()).await);
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(ctx.complete(&model, ask()).await);
    }
    assert_eq!(listener.connections(), 0);

    let listener = Listener::start("Sent to [EMAIL_1]");
    let answer = listener.model(Privacy::redact()).complete(ask()).await.unwrap();
    assert_eq!(answer.text, format!("Sent to {EMAIL}"), "restored");
    listener.assert_clean();

    let listener = Listener::start("Sent to [EMAIL_1]");
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_privacy(Privacy::redact()).with_recorder(events.clone());
    let answer = ctx.complete(&listener.model(Privacy::Allow), ask()).await.unwrap();
    assert_eq!(answer.text, format!("Sent to {EMAIL}"));
    listener.assert_clean();
    let call = &events.model_calls()[0];
    assert!(call.remote && call.redactions.iter().any(|(_, p)| p == "[EMAIL_1]"), "{call:?}");
}

#[tokio::test]
async fn redacting_twice_keeps_placeholders_apart() {
    // The run redacts emails; the model's own redactor also knows booking codes. Both apply, and the answer
    // gets both values back.
    let listener = Listener::start("[EMAIL_1] booked [BOOKING_1]");
    let model_policy = Privacy::Redact(Arc::new(
        slm_agents::privacy::Redactor::new().with_pattern("booking", r"\bBK-[0-9]{6}\b").unwrap(),
    ));
    let ctx = RunContext::new().with_privacy(Privacy::redact());
    let request = Request::chat([Message::user(format!("{EMAIL} wants BK-123456"))]);
    let answer = ctx.complete(&listener.model(model_policy), request).await.unwrap();
    assert_eq!(answer.text, format!("{EMAIL} booked BK-123456"));
    let received = listener.received();
    assert!(!received.contains(EMAIL) && !received.contains("BK-123456"), "{received}");
}

#[tokio::test]
async fn stream_obeys_the_model_and_the_run() {
    let listener = Listener::start("ok");
    let refused = listener.model(Privacy::LocalOnly).stream(ask()).next().await.unwrap();
    assert_refused(refused);
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(ctx.stream(&model, ask()).next().await.unwrap());
    }
    assert_eq!(listener.connections(), 0);

    let listener = Listener::start("to [EMAIL_1]");
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_privacy(Privacy::redact()).with_recorder(events.clone());
    let done = ctx.stream(&listener.model(Privacy::Allow), ask()).finish().await.unwrap();
    assert_eq!(done.text, format!("to {EMAIL}"));
    listener.assert_clean();
    // Streams within a run are recorded like completions.
    let calls = events.model_calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].outcome.is_success() && calls[0].output.as_deref() == Some(done.text.as_str()));
}

#[tokio::test]
async fn embed_obeys_the_model_and_the_run() {
    let listener = Listener::start("");
    let texts = vec![personal()];
    assert_refused(listener.model(Privacy::LocalOnly).embed(&texts).await);
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(ctx.embed(&model, &texts).await);
    }
    assert_eq!(listener.connections(), 0);

    let listener = Listener::start("");
    let ctx = RunContext::new().with_privacy(Privacy::redact());
    ctx.embed(&listener.model(Privacy::Allow), &texts).await.unwrap();
    listener.assert_clean();
    let listener = Listener::start("");
    listener.model(Privacy::redact()).embed(&texts).await.unwrap();
    listener.assert_clean();
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Note {
    #[schemars(length(max = 80))]
    to: String,
}

#[tokio::test]
async fn generate_obeys_the_model_and_the_run() {
    let listener = Listener::start(r#"{"to":"[EMAIL_1]"}"#);
    let messages = vec![Message::user(personal())];
    assert_refused(listener.model(Privacy::LocalOnly).generate::<Note>(messages.clone()).await);
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(ctx.generate::<Note>(&model, messages.clone()).await);
    }
    assert_eq!(listener.connections(), 0);

    let note: Note = listener.model(Privacy::redact()).generate(messages.clone()).await.unwrap();
    assert_eq!(note.to, EMAIL, "restored before parsing");
    listener.assert_clean();
    let listener = Listener::start(r#"{"to":"[EMAIL_1]"}"#);
    let ctx = RunContext::new().with_privacy(Privacy::redact());
    let note: Note = ctx.generate(&listener.model(Privacy::Allow), messages).await.unwrap();
    assert_eq!(note.to, EMAIL);
    listener.assert_clean();
}

#[tokio::test]
async fn the_embedding_routers_build_and_route_obey_the_policies() {
    let listener = Listener::start("");
    let built =
        EmbeddingRouter::builder(listener.model(Privacy::LocalOnly), "other").route("mail", [personal()]).build().await;
    assert_refused(built);
    let built = EmbeddingRouter::builder(listener.model(Privacy::Allow), "other")
        .route("mail", [personal()])
        .build_in(&RunContext::new().with_privacy(Privacy::LocalOnly))
        .await;
    assert_refused(built);
    assert_eq!(listener.connections(), 0);

    let listener = Listener::start("");
    let router = EmbeddingRouter::builder(listener.model(Privacy::redact()), "other")
        .route("mail", [personal()])
        .build()
        .await
        .unwrap();
    router.route(&personal(), &RunContext::new()).await.unwrap();
    listener.assert_clean();
}

#[tokio::test]
async fn a_specialist_obeys_the_policies() {
    let specialist = |model: RemoteModel| {
        ModelSpecialist::builder("mailer")
            .model(model)
            .instructions("You write mails.")
            .output::<Note>()
            .build()
            .unwrap()
    };
    let listener = Listener::start(r#"{"answer":{"to":"[EMAIL_1]"}}"#);
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(specialist(model).run(personal(), &ctx).await);
    }
    assert_eq!(listener.connections(), 0);

    let ctx = RunContext::new().with_privacy(Privacy::redact());
    let note = specialist(listener.model(Privacy::Allow)).run(personal(), &ctx).await.unwrap();
    assert_eq!(note.to, EMAIL);
    listener.assert_clean();
}

#[tokio::test]
async fn a_teams_manager_obeys_the_policies() {
    let plan = r#"{"steps":[{"specialist":"mailer","task":"mail [EMAIL_1]","needs":[]}]}"#;
    let team = |manager: RemoteModel, member: RemoteModel| {
        let composer = from_fn(|r: TeamResults| async move { Ok::<_, Error>(r.results.len()) });
        Team::builder("office")
            .manager(manager)
            .member(
                ModelSpecialist::builder("mailer")
                    .description("writes mails")
                    .model(member)
                    .output::<Note>()
                    .build()
                    .unwrap(),
            )
            .composer(composer)
            .build()
            .unwrap()
    };
    let listener = Listener::start(plan);
    for (model, ctx) in local_only_cases(&listener) {
        let member = listener.model(Privacy::LocalOnly);
        assert_refused(team(model, member).run(personal(), &ctx).await);
    }
    assert_eq!(listener.connections(), 0);

    let ctx = RunContext::new().with_privacy(Privacy::redact());
    let listener = Listener::start(plan);
    let manager = listener.model(Privacy::Allow);
    let plan = team(manager, listener.model(Privacy::Allow)).plan(&personal(), &ctx).await.unwrap();
    assert_eq!(plan.steps[0].task, format!("mail {EMAIL}"), "restored in the plan");
    listener.assert_clean();
}

#[tokio::test]
async fn a_model_choice_router_obeys_the_policies() {
    let router = |model: RemoteModel| {
        ModelRouter::builder(model)
            .route("mail", "mail", "writing mails")
            .route("other", "other", "the rest")
            .build()
            .unwrap()
    };
    let listener = Listener::start("mail");
    for (model, ctx) in local_only_cases(&listener) {
        assert_refused(router(model).route(&personal(), &ctx).await);
    }
    assert_eq!(listener.connections(), 0);
}
