//! Shared helpers for the integration tests: model paths and shared model handles.
//!
//! Models come from `scripts/fetch-models.sh`. Test models run on one thread each: the machines have two cores
//! and several test threads, and competing llama.cpp threads slow everything down far more than they add.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::sync::OnceLock;

use slm_agents::model::LlamaModel;

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

/// A scratch directory for files a test writes.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
