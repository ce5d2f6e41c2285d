//! Fast-forward: the tokens a grammar leaves no choice about, decoded without a step each
//! ([`FastForward`]).
//!
//! Under a grammar, much of a structured output is fixed once the model has chosen a branch: a tool call's
//! braces and keys, the rest of the only tool name left, the tail of an enum value. llguidance says which bytes
//! are forced; the [`Drafter`] turns them into tokens, which the engine decodes in the same step as the token
//! sampled before them.
//!
//! [`FastForward::Confirmed`]: the tokens are a draft, decoded with logits at every position. The model then
//! picks its token at each position under the grammar exactly as it would in a step of its own (same sampler,
//! same random draws); while it picks the draft's token, that token is confirmed without a step of its own,
//! and at the first other pick the rest of the draft is dropped from the KV cache and decoding goes on from
//! the model's token. The grammar keeps llama-cpp-2's approximate token environment, so its masks are the ones
//! of [`FastForward::Off`] and the outputs are too. The draft is the forced bytes as the model's tokenizer
//! splits them: llama.cpp's own tokenizer for a byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`:
//! SmolLM2, Qwen, Llama 3); SentencePiece vocabularies (Gemma, Llama 2) would add a leading space to every
//! fragment, so theirs are split greedily over the vocabulary's token trie instead: a worse guess, still only
//! a guess.
//!
//! [`FastForward::Forced`]: llguidance forces the tokens itself, through a canonical token environment
//! ([`LlamaTokEnv`]): its mask then allows only the tokenizer's split of forced bytes, and the tokens go into
//! the output at once and are decoded without logits. The model, left to itself under the grammar, sometimes
//! splits the same text into other tokens and writes something else next, so outputs can change.

use llama_cpp_2::model::LlamaModel as RawModel;
use llama_cpp_2::token::LlamaToken;
use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokTrie, TokenId, TokenizerEnv};
use llguidance::Matcher;

use super::engine::EngineConfig;
use crate::model::FastForward;

/// Turns what a grammar forces into a draft of tokens for a lane.
#[derive(Debug, Clone)]
pub(super) struct Drafter {
    mode: FastForward,
    byte_level: bool,
    /// The most draft tokens a slot decodes after its sampled one in a step (its share of a batch).
    limit: usize,
}

impl Drafter {
    pub(super) fn new(model: &RawModel, config: &EngineConfig) -> Self {
        Self {
            mode: config.fast_forward,
            byte_level: is_byte_level_bpe(model),
            limit: (config.batch / config.slots.max(1)).saturating_sub(1) as usize,
        }
    }

    /// Whether drafts are confirmed by the model (and so need logits at every position).
    pub(super) fn confirms(&self) -> bool {
        self.mode == FastForward::Confirmed
    }

    /// The tokens `matcher` forces next, at most `room` of them: a draft to confirm, or tokens llguidance
    /// forces (none for a request that asks for log-probabilities: a forced token has none), by the mode.
    pub(super) fn draft(
        &self,
        model: &RawModel,
        matcher: &mut Matcher,
        room: usize,
        logprobs: bool,
    ) -> Vec<LlamaToken> {
        let room = room.min(self.limit);
        if room == 0 {
            return Vec::new();
        }
        match self.mode {
            FastForward::Confirmed => {}
            FastForward::Forced if !logprobs => {
                let mut tokens = matcher.compute_ff_tokens();
                tokens.truncate(room);
                return tokens.into_iter().map(|t| LlamaToken(t as i32)).collect();
            }
            _ => return Vec::new(),
        }
        let bytes = matcher.compute_ff_bytes();
        if bytes.is_empty() {
            return Vec::new();
        }
        let mut tokens = if self.byte_level {
            // Forced bytes can end inside a character, which llama.cpp's tokenizer cannot take: the draft stops
            // before it.
            let text = match std::str::from_utf8(&bytes) {
                Ok(text) => text,
                Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
            };
            if text.is_empty() {
                return Vec::new();
            }
            tokenize_text(model, text)
        } else {
            match matcher.tok_env() {
                Ok(env) => env.tok_trie().greedy_tokenize(&bytes).into_iter().map(|t| LlamaToken(t as i32)).collect(),
                Err(_) => Vec::new(),
            }
        };
        tokens.truncate(room);
        tokens
    }
}

/// llguidance's view of the model's vocabulary, tokenizing with the model's own tokenizer: canonical, so that
/// llguidance forces tokens ([`FastForward::Forced`]). It keeps llama-cpp-2's trie (the vocabulary's bytes,
/// special tokens marked); for a byte-level BPE vocabulary a fragment is split the way the whole text would
/// be, and llguidance re-tokenizes across the boundary with the previous token itself.
pub(super) struct LlamaTokEnv {
    trie: TokTrie,
    model: Arc<RawModel>,
}

impl LlamaTokEnv {
    /// The environment the grammars of a model in `mode` use: this one for [`FastForward::Forced`] on a
    /// byte-level BPE vocabulary, else llama-cpp-2's approximate one (llguidance then forces nothing).
    pub(super) fn build(model: &Arc<RawModel>, mode: FastForward) -> TokEnv {
        let approximate = llama_cpp_2::sampling::LlamaSampler::llguidance_tok_env(model);
        if mode != FastForward::Forced || !is_byte_level_bpe(model) {
            return approximate;
        }
        Arc::new(Self { trie: approximate.tok_trie().clone(), model: Arc::clone(model) })
    }
}

impl TokenizerEnv for LlamaTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        // A forced text can end inside a character, which llama.cpp's tokenizer cannot take: such bytes go
        // through the trie.
        match std::str::from_utf8(s) {
            Ok(text) => tokenize_text(&self.model, text).into_iter().map(|t| t.0 as TokenId).collect(),
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

/// Forced text as llama.cpp's tokenizer splits it: plain text (no BOS, and `<|im_end|>` inside a JSON string
/// stays text). A `&str`, because its BPE pre-tokenizer throws on invalid UTF-8, through the FFI an abort.
fn tokenize_text(model: &RawModel, text: &str) -> Vec<LlamaToken> {
    model.vocab().tokenize(text.as_bytes(), false, false)
}

/// Whether the vocabulary is GPT-2-style byte-level BPE (read from the GGUF metadata rather than
/// `llama_vocab_type`, whose Rust wrapper panics on a type it does not know).
fn is_byte_level_bpe(model: &RawModel) -> bool {
    model.meta_val_str("tokenizer.ggml.model").is_ok_and(|m| m == "gpt2")
}
