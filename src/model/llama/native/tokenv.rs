//! llguidance's view of the model's vocabulary, with the model's own tokenizer, so that tokens a grammar
//! forces can be decoded ahead ("fast-forward").
//!
//! llama-cpp-2's token environment tokenizes greedily over its token trie, which is not how the model's
//! tokenizer would split a text, so it says it is not canonical, and llguidance then never forces tokens. This
//! one keeps that trie (the vocabulary's bytes, special tokens marked) and tokenizes with llama.cpp's own
//! tokenizer, the one that made the prompt: for a byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`:
//! SmolLM2, Qwen, Llama 3) a fragment is split the way the whole text would be, and llguidance re-tokenizes
//! across the boundary with the previous token itself. SentencePiece vocabularies (`llama`: Gemma, Llama 2)
//! add a leading space to every fragment they tokenize, which would make forced tokens differ from the ones the
//! model sees in training; they keep the approximate environment and do not fast-forward.

use std::sync::Arc;

use llama_cpp_2::model::LlamaModel as RawModel;
use llguidance::toktrie::{TokEnv, TokTrie, TokenId, TokenizerEnv};

/// The model's vocabulary for llguidance, tokenizing with the model's tokenizer.
pub(super) struct LlamaTokEnv {
    trie: TokTrie,
    model: Arc<RawModel>,
}

impl LlamaTokEnv {
    /// The environment for `model`: canonical (forcing tokens) for a byte-level BPE vocabulary when
    /// `fast_forward` is on, else llama-cpp-2's approximate one.
    pub(super) fn build(model: &Arc<RawModel>, fast_forward: bool) -> TokEnv {
        let approximate = llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(model);
        if !fast_forward || !is_byte_level_bpe(model) {
            return approximate;
        }
        Arc::new(Self { trie: approximate.tok_trie().clone(), model: Arc::clone(model) })
    }
}

/// Whether the vocabulary is GPT-2-style byte-level BPE (read from the GGUF metadata rather than
/// `llama_vocab_type`, whose Rust wrapper panics on a type it does not know).
fn is_byte_level_bpe(model: &RawModel) -> bool {
    model.meta_val_str("tokenizer.ggml.model").is_ok_and(|m| m == "gpt2")
}

impl TokenizerEnv for LlamaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // llama.cpp's BPE pre-tokenizer throws (through the FFI: an abort) on invalid UTF-8, and a forced
        // text can end inside a character: such bytes go through the trie.
        if std::str::from_utf8(s).is_err() {
            return self.trie.greedy_tokenize(s);
        }
        // Plain text: no BOS, and `<|im_end|>` inside a JSON string stays text.
        self.model.vocab().tokenize(s, false, false).into_iter().map(|t| t.0 as TokenId).collect()
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}
