//! A small MCP server of ours: a travel desk with a weather tool and a table-booking tool, served over stdio
//! or streamable HTTP with rmcp's server side. The `mcp` example and `tests/mcp.rs` start it (the example as
//! itself with `--serve`, the test as itself with an environment variable).

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::{tool, tool_handler, tool_router, ErrorData, ServerHandler, ServiceExt};
use schemars::JsonSchema;
use serde::Deserialize;

/// The weather tool's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct WeatherArgs {
    /// The city, such as Paris
    pub city: String,
}

/// The booking tool's arguments.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct BookingArgs {
    /// The restaurant's name
    pub restaurant: String,
    /// How many people
    pub people: u32,
}

/// The server: its tools answer from the arguments alone, so that tests can check what the client got.
#[derive(Debug, Clone, Default)]
pub struct TravelDesk;

#[tool_router]
impl TravelDesk {
    /// The weather in a city, as JSON text (as many MCP servers answer).
    #[tool(description = "Get the current weather for a city")]
    async fn get_weather(&self, Parameters(WeatherArgs { city }): Parameters<WeatherArgs>) -> String {
        // A made-up but stable temperature: the same city always gets the same weather.
        let temp_c = 5 + city.bytes().map(u32::from).sum::<u32>() % 25;
        serde_json::json!({ "city": city, "forecast": "sunny", "temp_c": temp_c, "source": "travel-desk" }).to_string()
    }

    /// Books a table; tables are for at most 12 people, and a larger party is the tool's own error.
    #[tool(description = "Book a table at a restaurant for a number of people")]
    async fn book_table(&self, Parameters(args): Parameters<BookingArgs>) -> Result<CallToolResult, ErrorData> {
        if args.people > 12 {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "{} takes at most 12 people, not {}",
                args.restaurant, args.people
            ))]));
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "{{\"restaurant\": {:?}, \"people\": {}, \"confirmation\": \"TD-{}\"}}",
            args.restaurant,
            args.people,
            100 + args.people
        ))]))
    }
}

#[tool_handler(name = "travel-desk", version = "0.1.0", instructions = "Weather and restaurant bookings")]
impl ServerHandler for TravelDesk {}

/// Serves the travel desk on this process's stdin and stdout until the client closes them.
pub fn serve_stdio() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        let service = TravelDesk.serve(rmcp::transport::stdio()).await.expect("the MCP handshake");
        let _ = service.waiting().await;
    });
}

/// Serves the travel desk over streamable HTTP on `listener` (at any path), on the current tokio runtime,
/// until the returned task is aborted.
#[allow(dead_code)] // The example serves stdio only.
pub fn serve_http(listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        || Ok(TravelDesk),
        std::sync::Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let handler = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    async move { Ok::<_, std::convert::Infallible>(service.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, handler).await;
            });
        }
    })
}
