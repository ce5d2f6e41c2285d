//! Tools from MCP servers: our own small server (`examples/mcp/server.rs`), started as a child process of this
//! test binary over stdio and served in-process over streamable HTTP; its tools listed with their schemas,
//! called directly and by a specialist on the real model, the calls recorded in the ledger; its errors and a
//! server that cannot be reached are clear errors.
//!
//! A custom harness: started with `SLM_MCP_TEST_SERVE=1`, this binary is the stdio server.

#[path = "../examples/mcp/server.rs"]
#[allow(dead_code)]
mod server;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use slm_agents::ledger::{read_jsonl, JsonlLedger};
use slm_agents::mcp::{McpServer, McpTool};
use slm_agents::prelude::*;
use slm_agents::run::RunEvent;

const SERVE: &str = "SLM_MCP_TEST_SERVE";

/// This test binary, started as the travel desk's stdio server.
fn stdio_server() -> McpServer {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.env(SERVE, "1");
    futures::executor::block_on(McpServer::stdio(command).connect()).expect("connect to the stdio server")
}

fn tool<'a>(tools: &'a [McpTool], name: &str) -> &'a McpTool {
    tools.iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("no tool {name}"))
}

fn stdio_tools_come_with_their_schemas_and_answer() {
    let server = stdio_server();
    assert_eq!(server.name(), "travel-desk");
    // Under futures' executor: the tools need no tokio runtime of the host's.
    let tools = futures::executor::block_on(server.tools()).unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["book_table", "get_weather"]);
    let weather = tool(&tools, "get_weather");
    assert_eq!(weather.description(), "Get the current weather for a city");
    let schema = weather.parameters();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["city"]["type"], "string");
    assert_eq!(schema["required"], json!(["city"]));
    let booking = tool(&tools, "book_table").parameters();
    assert_eq!(booking["properties"]["people"]["type"], "integer");

    // The result is the server's JSON text, parsed.
    let paris = futures::executor::block_on(weather.call_json(json!({"city": "Paris"}))).unwrap();
    assert_eq!(paris["city"], "Paris");
    assert_eq!(paris["source"], "travel-desk");
    assert!(paris["temp_c"].is_u64());
    // The server's own error is the tool's failure, with its message.
    let error = futures::executor::block_on(
        tool(&tools, "book_table").call_json(json!({"restaurant": "Fontanka", "people": 20})),
    )
    .unwrap_err();
    assert!(matches!(error, ToolError::Failed(_)), "{error:?}");
    assert!(error.full_message().contains("at most 12 people, not 20"), "{}", error.full_message());
    // Arguments that are not an object never reach the server.
    let error = futures::executor::block_on(weather.call_json(json!("Paris"))).unwrap_err();
    assert!(matches!(error, ToolError::InvalidArguments(_)), "{error:?}");
    // A renamed tool is seen under its new name and still calls the server's.
    let renamed = weather.clone().renamed("desk.weather");
    assert_eq!(renamed.name(), "desk.weather");
    assert_eq!(futures::executor::block_on(renamed.call_json(json!({"city": "Paris"}))).unwrap(), paris);

    server.close();
    let after = futures::executor::block_on(weather.call_json(json!({"city": "Paris"})));
    assert!(after.is_err(), "a closed server's tools fail: {after:?}");
}

fn a_specialist_on_the_real_model_calls_an_mcp_tool_recorded_in_the_ledger() {
    let server = stdio_server();
    let tools = futures::executor::block_on(server.tools()).unwrap();
    let specialist = ModelSpecialist::builder("desk")
        .model(support::smollm2())
        .instructions(
            "You are a travel assistant. Call the tool that answers the request, then answer from its result.",
        )
        .tools_dyn(tools)
        .max_tool_calls(1)
        .max_steps(3)
        .build()
        .unwrap();
    let path = std::env::temp_dir().join(format!("slm-mcp-ledger-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ctx = RunContext::new().with_recorder(Arc::new(JsonlLedger::create(&path).unwrap()));
    let answer = futures::executor::block_on(specialist.run("What is the weather in Lisbon?".to_string(), &ctx));
    answer.expect("the specialist answers");

    let events: Vec<RunEvent> = read_jsonl(&path).unwrap().0.into_iter().map(|r| r.event).collect();
    let _ = std::fs::remove_file(&path);
    let calls: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::ToolCall(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let call = calls.first().expect("the model called a tool of the server");
    assert_eq!(call.tool, "get_weather");
    assert_eq!(call.specialist, "desk");
    assert!(call.outcome.is_success(), "{:?}", call.outcome);
    let city = call.arguments["city"].as_str().unwrap();
    assert!(city.to_lowercase().contains("lisbon"), "{city}");
    // What came back is the server's answer for the city the model wrote.
    let result = call.result.as_ref().unwrap();
    assert_eq!(result["source"], "travel-desk");
    assert_eq!(result["city"], Value::String(city.to_owned()));
    // The model was shown the server's tools with their schemas, and its call was generated under them.
    let first = events
        .iter()
        .find_map(|e| match e {
            RunEvent::ModelCall(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    let shown: Vec<&str> = first.tools.iter().map(|t| t.name.as_str()).collect();
    assert!(shown.contains(&"get_weather") && shown.contains(&"book_table"), "{shown:?}");
    assert_eq!(first.schema_valid, Some(true));
    server.close();
}

fn the_http_transport_lists_and_calls_tools() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let serving = server::serve_http(listener);
        // Inside the host's own tokio runtime this time.
        let server = McpServer::http(&url).connect().await.expect("connect over HTTP");
        assert_eq!(server.name(), "travel-desk");
        let tools = server.tools().await.unwrap();
        assert_eq!(tools.len(), 2);
        let booked =
            tool(&tools, "book_table").call_json(json!({"restaurant": "Fontanka", "people": 4})).await.unwrap();
        assert_eq!(booked, json!({"restaurant": "Fontanka", "people": 4, "confirmation": "TD-104"}));
        let error =
            tool(&tools, "book_table").call_json(json!({"restaurant": "Fontanka", "people": 13})).await.unwrap_err();
        assert!(error.full_message().contains("not 13"), "{}", error.full_message());
        // Dropped inside an async context: no panic, no blocking.
        drop(tools);
        drop(server);
        serving.abort();
    });
}

fn servers_that_cannot_be_reached_are_clear_errors() {
    let started = Instant::now();
    let missing = std::process::Command::new("/nonexistent/mcp-server");
    let error = futures::executor::block_on(McpServer::stdio(missing).connect()).unwrap_err();
    assert!(matches!(error, Error::Mcp { .. }), "{error:?}");
    assert!(error.to_string().contains("/nonexistent/mcp-server"), "{error}");

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let error = futures::executor::block_on(
        McpServer::http(format!("http://127.0.0.1:{port}/mcp")).timeout(Duration::from_secs(5)).connect(),
    )
    .unwrap_err();
    assert!(matches!(error, Error::Mcp { .. }), "{error:?}");

    // A program that is not an MCP server: it exits at once.
    let error = futures::executor::block_on(
        McpServer::stdio(std::process::Command::new("true")).timeout(Duration::from_secs(5)).connect(),
    )
    .unwrap_err();
    assert!(matches!(error, Error::Mcp { .. }), "{error:?}");

    // One that never answers: the timeout holds.
    let mut silent = std::process::Command::new("sleep");
    silent.arg("30");
    let t = Instant::now();
    let error = futures::executor::block_on(McpServer::stdio(silent).timeout(Duration::from_millis(500)).connect())
        .unwrap_err();
    assert!(error.to_string().contains("no handshake within"), "{error}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30));

    #[cfg(not(feature = "mcp-https"))]
    {
        let error = futures::executor::block_on(McpServer::http("https://example.com/mcp").connect()).unwrap_err();
        assert!(matches!(error, Error::Unavailable { feature: "mcp-https", .. }), "{error:?}");
    }
}

type Test = fn();

fn main() {
    if std::env::var_os(SERVE).is_some() {
        server::serve_stdio();
        return;
    }
    let tests: [(&str, Test); 4] = [
        ("stdio_tools_come_with_their_schemas_and_answer", stdio_tools_come_with_their_schemas_and_answer),
        (
            "a_specialist_on_the_real_model_calls_an_mcp_tool_recorded_in_the_ledger",
            a_specialist_on_the_real_model_calls_an_mcp_tool_recorded_in_the_ledger,
        ),
        ("the_http_transport_lists_and_calls_tools", the_http_transport_lists_and_calls_tools),
        ("servers_that_cannot_be_reached_are_clear_errors", servers_that_cannot_be_reached_are_clear_errors),
    ];
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for (name, test) in tests {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        test();
        eprintln!("test {name} ... ok");
    }
}
