//! Shared helpers for the integration tests: model paths and shared model handles.
//!
//! Models come from `scripts/fetch-models.sh`. Test models run on one thread each: the machines have two cores
//! and several test threads, and competing llama.cpp threads slow everything down far more than they add.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::OnceLock;

use slm_agents::model::LlamaModel;

pub mod gguf;

pub fn models_dir() -> PathBuf {
    std::env::var_os("SLM_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

fn model_path(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(path.exists(), "{} is missing: run scripts/fetch-models.sh first", path.display());
    path
}

pub fn smollm2_path() -> PathBuf {
    model_path("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A LoRA adapter for SmolLM2 made by `scripts/make-test-adapters.sh`: `zero`, `shift` or `corrupt`.
pub fn adapter_path(kind: &str) -> PathBuf {
    let path = models_dir().join(format!("smollm2-lora-{kind}.gguf"));
    assert!(path.exists(), "{} is missing: run scripts/make-test-adapters.sh first", path.display());
    path
}

pub fn gemma_path() -> PathBuf {
    model_path("gemma-3-270m-Q4_K_M.gguf")
}

/// One SmolLM2 handle shared by the tests of a test binary: one thread, four slots decoded together (so that
/// tests running side by side exercise continuous batching).
pub fn smollm2() -> LlamaModel {
    static MODEL: OnceLock<LlamaModel> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            LlamaModel::builder(smollm2_path())
                .threads(1)
                .batch_requests(4)
                .context_size(1024)
                .load()
                .expect("load SmolLM2")
        })
        .clone()
}

/// One Gemma 3 270M (base model, no chat template) handle shared by the tests of a test binary.
pub fn gemma() -> LlamaModel {
    static MODEL: OnceLock<LlamaModel> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            LlamaModel::builder(gemma_path()).threads(1).slots(2).context_size(1024).load().expect("load Gemma")
        })
        .clone()
}

/// Installs a global `tracing` subscriber that counts llama.cpp's own log lines (target `llama-cpp-2`; the Rust
/// wrapper's events use `llama_cpp_2::...`) and returns the counter.
pub fn count_native_log_lines() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use tracing_subscriber::layer::{Context, SubscriberExt};

    struct CountLlamaEvents(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountLlamaEvents {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if event.metadata().target() == "llama-cpp-2" {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(CountLlamaEvents(std::sync::Arc::clone(&count)));
    tracing::subscriber::set_global_default(subscriber).expect("one global subscriber per test binary");
    count
}

/// A scratch directory for files a test writes.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A llama-cpp-python OpenAI-compatible server on 127.0.0.1 serving SmolLM2, for the remote-model tests;
/// installed by `scripts/install-test-server.sh`. Stopped when dropped.
pub struct TestServer {
    child: std::process::Child,
    pub base_url: String,
}

impl TestServer {
    pub fn start() -> TestServer {
        let deps = models_dir().join(".pyserver");
        assert!(deps.exists(), "{} is missing: run scripts/install-test-server.sh first", deps.display());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .env("PYTHONPATH", &deps)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(smollm2_path())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--n_threads",
                "1",
                "--n_ctx",
                "2048",
                "--model_alias",
                "smollm2",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start llama_cpp.server");
        let server = TestServer { child, base_url: format!("http://127.0.0.1:{port}/v1") };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Listening; give the model a moment to finish loading.
                std::thread::sleep(std::time::Duration::from_millis(500));
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("llama_cpp.server did not start within 90 s");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
