//! Bad input gets a clear, typed error, never a panic or an abort.

mod support;

use std::path::Path;

use slm_agents::model::{LanguageModel, LlamaModel, Message, Request, Sampling};
use slm_agents::Error;

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// A structurally valid GGUF file with one small F32 tensor and the given architecture.
fn tiny_gguf(architecture: &str) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(b"GGUF");
    v.extend(3u32.to_le_bytes());
    v.extend(1u64.to_le_bytes()); // tensors
    v.extend(1u64.to_le_bytes()); // metadata entries
    gguf_string(&mut v, "general.architecture");
    v.extend(8u32.to_le_bytes());
    gguf_string(&mut v, architecture);
    gguf_string(&mut v, "token_embd.weight");
    v.extend(2u32.to_le_bytes());
    v.extend(8u64.to_le_bytes());
    v.extend(4u64.to_le_bytes());
    v.extend(0u32.to_le_bytes()); // F32
    v.extend(0u64.to_le_bytes());
    while v.len() % 32 != 0 {
        v.push(0);
    }
    v.extend([0u8; 8 * 4 * 4]);
    v
}

fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = support::scratch_dir("bad_input").join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load(path: &Path) -> Result<LlamaModel, Error> {
    LlamaModel::builder(path).threads(1).slots(1).load()
}

#[test]
fn a_missing_file_names_the_path() {
    let err = load(Path::new("models/does-not-exist.gguf")).unwrap_err();
    assert!(matches!(err, Error::ModelFile { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist.gguf"), "{err}");
    assert!(std::error::Error::source(&err).is_some(), "the I/O error is the source");
}

#[test]
fn a_file_that_is_not_gguf_is_rejected_before_llama_cpp() {
    let path = write("notes.gguf", b"these are my meeting notes, not a model");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::InvalidGguf { .. }), "{err}");
    assert!(err.to_string().contains("notes.gguf"), "{err}");
}

#[test]
fn an_empty_file_is_rejected() {
    let path = write("empty.gguf", b"");
    assert!(matches!(load(&path), Err(Error::InvalidGguf { .. })));
}

#[test]
fn a_truncated_model_is_rejected_before_llama_cpp() {
    // The real SmolLM2 file cut in half: the header is intact but the tensor data ends early.
    let bytes = std::fs::read(support::smollm2_path()).unwrap();
    for (name, len) in [("half.gguf", bytes.len() / 2), ("header-only.gguf", 4096), ("minus-one.gguf", bytes.len() - 1)]
    {
        let path = write(name, &bytes[..len]);
        let err = load(&path).unwrap_err();
        assert!(matches!(err, Error::InvalidGguf { .. }), "{name}: {err}");
        assert!(err.to_string().contains("truncated"), "{name}: {err}");
    }
}

#[test]
fn corrupt_header_counts_are_rejected() {
    let mut bytes = tiny_gguf("llama");
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let path = write("bad-count.gguf", &bytes);
    assert!(matches!(load(&path), Err(Error::InvalidGguf { .. })));
}

#[test]
fn an_unknown_architecture_is_named() {
    let path = write("unknown-arch.gguf", &tiny_gguf("flux-capacitor"));
    let err = load(&path).unwrap_err();
    match &err {
        Error::UnsupportedArchitecture { architecture, .. } => assert_eq!(architecture, "flux-capacitor"),
        other => panic!("expected UnsupportedArchitecture, got {other}"),
    }
}

#[test]
fn a_known_architecture_with_missing_tensors_fails_to_load_cleanly() {
    let path = write("hollow-llama.gguf", &tiny_gguf("llama"));
    let err = load(&path).unwrap_err();
    assert!(matches!(err, Error::ModelLoad { .. }), "{err}");
}

#[test]
fn out_of_range_settings_are_refused() {
    let err = LlamaModel::builder(support::smollm2_path()).threads(0).load().unwrap_err();
    assert!(matches!(err, Error::InvalidSetting { setting: "threads", .. }), "{err}");
    let err = LlamaModel::builder(support::smollm2_path()).slots(0).load().unwrap_err();
    assert!(matches!(err, Error::InvalidSetting { setting: "slots", .. }), "{err}");
    let err = LlamaModel::builder(support::smollm2_path()).slots(8).batch_size(4).load().unwrap_err();
    assert!(matches!(err, Error::InvalidSetting { setting: "batch_size", .. }), "{err}");
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_refused() {
    let model = support::smollm2();
    let huge = "word ".repeat(model.context_size() + 10);
    let err = model.complete(Request::chat([Message::user(huge)])).await.unwrap_err();
    match err {
        Error::PromptTooLong { prompt_tokens, context_tokens } => {
            assert!(prompt_tokens > context_tokens);
            assert_eq!(context_tokens, model.context_size() - 1);
        }
        other => panic!("expected PromptTooLong, got {other}"),
    }
    let err = model.embed(&["word ".repeat(model.context_size() + 10)]).await.unwrap_err();
    assert!(matches!(err, Error::PromptTooLong { .. }), "{err}");
    // The model still works afterwards.
    model.complete(Request::chat([Message::user("hi")]).with_max_tokens(2)).await.unwrap();
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let model = support::smollm2();
    let err = model.complete(Request::chat([])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    let err = model.complete(Request::raw("")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    let err = model.complete(Request::raw("x").with_max_tokens(0)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    let err = model.complete(Request::raw("x").with_sampling(Sampling::temperature(f32::NAN))).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    let err =
        model.complete(Request::raw("x").with_sampling(Sampling::temperature(0.8).with_top_p(0.0))).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
}
