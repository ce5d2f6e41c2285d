//! The remote model against a small fault-injecting server on 127.0.0.1: every failure is a typed
//! [`RemoteError`], Retry-After is honoured, streams end with [DONE] or fail, and dropping a request cancels it.
//! Needs no model (runs without the `llama` feature).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use slm_agents::model::{LanguageModel, Message, RemoteModel, Request};
use slm_agents::{Error, RemoteError, RemoteErrorKind};

/// What the server does with one connection.
enum Reply {
    /// An answer with this status, extra headers and body, after a delay.
    Http { status: u16, headers: Vec<(&'static str, String)>, body: String, delay: Duration },
    /// These bytes as they are, then the connection is closed.
    Raw(String),
    /// An event stream of these `data:` events, one every `interval`, then `data: [DONE]` if `done`.
    Sse { events: Vec<String>, interval: Duration, done: bool },
    /// An endless event stream, one event every `interval`, until the client closes the connection.
    SseUntilClosed { interval: Duration },
    /// Nothing at all (not even headers) for 5 s, or until the client closes the connection.
    Silent,
    /// A 200 with this body on a kept-alive connection; then the next request on the same connection, answered
    /// as `Silent`.
    KeepAliveThenSilent(String),
}

fn http(status: u16, body: impl Into<String>) -> Reply {
    Reply::Http { status, headers: Vec::new(), body: body.into(), delay: Duration::ZERO }
}

fn http_with(status: u16, header: &'static str, value: impl Into<String>, body: impl Into<String>) -> Reply {
    Reply::Http { status, headers: vec![(header, value.into())], body: body.into(), delay: Duration::ZERO }
}

struct Seen {
    at: Instant,
    body: String,
}

/// A one-thread HTTP server answering each connection with the next scripted reply; it keeps the requests it
/// saw and when a client closed an endless stream or a silent connection. When the script is done it stops listening.
struct FaultServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed_at: Arc<Mutex<Option<Instant>>>,
}

impl FaultServer {
    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn body(&self, i: usize) -> serde_json::Value {
        serde_json::from_str(&self.seen.lock().unwrap()[i].body).unwrap()
    }
}

fn read_request(conn: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let n = conn.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break (buf.len(), 0);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf[head_end.min(buf.len())..]).into_owned()
}

/// Whether the peer has closed the connection (without waiting).
fn peer_closed(conn: &mut TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match conn.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

fn fault_server(replies: Vec<Reply>) -> FaultServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let closed_at = Arc::new(Mutex::new(None));
    let (log, closed) = (seen.clone(), closed_at.clone());
    std::thread::spawn(move || {
        for reply in replies {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let body = read_request(&mut conn);
            log.lock().unwrap().push(Seen { at: Instant::now(), body });
            match reply {
                Reply::Http { status, headers, body, delay } => {
                    std::thread::sleep(delay);
                    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(reply.as_bytes());
                }
                Reply::Raw(bytes) => {
                    let _ = conn.write_all(bytes.as_bytes());
                }
                Reply::Sse { events, interval, done } => {
                    let _ = conn.write_all(SSE_HEAD.as_bytes());
                    for event in events {
                        let _ = conn.write_all(format!("data: {event}\n\n").as_bytes());
                        std::thread::sleep(interval);
                    }
                    if done {
                        let _ = conn.write_all(b"data: [DONE]\n\n");
                    }
                }
                Reply::SseUntilClosed { interval } => {
                    let _ = conn.write_all(SSE_HEAD.as_bytes());
                    let started = Instant::now();
                    while started.elapsed() < Duration::from_secs(5) {
                        let event = format!("data: {}\n\n", delta("tick "));
                        if conn.write_all(event.as_bytes()).is_err() || peer_closed(&mut conn) {
                            *closed.lock().unwrap() = Some(Instant::now());
                            break;
                        }
                        std::thread::sleep(interval);
                    }
                }
                Reply::Silent | Reply::KeepAliveThenSilent(_) => {
                    if let Reply::KeepAliveThenSilent(body) = reply {
                        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length";
                        let _ = conn.write_all(format!("{head}: {}\r\n\r\n{body}", body.len()).as_bytes());
                        let body = read_request(&mut conn);
                        log.lock().unwrap().push(Seen { at: Instant::now(), body });
                    }
                    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut byte = [0u8; 1];
                    let closed_by_client = match conn.read(&mut byte) {
                        Ok(n) => n == 0,
                        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                    };
                    if closed_by_client {
                        *closed.lock().unwrap() = Some(Instant::now());
                    }
                }
            }
        }
    });
    FaultServer { url, seen, closed_at }
}

fn ok_body(content: &str) -> String {
    serde_json::json!({
        "choices": [{ "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 5, "completion_tokens": 3 }
    })
    .to_string()
}

fn delta(piece: &str) -> String {
    serde_json::json!({ "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }] }).to_string()
}

fn ask() -> Request {
    Request::chat([Message::user("hello")]).with_max_tokens(8)
}

fn model(url: &str) -> RemoteModel {
    RemoteModel::builder(url, "m")
        .retries(2, Duration::from_millis(10))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// The typed remote error, with the model's name checked.
fn remote(err: &Error) -> &RemoteError {
    match err {
        Error::Remote { model, error } => {
            assert_eq!(model, "m");
            error
        }
        other => panic!("not a remote error: {other:?}"),
    }
}

/// An IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`) for a time.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        months[month as usize - 1],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn the_test_date_formatter_is_right() {
    assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_445_412_480)), "Wed, 21 Oct 2015 07:28:00 GMT");
}

#[tokio::test]
async fn a_refused_connection_is_connect() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = model(&format!("http://127.0.0.1:{port}/v1")).complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!(e.kind, RemoteErrorKind::Connect, "{err}");
    assert_eq!(e.status, None);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_500_is_retried_then_reported_with_status_and_code() {
    let error = r#"{"error": {"message": "boom", "type": "server_error"}}"#;
    let server = fault_server(vec![http(500, error), http(500, error), http(500, error)]);
    let err = model(&server.url).complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!((e.kind, e.status), (RemoteErrorKind::Status, Some(500)), "{err}");
    assert_eq!((e.code.as_deref(), e.message.as_str()), (Some("server_error"), "boom"));
    assert_eq!(server.requests(), 3, "one try and two retries");
    assert!(err.is_retryable());

    // A 4xx is not retried.
    let server = fault_server(vec![http(401, r#"{"error": {"message": "bad key", "code": "invalid_api_key"}}"#)]);
    let err = model(&server.url).complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!((e.kind, e.status, e.code.as_deref()), (RemoteErrorKind::Status, Some(401), Some("invalid_api_key")));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after_seconds() {
    let server = fault_server(vec![http_with(429, "Retry-After", "1", "{}"), http(200, ok_body("fine"))]);
    let answer = model(&server.url).complete(ask()).await.unwrap();
    assert_eq!(answer.text, "fine");
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1) && gap < Duration::from_secs(3), "{gap:?}");
}

#[tokio::test]
async fn a_retry_after_above_the_cap_gives_up_at_once() {
    let server = fault_server(vec![
        http_with(429, "Retry-After", "120", r#"{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}"#),
        http(200, ok_body("too late")),
    ]);
    let started = Instant::now();
    let err = model(&server.url).complete(ask()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    let e = remote(&err);
    assert_eq!((e.kind, e.status), (RemoteErrorKind::RateLimited, Some(429)), "{err}");
    assert_eq!(e.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(server.requests(), 1);

    // The cap is a setting.
    let server = fault_server(vec![http_with(503, "Retry-After", "2", "{}"), http(200, ok_body("x"))]);
    let model = RemoteModel::builder(&server.url, "m").max_retry_wait(Duration::from_secs(1)).build().unwrap();
    let err = model.complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!((e.kind, e.status, e.retry_after), (RemoteErrorKind::Status, Some(503), Some(Duration::from_secs(2))));
    assert_eq!(server.requests(), 1);
}

#[tokio::test]
async fn a_retry_after_http_date_is_honoured() {
    let soon = http_date(SystemTime::now() + Duration::from_secs(2));
    let server = fault_server(vec![http_with(503, "Retry-After", soon, "{}"), http(200, ok_body("fine"))]);
    assert_eq!(model(&server.url).complete(ask()).await.unwrap().text, "fine");
    let gap = {
        let seen = server.seen.lock().unwrap();
        seen[1].at - seen[0].at
    };
    // The date has whole seconds: the wait is between one and two seconds.
    assert!(gap >= Duration::from_millis(900) && gap < Duration::from_secs(3), "{gap:?}");

    let later = http_date(SystemTime::now() + Duration::from_secs(100));
    let server = fault_server(vec![http_with(429, "Retry-After", later, "{}")]);
    let err = model(&server.url).complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!(e.kind, RemoteErrorKind::RateLimited);
    let wait = e.retry_after.expect("retry_after");
    assert!(wait > Duration::from_secs(95) && wait <= Duration::from_secs(100), "{wait:?}");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = fault_server(vec![Reply::Http {
        status: 200,
        headers: Vec::new(),
        body: ok_body("late"),
        delay: Duration::from_secs(3),
    }]);
    let model = RemoteModel::builder(&server.url, "m").timeout(Duration::from_millis(300)).build().unwrap();
    let started = Instant::now();
    let err = model.complete(ask()).await.unwrap_err();
    assert_eq!(remote(&err).kind, RemoteErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_cut_off_or_non_json_body_is_malformed() {
    let server = fault_server(vec![
        Reply::Raw(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\nConnection: close\r\n\r\n{\"choices\": [".into(),
        ),
        http(200, "<html>proxy error</html>"),
    ]);
    let model = model(&server.url);
    let err = model.complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!((e.kind, e.status), (RemoteErrorKind::Malformed, None), "{err}");
    let err = model.complete(ask()).await.unwrap_err();
    assert_eq!(remote(&err).kind, RemoteErrorKind::Malformed, "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn no_choices_is_malformed_and_an_error_object_is_a_server_error() {
    let server = fault_server(vec![
        http(200, r#"{"choices": []}"#),
        http(200, r#"{"error": {"message": "the model crashed", "code": "model_error"}}"#),
    ]);
    let model = model(&server.url);
    let err = model.complete(ask()).await.unwrap_err();
    assert_eq!(remote(&err).kind, RemoteErrorKind::Malformed, "{err}");
    let err = model.complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!(e.kind, RemoteErrorKind::ServerError, "{err}");
    assert_eq!((e.message.as_str(), e.code.as_deref()), ("the model crashed", Some("model_error")));
    assert_eq!(e.status, None);
    assert_eq!(server.requests(), 2, "a 200 is not retried");
}

#[tokio::test]
async fn an_oversized_body_is_malformed() {
    let server = fault_server(vec![http(200, ok_body(&"x".repeat(8 * 1024))), http(200, ok_body("small"))]);
    let model = RemoteModel::builder(&server.url, "m").max_body_bytes(1024).build().unwrap();
    let err = model.complete(ask()).await.unwrap_err();
    let e = remote(&err);
    assert_eq!(e.kind, RemoteErrorKind::Malformed, "{err}");
    assert!(e.message.contains("1024"), "the limit is named: {err}");
    assert_eq!(model.complete(ask()).await.unwrap().text, "small");
}

#[tokio::test]
async fn a_stream_without_done_is_cut_off() {
    let server = fault_server(vec![Reply::Sse {
        events: vec![delta("Hel"), delta("lo")],
        interval: Duration::from_millis(5),
        done: false,
    }]);
    let mut stream = model(&server.url).stream(ask());
    let mut pieces = Vec::new();
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(p) => pieces.push(p),
            Err(e) => failure = Some(e),
        }
    }
    assert_eq!(pieces, ["Hel", "lo"]);
    let err = failure.expect("the stream failed");
    assert_eq!(remote(&err).kind, RemoteErrorKind::CutOff, "{err}");
    assert!(stream.completion().is_none(), "never a normal completion");
}

#[tokio::test]
async fn an_error_object_in_a_stream_is_a_server_error() {
    let server = fault_server(vec![Reply::Sse {
        events: vec![delta("Hel"), r#"{"error": {"message": "out of memory", "type": "server_error"}}"#.into()],
        interval: Duration::from_millis(5),
        done: true,
    }]);
    let err = model(&server.url).stream(ask()).finish().await.unwrap_err();
    let e = remote(&err);
    assert_eq!(e.kind, RemoteErrorKind::ServerError, "{err}");
    assert_eq!((e.message.as_str(), e.code.as_deref()), ("out of memory", Some("server_error")));
}

#[tokio::test]
async fn streamed_usage_comes_from_the_include_usage_chunk() {
    let usage = serde_json::json!({
        "choices": [],
        "usage": { "prompt_tokens": 11, "completion_tokens": 2, "prompt_tokens_details": { "cached_tokens": 4 } }
    });
    let server = fault_server(vec![
        Reply::Sse {
            events: vec![delta("Hel"), delta("lo"), usage.to_string()],
            interval: Duration::from_millis(5),
            done: true,
        },
        Reply::Sse { events: vec![delta("a"), delta("b"), delta("c")], interval: Duration::ZERO, done: true },
    ]);
    let model = model(&server.url);
    let done = model.stream(ask()).finish().await.unwrap();
    assert_eq!(done.text, "Hello");
    assert_eq!((done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.cached_prompt_tokens), (11, 2, 4));
    let sent = server.body(0);
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");

    // Without a usage chunk, the pieces are counted.
    let done = model.stream(ask()).finish().await.unwrap();
    assert_eq!((done.text.as_str(), done.usage.completion_tokens, done.usage.prompt_tokens), ("abc", 3, 0));
}

#[tokio::test]
async fn a_refused_response_format_falls_back_to_json_object() {
    let server = fault_server(vec![
        http(
            400,
            r#"{"error": {"message": "response_format type json_schema is not supported", "type": "invalid_request_error"}}"#,
        ),
        http(200, ok_body(r#"{"a": 1}"#)),
        http(200, ok_body(r#"{"a": 2}"#)),
    ]);
    let model = model(&server.url);
    let schema = serde_json::json!({ "type": "object" });
    let request = ask().with_constraint(slm_agents::model::Constraint::JsonSchema(schema));
    assert_eq!(model.complete(request.clone()).await.unwrap().text, r#"{"a": 1}"#);
    assert_eq!(server.body(0)["response_format"]["type"], "json_schema");
    assert_eq!(server.body(1)["response_format"]["type"], "json_object");
    model.complete(request).await.unwrap();
    assert_eq!(server.body(2)["response_format"]["type"], "json_object", "the switch is kept");
    assert_eq!(server.requests(), 3);
}

#[tokio::test]
async fn dropping_a_stream_closes_its_connection() {
    let server = fault_server(vec![Reply::SseUntilClosed { interval: Duration::from_millis(20) }]);
    let mut stream = model(&server.url).stream(ask());
    assert_eq!(stream.next().await.unwrap().unwrap(), "tick ");
    let dropped = Instant::now();
    drop(stream);
    let deadline = dropped + Duration::from_secs(2);
    let closed = loop {
        if let Some(at) = *server.closed_at.lock().unwrap() {
            break at;
        }
        assert!(Instant::now() < deadline, "the server never saw the connection closed");
        std::thread::sleep(Duration::from_millis(5));
    };
    let after = closed.saturating_duration_since(dropped);
    assert!(after < Duration::from_millis(100), "closed {after:?} after the drop");
}

#[tokio::test]
async fn dropping_complete_during_a_retry_wait_sends_no_more_requests() {
    let server = fault_server(vec![
        http_with(503, "Retry-After", "5", "{}"),
        http(200, ok_body("second caller")),
        http(200, ok_body("a retry")),
    ]);
    let model = RemoteModel::builder(&server.url, "m").max_concurrency(1).build().unwrap();
    let started = Instant::now();
    let waited = tokio::time::timeout(Duration::from_millis(300), model.complete(ask())).await;
    assert!(waited.is_err(), "still waiting to retry");
    assert_eq!(server.requests(), 1);
    // The one helper thread stopped waiting: another request goes out at once.
    let answer = tokio::time::timeout(Duration::from_secs(2), model.complete(ask())).await.unwrap().unwrap();
    assert_eq!(answer.text, "second caller");
    // Past the Retry-After, the dropped request was never sent again.
    tokio::time::sleep((started + Duration::from_millis(5500)).saturating_duration_since(Instant::now())).await;
    assert_eq!(server.requests(), 2);
}

/// Waits (at most 2 s) for the server to see the connection closed, and returns how long after `dropped` it was.
fn closed_after(server: &FaultServer, dropped: Instant) -> Duration {
    let deadline = dropped + Duration::from_secs(2);
    loop {
        if let Some(at) = *server.closed_at.lock().unwrap() {
            return at.saturating_duration_since(dropped);
        }
        assert!(Instant::now() < deadline, "the server never saw the connection closed");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A model with one helper thread, whose timeout is well past the tests' limits.
fn one_thread_model(url: &str) -> RemoteModel {
    RemoteModel::builder(url, "m").max_concurrency(1).timeout(Duration::from_secs(8)).build().unwrap()
}

#[tokio::test]
async fn dropping_complete_while_waiting_for_headers_closes_its_connection() {
    let server = fault_server(vec![Reply::Silent, http(200, ok_body("next"))]);
    let model = one_thread_model(&server.url);
    let waited = tokio::time::timeout(Duration::from_millis(200), model.complete(ask())).await;
    let dropped = Instant::now();
    assert!(waited.is_err(), "the server answers nothing");
    assert_eq!(server.requests(), 1, "the request was sent and is waiting for headers");
    let after = closed_after(&server, dropped);
    assert!(after < Duration::from_millis(100), "closed {after:?} after the drop");
    // The one helper thread is free again.
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(2), model.complete(ask())).await.unwrap().unwrap();
    assert_eq!(answer.text, "next");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn dropping_embed_while_waiting_for_headers_closes_its_connection() {
    let embedding = r#"{"data": [{"embedding": [3.0, 4.0]}]}"#;
    let server = fault_server(vec![Reply::Silent, http(200, embedding)]);
    let model = one_thread_model(&server.url);
    let texts = vec!["hello".to_owned()];
    let waited = tokio::time::timeout(Duration::from_millis(200), model.embed(&texts)).await;
    let dropped = Instant::now();
    assert!(waited.is_err(), "the server answers nothing");
    assert_eq!(server.requests(), 1);
    let after = closed_after(&server, dropped);
    assert!(after < Duration::from_millis(100), "closed {after:?} after the drop");
    let started = Instant::now();
    let vectors = tokio::time::timeout(Duration::from_secs(2), model.embed(&texts)).await.unwrap().unwrap();
    assert_eq!(vectors, [[0.6, 0.8]]);
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn dropping_a_stream_while_waiting_for_headers_closes_its_connection() {
    let server = fault_server(vec![
        Reply::Silent,
        Reply::Sse { events: vec![delta("next")], interval: Duration::ZERO, done: true },
    ]);
    let model = one_thread_model(&server.url);
    let mut stream = model.stream(ask());
    let waited = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(waited.is_err(), "the server answers nothing");
    drop(stream);
    let dropped = Instant::now();
    assert_eq!(server.requests(), 1);
    let after = closed_after(&server, dropped);
    assert!(after < Duration::from_millis(100), "closed {after:?} after the drop");
    let started = Instant::now();
    let done = tokio::time::timeout(Duration::from_secs(2), model.stream(ask()).finish()).await.unwrap().unwrap();
    assert_eq!(done.text, "next");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn dropping_complete_on_a_kept_alive_connection_closes_it() {
    let server = fault_server(vec![Reply::KeepAliveThenSilent(ok_body("first")), http(200, ok_body("next"))]);
    let model = one_thread_model(&server.url);
    assert_eq!(model.complete(ask()).await.unwrap().text, "first");
    // The second request goes over the same connection, taken from the client's pool.
    let waited = tokio::time::timeout(Duration::from_millis(200), model.complete(ask())).await;
    let dropped = Instant::now();
    assert!(waited.is_err(), "the server answers nothing");
    assert_eq!(server.requests(), 2, "both requests came over one connection");
    let after = closed_after(&server, dropped);
    assert!(after < Duration::from_millis(100), "closed {after:?} after the drop");
    let answer = tokio::time::timeout(Duration::from_secs(2), model.complete(ask())).await.unwrap().unwrap();
    assert_eq!(answer.text, "next");
}
