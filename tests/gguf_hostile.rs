//! Model files that made llama.cpp abort, hang or fail on the first request are refused before llama.cpp sees
//! them, each with a typed error naming the metadata key. Every case is the real test model with one value
//! changed (the regression corpus of an outside fuzzing run), plus chat templates that would run away.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use slm_agents::model::{LanguageModel, LlamaModel, Message, Request};
use slm_agents::Error;
use support::gguf::Gguf;

fn scratch(name: &str) -> PathBuf {
    support::scratch_dir("gguf-hostile").join(format!("{name}.gguf"))
}

/// Writes the mutated model and loads it.
fn load(g: &Gguf, name: &str) -> slm_agents::Result<LlamaModel> {
    let path = scratch(name);
    g.write(&path);
    let result = LlamaModel::builder(&path).threads(1).slots(1).context_size(256).load();
    let _ = std::fs::remove_file(&path);
    result
}

fn assert_refused(g: &Gguf, name: &str, key: &str) {
    match load(g, name) {
        Err(Error::InvalidMetadata { key: k, value, reason, .. }) => {
            assert_eq!(k, key, "{name}: {value}: {reason}");
        }
        Err(other) => panic!("{name}: expected InvalidMetadata for `{key}`, got {other}"),
        Ok(_) => panic!("{name}: the file was accepted"),
    }
}

fn smollm2() -> Gguf {
    Gguf::read(&support::smollm2_path())
}

#[test]
fn the_rewritten_model_still_loads_and_answers() {
    let g = smollm2();
    let model = load(&g, "roundtrip").unwrap();
    let out = futures::executor::block_on(model.complete(Request::raw("The capital of France is").with_max_tokens(3)));
    assert!(out.unwrap().usage.completion_tokens > 0);
}

#[test]
fn a_duplicate_token_string_is_refused() {
    let mut g = smollm2();
    let other = g.token(1001);
    g.set_token(1000, &other);
    assert_refused(&g, "dup-token", "tokenizer.ggml.tokens");
}

#[test]
fn a_token_that_equals_another_up_to_a_nul_byte_is_refused() {
    // llama.cpp reads token strings as C strings: "ab\0x" is "ab" to it, a duplicate of "ab" (found by fuzzing
    // Gemma: a single byte set to 0 in the vocabulary).
    let mut g = smollm2();
    let other = g.token(1001);
    g.set_token(1000, &format!("{other}\0x"));
    assert_refused(&g, "dup-token-nul", "tokenizer.ggml.tokens");
}

#[test]
fn layer_counts_llama_cpp_asserts_on_are_refused() {
    for (n, name) in [(0, "layers-0"), (513, "layers-513"), (u32::MAX, "layers-max")] {
        let mut g = smollm2();
        g.set_u32("llama.block_count", n);
        assert_refused(&g, name, "llama.block_count");
    }
}

#[test]
fn expert_counts_that_disagree_are_refused() {
    let mut g = smollm2();
    g.set_u32("llama.expert_used_count", 2);
    assert_refused(&g, "used-without-count", "llama.expert_used_count");
    let mut g = smollm2();
    g.set_u32("llama.expert_count", 4);
    assert_refused(&g, "count-without-used", "llama.expert_used_count");
    let mut g = smollm2();
    g.set_u32("llama.expert_count", u32::MAX).set_u32("llama.expert_used_count", 2);
    assert_refused(&g, "count-max", "llama.expert_count");
}

#[test]
fn an_empty_or_unknown_rope_scaling_type_is_refused() {
    for (v, name) in [("", "rope-empty"), ("bogus", "rope-bogus")] {
        let mut g = smollm2();
        g.set_str("llama.rope.scaling.type", v);
        assert_refused(&g, name, "llama.rope.scaling.type");
    }
}

#[test]
fn a_tokenizer_that_cannot_generate_is_refused() {
    for (v, name) in
        [("none", "tok-none"), ("no_vocab", "tok-no-vocab"), ("rwkv", "tok-rwkv"), ("llama", "tok-llama-on-bpe")]
    {
        let mut g = smollm2();
        g.set_str("tokenizer.ggml.model", v);
        assert_refused(&g, name, "tokenizer.ggml.model");
    }
}

#[test]
fn a_normalisation_epsilon_that_is_negative_or_not_finite_is_refused() {
    for (v, name) in
        [(-1.0, "eps-neg"), (f32::NAN, "eps-nan"), (f32::INFINITY, "eps-inf"), (f32::NEG_INFINITY, "eps-ninf")]
    {
        let mut g = smollm2();
        g.set_f32("llama.attention.layer_norm_rms_epsilon", v);
        assert_refused(&g, name, "llama.attention.layer_norm_rms_epsilon");
    }
}

#[test]
fn head_counts_and_rope_dimensions_that_divide_by_zero_or_overflow_are_refused() {
    let mut g = smollm2();
    g.set_u32("llama.attention.head_count", 0);
    assert_refused(&g, "heads-0", "llama.attention.head_count");
    let mut g = smollm2();
    g.set_u32("llama.attention.head_count_kv", 7);
    assert_refused(&g, "kv-heads-7", "llama.attention.head_count_kv");
    let mut g = smollm2();
    g.set_u32("llama.rope.dimension_count", 63);
    assert_refused(&g, "rope-odd", "llama.rope.dimension_count");
}

#[test]
fn gemma_gets_the_same_checks() {
    let mut g = Gguf::read(&support::gemma_path());
    g.set_u32("gemma3.block_count", 0);
    assert_refused(&g, "gemma-layers-0", "gemma3.block_count");
    let mut g = Gguf::read(&support::gemma_path());
    g.set_u32("gemma3.attention.head_count", 0);
    assert_refused(&g, "gemma-heads-0", "gemma3.attention.head_count");
}

#[test]
fn a_runaway_chat_template_fails_fast_with_a_template_error() {
    for (template, name) in [
        ("{{ 'x' * 100000000 }}", "tpl-big"),
        ("{% for i in range(100000000) %}{{ i }}{% endfor %}", "tpl-loop"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "tpl-recursion"),
    ] {
        let mut g = smollm2();
        g.set_str("tokenizer.chat_template", template);
        let model = load(&g, name).unwrap();
        let started = Instant::now();
        let err = futures::executor::block_on(model.complete(Request::chat([Message::user("hi")]))).unwrap_err();
        assert!(matches!(err, Error::Template { .. }), "{name}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name} took {:?}", started.elapsed());
    }
}

#[test]
fn a_prompt_far_larger_than_the_context_is_refused_before_tokenizing() {
    let model = support::smollm2();
    let started = Instant::now();
    let huge = "word ".repeat(1_000_000);
    let err = futures::executor::block_on(model.complete(Request::raw(huge))).unwrap_err();
    assert!(matches!(err, Error::PromptTooLarge { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}
