//! A specialist that uses the tools of an MCP server.
//!
//! ```text
//! cargo run --release --features mcp --example mcp -- [QUESTION] [--model PATH] [--threads N]
//!     [--command "PROGRAM ARGS..." | --url URL] [--ledger PATH]
//! ```
//!
//! By default the server is our own small travel desk (`examples/mcp/server.rs`: `get_weather` and
//! `book_table`), which this binary starts as a child process of itself and talks to over stdio. Any other MCP
//! server works the same way: `--command "npx -y @modelcontextprotocol/server-everything"` starts one over
//! stdio, `--url http://127.0.0.1:8000/mcp` reaches one over streamable HTTP. The server's tools, with their
//! input schemas, become the specialist's tools; the model's calls are grammar-constrained to those schemas.
//! The run is shown from its update stream, and every call is recorded (`--ledger` appends it to a file).

mod server;

use clap::Parser;
use std::sync::Arc;

use slm_agents::ledger::JsonlLedger;
use slm_agents::mcp::McpServer;
use slm_agents::prelude::*;
use slm_agents::run::RunUpdate;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const DEFAULT_QUESTION: &str = "What is the weather in Lisbon?";

/// The example's options.
#[derive(Parser)]
#[command(about = "A specialist on a small local model that calls the tools of an MCP server.")]
struct Args {
    /// The question for the specialist.
    #[arg(default_value = DEFAULT_QUESTION)]
    question: String,
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// An MCP server to start and talk to over stdio: the program and its arguments, split at spaces
    /// (default: the bundled travel desk).
    #[arg(long, conflicts_with = "url")]
    command: Option<String>,
    /// An MCP server to reach over streamable HTTP.
    #[arg(long)]
    url: Option<String>,
    /// Appends the run's ledger to this JSON Lines file.
    #[arg(long)]
    ledger: Option<String>,
    /// Serves the travel desk on stdin and stdout (how this example starts its own server).
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.serve {
        server::serve_stdio();
        return Ok(());
    }
    let connect = match (&args.url, &args.command) {
        (Some(url), _) => McpServer::http(url),
        (None, Some(line)) => {
            let mut words = line.split_whitespace();
            let mut command = std::process::Command::new(words.next().ok_or("--command is empty")?);
            command.args(words);
            McpServer::stdio(command)
        }
        (None, None) => {
            let mut command = std::process::Command::new(std::env::current_exe()?);
            command.arg("--serve");
            McpServer::stdio(command)
        }
    };
    let server = futures::executor::block_on(connect.connect())?;
    let tools = futures::executor::block_on(server.tools())?;
    eprintln!("MCP server `{}`: {} tools", server.name(), tools.len());
    for tool in &tools {
        eprintln!("  {}: {}", tool.name(), tool.description());
    }

    let mut builder = LlamaModel::builder(&args.model);
    if let Some(t) = args.threads {
        builder = builder.threads(t);
    }
    let slm = builder.load()?;
    let specialist = ModelSpecialist::builder("assistant")
        .description("Answers with the tools of an MCP server")
        .model(slm)
        .instructions(format!(
            "You are an assistant with the tools of the `{}` server. Call the tool that answers the request, \
             then answer in one sentence from its result.",
            server.name()
        ))
        .tools_dyn(tools)
        .max_tool_calls(1)
        .max_steps(3)
        .build()?;

    let mut ctx = RunContext::new();
    if let Some(path) = &args.ledger {
        ctx = ctx.with_recorder(Arc::new(JsonlLedger::create(path)?));
    }
    eprintln!("question: {}", args.question);
    let updates = specialist.run_stream(args.question, &ctx);
    let answer = futures::executor::block_on(updates.for_each_update(|update| match update {
        RunUpdate::ToolCallStarted { tool, arguments, .. } => eprintln!("  calls {tool} {arguments}"),
        RunUpdate::ToolCallFinished(call) => match (&call.result, call.outcome.is_success()) {
            (Some(result), true) => eprintln!("  {} -> {result}", call.tool),
            _ => eprintln!("  {} failed: {:?}", call.tool, call.outcome),
        },
        RunUpdate::ModelCallFinished(m) => {
            let u = m.usage.unwrap_or_default();
            eprintln!("  model step {}: {} prompt tokens, {} generated", m.step, u.prompt_tokens, u.completion_tokens);
        }
        _ => {}
    }))?;
    println!("{answer}");
    if let Some(path) = &args.ledger {
        eprintln!("ledger appended to {path}");
    }
    server.close();
    Ok(())
}
