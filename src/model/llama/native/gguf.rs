//! GGUF header checks, done in Rust before llama.cpp sees a file.
//!
//! llama.cpp aborts the whole process on some malformed files (for example a tensor whose data lies past the
//! end of a truncated file). This module reads the header, the metadata and the tensor table with every length
//! and offset checked against the file size, and returns the few metadata values the crate needs.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// More than any real model has; guards the loops against absurd counts.
const MAX_DIMS: u32 = 8;

/// What the crate reads from a GGUF header.
#[derive(Debug, Clone)]
pub(crate) struct GgufInfo {
    pub(crate) architecture: String,
    pub(crate) chat_template: Option<String>,
    /// Set for models with sliding-window attention (`<arch>.attention.sliding_window`).
    pub(crate) sliding_window: Option<u32>,
    /// `general.type`: `"model"`, `"adapter"`, or absent in older files.
    pub(crate) general_type: Option<String>,
}

/// Checks a GGUF file's structure and returns its key metadata.
pub(crate) fn inspect(path: &Path) -> Result<GgufInfo> {
    let file = File::open(path).map_err(|source| Error::ModelFile { path: path.to_owned(), source })?;
    let size = file.metadata().map_err(|source| Error::ModelFile { path: path.to_owned(), source })?.len();
    let mut r = Reader { inner: BufReader::with_capacity(1 << 16, file), pos: 0, size, path: path.to_owned() };
    r.inspect()
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    size: u64,
    path: PathBuf,
}

/// A metadata value, as far as the checks need it.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    U32(u32),
    /// Any other integer (u8 to i64), or a bool as 0/1.
    Int(i128),
    Float(f64),
    /// A numeric array short enough to be per-layer (others are skipped).
    Ints(Vec<i128>),
    /// The vocabulary (`tokenizer.ggml.tokens`); other string arrays are skipped.
    Strs(Vec<String>),
    Other,
}

impl Value {
    fn as_int(&self) -> Option<i128> {
        match self {
            Value::U32(v) => Some(i128::from(*v)),
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            other => other.as_int().map(|v| v as f64),
        }
    }

    /// A scalar, or every element of a per-layer array.
    fn ints(&self) -> Option<Vec<i128>> {
        match self {
            Value::Ints(v) => Some(v.clone()),
            other => other.as_int().map(|v| vec![v]),
        }
    }

    fn shown(&self) -> String {
        match self {
            Value::Str(s) => format!("{s:?}"),
            Value::U32(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Ints(v) if v.len() <= 8 => format!("{v:?}"),
            Value::Ints(v) => format!("an array of {}", v.len()),
            Value::Strs(v) => format!("{} strings", v.len()),
            Value::Other => "a value".into(),
        }
    }
}

/// Per-layer arrays longer than this are not kept (no model has more layers than llama.cpp's 512).
const MAX_KEPT_ARRAY: u64 = 4096;

impl Reader {
    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidGguf { path: self.path.clone(), reason: reason.into() }
    }

    fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.pos)
    }

    fn need(&self, n: u64, what: &str) -> Result<()> {
        if n > self.remaining() {
            return Err(self.invalid(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos, self.size
            )));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|source| Error::ModelFile { path: self.path.clone(), source })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes::<4>(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes::<8>(what)?))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        self.need(n, what)?;
        let n_i64 = i64::try_from(n).map_err(|_| self.invalid(format!("{what}: length {n} is absurd")))?;
        self.inner.seek_relative(n_i64).map_err(|source| Error::ModelFile { path: self.path.clone(), source })?;
        self.pos += n;
        Ok(())
    }

    /// A string as llama.cpp sees it: it reads GGUF strings as C strings, so a NUL byte ends them (a key, a
    /// value or a token with a NUL inside is, to llama.cpp, its part before the NUL).
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        self.need(len, what)?;
        let mut buf = vec![0u8; usize::try_from(len).map_err(|_| self.invalid("string too long"))?];
        self.inner.read_exact(&mut buf).map_err(|source| Error::ModelFile { path: self.path.clone(), source })?;
        self.pos += len;
        if let Some(nul) = buf.iter().position(|&b| b == 0) {
            buf.truncate(nul);
        }
        String::from_utf8(buf).map_err(|_| self.invalid(format!("{what} is not UTF-8")))
    }

    fn skip_string(&mut self, what: &str) -> Result<()> {
        let len = self.u64(what)?;
        self.skip(len, what)
    }

    /// Size in bytes of a fixed-size metadata value type, `None` for strings and arrays.
    fn scalar_size(ty: u32) -> Option<u64> {
        match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }

    /// A scalar of a fixed-size type, read.
    fn scalar(&mut self, ty: u32, key: &str) -> Result<Value> {
        Ok(match ty {
            0 => Value::Int(i128::from(self.bytes::<1>(key)?[0])),
            1 => Value::Int(i128::from(self.bytes::<1>(key)?[0] as i8)),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.bytes::<2>(key)?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.bytes::<2>(key)?))),
            4 => Value::U32(self.u32(key)?),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.bytes::<4>(key)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.bytes::<4>(key)?))),
            7 => Value::Int(i128::from(self.bytes::<1>(key)?[0] != 0)),
            10 => Value::Int(i128::from(self.u64(key)?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.bytes::<8>(key)?))),
            12 => Value::Float(f64::from_le_bytes(self.bytes::<8>(key)?)),
            _ => return Err(self.invalid(format!("metadata `{key}`: unknown value type {ty}"))),
        })
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value> {
        match ty {
            8 => Ok(Value::Str(self.string(key)?)),
            9 => {
                if depth > 2 {
                    return Err(self.invalid(format!("metadata `{key}`: arrays nested too deeply")));
                }
                let elem = self.u32(key)?;
                let count = self.u64(key)?;
                if depth == 0 && count <= MAX_KEPT_ARRAY && Self::scalar_size(elem).is_some() && elem != 6 && elem != 12
                {
                    self.need(count.saturating_mul(Self::scalar_size(elem).unwrap_or(1)), key)?;
                    let mut items = Vec::with_capacity(count as usize);
                    for _ in 0..count {
                        match self.scalar(elem, key)? {
                            Value::U32(v) => items.push(i128::from(v)),
                            Value::Int(v) => items.push(v),
                            _ => {}
                        }
                    }
                    return Ok(Value::Ints(items));
                }
                if depth == 0 && elem == 8 && key == "tokenizer.ggml.tokens" {
                    self.need(count.saturating_mul(8), key)?;
                    let mut items = Vec::with_capacity(count.min(1 << 20) as usize);
                    for _ in 0..count {
                        items.push(self.string(key)?);
                    }
                    return Ok(Value::Strs(items));
                }
                if let Some(sz) = Self::scalar_size(elem) {
                    let total = count
                        .checked_mul(sz)
                        .ok_or_else(|| self.invalid(format!("metadata `{key}`: array too large")))?;
                    self.skip(total, key)?;
                } else if elem == 8 {
                    // Each string needs at least its 8-byte length.
                    self.need(count.saturating_mul(8), key)?;
                    for _ in 0..count {
                        self.skip_string(key)?;
                    }
                } else if elem == 9 {
                    self.need(count.saturating_mul(12), key)?;
                    for _ in 0..count {
                        self.value(9, key, depth + 1)?;
                    }
                } else {
                    return Err(self.invalid(format!("metadata `{key}`: unknown array element type {elem}")));
                }
                Ok(Value::Other)
            }
            _ => self.scalar(ty, key),
        }
    }

    fn inspect(&mut self) -> Result<GgufInfo> {
        if self.size < 24 {
            return Err(self.invalid(format!("{} bytes is too small for a GGUF header", self.size)));
        }
        let magic = self.bytes::<4>("magic")?;
        if &magic != MAGIC {
            return Err(self.invalid("missing GGUF magic bytes (is this a GGUF model file?)"));
        }
        let version = self.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(self.invalid(format!("unsupported GGUF version {version}")));
        }
        let n_tensors = self.u64("tensor count")?;
        let n_kv = self.u64("metadata count")?;
        // Each metadata entry takes at least 13 bytes (key length, type, one byte); each tensor at least 28.
        if n_kv.saturating_mul(13) > self.remaining() {
            return Err(self.invalid(format!("metadata count {n_kv} does not fit in the file (truncated or corrupt)")));
        }
        if n_tensors.saturating_mul(28) > self.remaining() {
            return Err(
                self.invalid(format!("tensor count {n_tensors} does not fit in the file (truncated or corrupt)"))
            );
        }
        if n_tensors == 0 {
            return Err(self.invalid("the file holds no tensors"));
        }

        let mut architecture = None;
        let mut chat_template = None;
        let mut sliding_window = None;
        let mut general_type = None;
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut meta = std::collections::HashMap::new();
        for _ in 0..n_kv {
            let key = self.string("metadata key")?;
            let ty = self.u32(&key)?;
            let value = self.value(ty, &key, 0)?;
            if meta.contains_key(&key) {
                return Err(self.invalid(format!("metadata key `{key}` appears twice")));
            }
            if !matches!(value, Value::Other) {
                meta.insert(key.clone(), value.clone());
            }
            match (key.as_str(), value) {
                ("general.architecture", Value::Str(s)) => architecture = Some(s),
                ("tokenizer.chat_template", Value::Str(s)) => chat_template = Some(s),
                ("general.type", Value::Str(s)) => general_type = Some(s),
                (k, Value::U32(w)) if k.ends_with(".attention.sliding_window") => sliding_window = Some(w),
                ("general.alignment", Value::U32(a)) => {
                    if a == 0 || !a.is_power_of_two() {
                        return Err(self.invalid(format!("alignment {a} is not a power of two")));
                    }
                    alignment = u64::from(a);
                }
                _ => {}
            }
        }
        let architecture = architecture.ok_or_else(|| self.invalid("metadata has no `general.architecture`"))?;
        if general_type.as_deref() != Some("adapter") {
            check_metadata(&meta, &architecture).map_err(|(key, value, reason)| Error::InvalidMetadata {
                path: self.path.clone(),
                key,
                value,
                reason,
            })?;
        }

        let mut data_end = 0u64;
        for i in 0..n_tensors {
            let tname = self.string("tensor name")?;
            let n_dims = self.u32(&tname)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.invalid(format!("tensor `{tname}` has {n_dims} dimensions")));
            }
            let mut elements: u64 = 1;
            let mut first_dim = 0;
            for d in 0..n_dims {
                let dim = self.u64(&tname)?;
                if d == 0 {
                    first_dim = dim;
                }
                elements = elements
                    .checked_mul(dim)
                    .ok_or_else(|| self.invalid(format!("tensor `{tname}` is absurdly large")))?;
            }
            let ty = self.u32(&tname)?;
            let offset = self.u64(&tname)?;
            if offset % alignment != 0 {
                return Err(self.invalid(format!("tensor `{tname}` (#{i}) data offset {offset} is not aligned")));
            }
            if let Some((block, bytes)) = type_size(ty) {
                if first_dim % block != 0 {
                    return Err(
                        self.invalid(format!("tensor `{tname}` row size {first_dim} is not a multiple of {block}"))
                    );
                }
                let nbytes = (elements / block)
                    .checked_mul(bytes)
                    .ok_or_else(|| self.invalid(format!("tensor `{tname}` is absurdly large")))?;
                data_end = data_end.max(offset.saturating_add(nbytes));
            } else {
                data_end = data_end.max(offset);
            }
        }
        let data_start = self.pos.div_ceil(alignment) * alignment;
        let needed = data_start.saturating_add(data_end);
        if needed > self.size {
            return Err(self.invalid(format!(
                "truncated: tensor data ends at byte {needed} but the file has {} bytes",
                self.size
            )));
        }
        Ok(GgufInfo { architecture, chat_template, sliding_window, general_type })
    }
}

/// A metadata value llama.cpp would abort, hang or misbehave on: (key, value as shown, why).
type Refusal = (String, String, String);

/// The values llama.cpp asserts on (or loops forever on) for every architecture, checked before it sees them.
/// The rules follow the vendored llama.cpp (llama-model.cpp, llama-vocab.cpp, ggml-cpu's ops); each says what
/// would happen otherwise.
fn check_metadata(meta: &std::collections::HashMap<String, Value>, arch: &str) -> std::result::Result<(), Refusal> {
    let key = |k: &str| format!("{arch}.{k}");
    let get = |k: &str| meta.get(&key(k));
    let refuse = |k: String, v: &Value, why: &str| Err((k, v.shown(), why.to_owned()));

    // Layers: llama.cpp's LLAMA_MAX_LAYERS is 512; 0 layers aborts too.
    let layers = match get("block_count") {
        Some(v) => match v.as_int() {
            Some(n) if (1..=512).contains(&n) => n,
            _ => return refuse(key("block_count"), v, "the number of layers must be 1 to 512"),
        },
        None => 0,
    };
    if let Some(v) = get("nextn_predict_layers") {
        if v.as_int().is_none_or(|n| n < 0 || n > layers) {
            return refuse(key("nextn_predict_layers"), v, "must not be more than block_count");
        }
    }

    // Experts (LLAMA_MAX_EXPERTS = 1024): counts must agree, or loading aborts.
    let experts = get("expert_count").map(|v| (v, v.as_int()));
    let used = get("expert_used_count").map(|v| (v, v.ints()));
    match (experts, used) {
        (Some((v, n)), _) if n.is_none_or(|n| !(0..=1024).contains(&n)) => {
            return refuse(key("expert_count"), v, "must be 0 to 1024")
        }
        (Some((_, Some(n))), Some((v, Some(u)))) if u.iter().any(|&u| u < 0 || u > n) || (n > 0 && u.contains(&0)) => {
            return refuse(key("expert_used_count"), v, "must be 1 to expert_count (0 without experts)");
        }
        (Some((_, Some(n))), None) if n > 0 => {
            return Err((
                key("expert_used_count"),
                "missing".into(),
                "a model with experts must say how many it uses".into(),
            ))
        }
        (None, Some((v, Some(u)))) if u.iter().any(|&u| u != 0) => {
            return refuse(key("expert_used_count"), v, "set without expert_count")
        }
        (_, Some((v, None))) => return refuse(key("expert_used_count"), v, "must be an integer"),
        _ => {}
    }
    let n_experts = get("expert_count").and_then(Value::as_int).unwrap_or(0);
    if let Some(v) = get("expert_group_count") {
        let g = v.as_int().unwrap_or(-1);
        let bad = if n_experts == 0 { g != 0 } else { g < 0 || g >= n_experts || (g > 1 && n_experts % g != 0) };
        if bad {
            return refuse(
                key("expert_group_count"),
                v,
                "must divide expert_count and be smaller than it (0 without experts)",
            );
        }
        if let Some(u) = get("expert_group_used_count") {
            let gu = u.as_int().unwrap_or(-1);
            if g > 1 && !(1..g).contains(&gu) {
                return refuse(key("expert_group_used_count"), u, "must be 1 to expert_group_count - 1");
            }
        }
    }

    if let Some(v) = get("rope.scaling.type") {
        if !matches!(v, Value::Str(s) if ["none", "linear", "yarn", "longrope"].contains(&s.as_str())) {
            return refuse(key("rope.scaling.type"), v, "must be none, linear, yarn or longrope");
        }
    }
    for k in ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"] {
        if let Some(v) = get(k) {
            if v.as_float().is_none_or(|e| !e.is_finite() || e < 0.0) {
                return refuse(key(k), v, "a normalisation epsilon must be a finite number, 0 or more");
            }
        }
    }

    // Heads: a zero or missing head count divides by zero; per-layer arrays must match the layers.
    for k in ["attention.head_count", "attention.head_count_kv", "feed_forward_length"] {
        if let Some(v) = get(k) {
            let Some(values) = v.ints() else { return refuse(key(k), v, "must be an integer or one per layer") };
            if values.len() > 1 && values.len() as i128 != layers {
                return refuse(key(k), v, "a per-layer array must have one value per layer");
            }
            if values.len() > 1 && values.iter().any(|&x| x != values[0]) && k != "feed_forward_length" {
                return refuse(key(k), v, "per-layer head counts that differ are not supported");
            }
            if values.iter().any(|x| !(0..=1 << 20).contains(x)) {
                return refuse(key(k), v, "out of range");
            }
        }
    }
    let heads = get("attention.head_count").and_then(Value::ints).and_then(|v| v.first().copied());
    if layers > 0 && heads.is_none_or(|h| h <= 0) {
        let v = get("attention.head_count").cloned().unwrap_or(Value::Other);
        return refuse(key("attention.head_count"), &v, "a model needs at least one attention head");
    }
    let kv_heads = get("attention.head_count_kv").and_then(Value::ints).and_then(|v| v.first().copied());
    if let (Some(h), Some(kv)) = (heads, kv_heads) {
        if kv <= 0 || h % kv != 0 {
            let v = get("attention.head_count_kv").cloned().unwrap_or(Value::Other);
            return refuse(key("attention.head_count_kv"), &v, "must divide the number of attention heads");
        }
    }
    let head_dim = get("attention.key_length")
        .and_then(Value::as_int)
        .or_else(|| Some(get("embedding_length")?.as_int()? / heads.filter(|&h| h > 0)?));
    for k in ["rope.dimension_count", "rope.dimension_count_swa"] {
        if let Some(v) = get(k) {
            let n = v.as_int().unwrap_or(-1);
            if n < 0 || n % 2 != 0 || head_dim.is_some_and(|d| n > d) {
                return refuse(key(k), v, "must be even and at most the head size");
            }
        }
    }

    check_vocabulary(meta, arch)
}

/// The tokenizer: a model llama.cpp can run, and a vocabulary it can index.
fn check_vocabulary(meta: &std::collections::HashMap<String, Value>, arch: &str) -> std::result::Result<(), Refusal> {
    let model = match meta.get("tokenizer.ggml.model") {
        Some(Value::Str(m)) => m.as_str(),
        Some(other) => return Err(("tokenizer.ggml.model".into(), other.shown(), "must be a string".into())),
        None => return Ok(()),
    };
    // "none"/"no_vocab" abort on the first tokenization; "rwkv" loops forever on a vocabulary not made for it,
    // so it is taken only from the RWKV family, and PLaMo's tokenizer only from PLaMo models.
    let own = match model {
        "llama" | "gpt2" | "bert" | "t5" => true,
        "rwkv" => arch.contains("rwkv"),
        "plamo2" => arch.starts_with("plamo"),
        _ => false,
    };
    if !own {
        return Err((
            "tokenizer.ggml.model".into(),
            format!("{model:?}"),
            format!("a `{arch}` model that generates text needs the llama, gpt2, bert or t5 tokenizer"),
        ));
    }
    let Some(Value::Strs(tokens)) = meta.get("tokenizer.ggml.tokens") else {
        return Err(("tokenizer.ggml.tokens".into(), "missing".into(), "a model needs its vocabulary".into()));
    };
    // llama.cpp replaces empty tokens by `[EMPTY_i]`, then asserts that every token string is unique.
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let t = if t.is_empty() {
            std::borrow::Cow::Owned(format!("[EMPTY_{i}]"))
        } else {
            std::borrow::Cow::Borrowed(t.as_str())
        };
        if !seen.insert(t.clone()) {
            return Err((
                "tokenizer.ggml.tokens".into(),
                format!("token {i} {t:?}"),
                "every token string must be unique (this one appears twice)".into(),
            ));
        }
    }
    // A SentencePiece ("llama") vocabulary falls back to byte tokens; without them tokenizing throws.
    if model == "llama" && (0..=255u32).any(|b| !seen.contains(format!("<0x{b:02X}>").as_str())) {
        return Err((
            "tokenizer.ggml.model".into(),
            "\"llama\"".into(),
            "a SentencePiece tokenizer needs the 256 byte tokens <0x00>..<0xFF>; this vocabulary lacks them (is it BPE, \"gpt2\"?)".into(),
        ));
    }
    // A special token the tokenizer adds must exist.
    let n = tokens.len() as i128;
    let (bos_default, eos_default) = match model {
        "llama" => (Some(1), Some(2)),
        "gpt2" => (Some(11), Some(11)),
        "bert" => (Some(101), Some(102)),
        _ => (None, None),
    };
    let flag = |k: &str, default: bool| meta.get(k).and_then(Value::as_int).map_or(default, |v| v != 0);
    for (flag_key, id_key, default_on, default_id) in [
        (
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.bos_token_id",
            model == "bert" || model == "llama",
            bos_default,
        ),
        ("tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id", false, eos_default),
        ("tokenizer.ggml.add_sep_token", "tokenizer.ggml.seperator_token_id", model == "bert", Some(102)),
    ] {
        if !flag(flag_key, default_on) {
            continue;
        }
        let id =
            meta.get(id_key).and_then(Value::as_int).filter(|&i| (0..n).contains(&i)).or(default_id.filter(|&i| i < n));
        if id.is_none() {
            let shown = meta.get(id_key).map_or_else(|| "missing".into(), Value::shown);
            return Err((id_key.into(), shown, format!("{flag_key} is set, so this token must be in the vocabulary")));
        }
    }
    Ok(())
}

/// (elements per block, bytes per block) of a ggml tensor type; `None` for types this check does not know.
fn type_size(ty: u32) -> Option<(u64, u64)> {
    Some(match ty {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        30 => (1, 2), // BF16
        _ => return None,
    })
}

/// Architectures known to the bundled llama.cpp; used only to explain a load failure, never to refuse a file.
pub(crate) fn is_known_architecture(arch: &str) -> bool {
    KNOWN_ARCHITECTURES.contains(&arch)
}

const KNOWN_ARCHITECTURES: &[&str] = &[
    "clip",
    "llama",
    "llama4",
    "deci",
    "falcon",
    "grok",
    "gpt2",
    "gptj",
    "gptneox",
    "mpt",
    "baichuan",
    "starcoder",
    "refact",
    "bert",
    "modern-bert",
    "nomic-bert",
    "nomic-bert-moe",
    "neo-bert",
    "jina-bert-v2",
    "jina-bert-v3",
    "eurobert",
    "bloom",
    "stablelm",
    "qwen",
    "qwen2",
    "qwen2moe",
    "qwen2vl",
    "qwen3",
    "qwen3moe",
    "qwen3next",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen35",
    "qwen35moe",
    "clef",
    "qwen4exp",
    "phi2",
    "phi3",
    "phimoe",
    "plamo",
    "plamo2",
    "plamo3",
    "codeshell",
    "orion",
    "internlm2",
    "minicpm",
    "minicpm3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3n",
    "gemma4",
    "gemma4-assistant",
    "gemma-embedding",
    "starcoder2",
    "mamba",
    "mamba2",
    "maple",
    "jamba",
    "falcon-h1",
    "xverse",
    "command-r",
    "cohere2",
    "cohere2moe",
    "dbrx",
    "olmo",
    "olmo2",
    "olmoe",
    "muse-glimmer",
    "openelm",
    "arctic",
    "deepseek",
    "deepseek2",
    "deepseek2-ocr",
    "deepseek32",
    "deepseek4",
    "chatglm",
    "glm4",
    "glm4moe",
    "glm-dsa",
    "bitnet",
    "t5",
    "t5encoder",
    "jais",
    "jais2",
    "nemotron",
    "nemotron_h",
    "nemotron_h_moe",
    "exaone",
    "exaone4",
    "exaone-moe",
    "rwkv6",
    "rwkv6qwen2",
    "rwkv7",
    "arwkv7",
    "granite",
    "granitemoe",
    "granitehybrid",
    "graniteswitch",
    "granite_swa",
    "chameleon",
    "wavtokenizer-dec",
    "plm",
    "bailingmoe",
    "bailingmoe2",
    "bailingmoe3",
    "dots1",
    "dots3note",
    "arcee",
    "afmoe",
    "laguna",
    "ernie4_5",
    "ernie4_5-moe",
    "hunyuan-moe",
    "hunyuan-dense",
    "hunyuan_vl",
    "hy_v3",
    "hy_v4",
    "smollm3",
    "gpt-oss",
    "lfm2",
    "lfm2moe",
    "dream",
    "smallthinker",
    "llada",
    "llada-moe",
    "seed_oss",
    "grovemoe",
    "apertus",
    "minimax-01",
    "hrm_text",
    "minimax-m2",
    "minimax-m3",
    "cogvlm",
    "rnd1",
    "pangu-embedded",
    "mistral3",
    "eagle3",
    "dflash",
    "mistral4",
    "paddleocr",
    "mimo2",
    "step35",
    "spark2_5",
    "llama-embed",
    "maincoder",
    "kimi-linear",
    "kimi-k3",
    "glm5-next",
    "talkie",
    "mellum",
    "nanbeige",
    "qwen3tts",
    "pockettts",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("slm-agents-gguf-{}-{name}", std::process::id()));
        File::create(&path).and_then(|mut f| f.write_all(bytes)).unwrap();
        path
    }

    fn gguf_string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    /// A minimal GGUF: one metadata entry and one F32 tensor of `n` elements, with `data` bytes of data.
    fn tiny(arch: &str, n: u64, data: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(MAGIC);
        v.extend(3u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        gguf_string(&mut v, "general.architecture");
        v.extend(8u32.to_le_bytes());
        gguf_string(&mut v, arch);
        gguf_string(&mut v, "t");
        v.extend(1u32.to_le_bytes());
        v.extend(n.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(0u64.to_le_bytes());
        while v.len() % 32 != 0 {
            v.push(0);
        }
        v.extend(std::iter::repeat_n(0u8, data));
        v
    }

    #[test]
    fn well_formed_header_is_accepted() {
        let p = write_tmp("ok", &tiny("llama", 8, 32));
        let info = inspect(&p).unwrap();
        assert_eq!(info.architecture, "llama");
        assert!(info.chat_template.is_none());
    }

    #[test]
    fn tensor_data_past_the_end_is_rejected() {
        let p = write_tmp("trunc", &tiny("llama", 64, 32));
        let err = inspect(&p).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn absurd_counts_are_rejected() {
        let mut v = tiny("llama", 8, 32);
        v[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        let p = write_tmp("count", &v);
        assert!(matches!(inspect(&p), Err(Error::InvalidGguf { .. })));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let p = write_tmp("magic", b"this is not a model at all, just some text");
        let err = inspect(&p).unwrap_err();
        assert!(err.to_string().contains("magic"), "{err}");
    }
}
