//! Fuzzing the header of the real test models: mutated copies (bytes flipped, counts and type tags set to
//! extremes, values replaced, keys dropped or duplicated, files truncated) are each loaded, and asked for a
//! completion, in a child process. No copy may abort the process or hang (20 s, confirmed by a second run with
//! 120 s); every failure must be a typed error.
//!
//! CI runs a bounded number of cases (`SLM_FUZZ_CASES`, default 24 per model) from a fixed seed
//! (`SLM_FUZZ_SEED`); the full campaign is the same test with more cases:
//!
//! ```sh
//! SLM_FUZZ_CASES=10000 cargo test --release --test gguf_fuzz -- --nocapture
//! ```
//!
//! Mutated files are written under `SLM_FUZZ_DIR` (default /dev/shm when it exists).

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slm_agents::model::{LanguageModel, LlamaModel, Message, Request};
use support::gguf::Gguf;

/// What one child reports on stdout.
const MARK: &str = "FUZZ-OUTCOME ";

/// In a child process (`SLM_FUZZ_FILE` set): loads the file and runs a raw and a chat request.
#[test]
fn fuzz_child() {
    let Some(path) = std::env::var_os("SLM_FUZZ_FILE") else { return };
    let outcome = match LlamaModel::builder(PathBuf::from(path)).threads(1).slots(1).context_size(128).load() {
        Err(e) => format!("refused: {}", variant(&e)),
        Ok(model) => {
            let raw = futures::executor::block_on(model.complete(Request::raw("Hello").with_max_tokens(2))).map(|_| ());
            let chat = if model.has_chat_template() {
                futures::executor::block_on(model.complete(Request::chat([Message::user("Hi")]).with_max_tokens(2)))
                    .map(|_| ())
            } else {
                Ok(())
            };
            match raw.and(chat) {
                Ok(()) => "answered".to_owned(),
                Err(e) => format!("loaded, request failed: {}", variant(e.root())),
            }
        }
    };
    println!("{MARK}{outcome}");
}

/// The error's variant name (`InvalidMetadata`, ...), and the key for metadata refusals.
fn variant(e: &slm_agents::Error) -> String {
    let debug = format!("{e:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap_or_default().to_owned();
    match e {
        slm_agents::Error::InvalidMetadata { key, .. } => format!("{name} {key}"),
        _ => name,
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const EXTREMES: [u64; 8] = [0, 1, 2, 0x7f, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

/// One mutated copy of the model's header; the tensor data stays as it was. Returns (file bytes to write as
/// header, or the whole file when truncated) and a label.
fn mutate(g: &Gguf, rng: &mut Rng) -> (Option<Vec<u8>>, Option<u64>, String) {
    let mut g2 = g.clone();
    match rng.below(8) {
        0 => {
            // Flip a few bytes anywhere in the header.
            let mut header = g.header();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                let at = rng.below(header.len());
                header[at] ^= 1 << rng.below(8);
            }
            (Some(header), None, "byte flips".into())
        }
        1 => {
            // A flip in the metadata part, where the values are (the vocabulary is most of it).
            let mut header = g.header();
            let meta_end = header.len() - g.tensor_info.len();
            let at = 24 + rng.below(meta_end - 24);
            header[at] = rng.next() as u8;
            (Some(header), None, "metadata byte".into())
        }
        2 => {
            // A numeric value set to an extreme.
            let numeric: Vec<usize> =
                (0..g2.entries.len()).filter(|&i| matches!(g2.entries[i].ty, 0..=7 | 10..=12)).collect();
            let i = numeric[rng.below(numeric.len())];
            let v = EXTREMES[rng.below(EXTREMES.len())];
            let e = &mut g2.entries[i];
            let n = e.raw.len();
            e.raw = v.to_le_bytes()[..n].to_vec();
            if e.ty == 6 && rng.below(2) == 0 {
                e.raw = [f32::NAN, f32::INFINITY, -1.0, 0.0][rng.below(4)].to_le_bytes().to_vec();
            }
            let label = format!("value {}", e.key);
            (Some(g2.header()), None, label)
        }
        3 => {
            // A type tag changed.
            let i = rng.below(g2.entries.len());
            g2.entries[i].ty = rng.below(14) as u32;
            let label = format!("type tag {}", g2.entries[i].key);
            (Some(g2.header()), None, label)
        }
        4 => {
            let i = rng.below(g2.entries.len());
            let label = format!("dropped {}", g2.entries[i].key);
            g2.entries.remove(i);
            (Some(g2.header()), None, label)
        }
        5 => {
            let i = rng.below(g2.entries.len());
            let label = format!("duplicated {}", g2.entries[i].key);
            let e = g2.entries[i].clone();
            g2.entries.insert(rng.below(g2.entries.len()), e);
            (Some(g2.header()), None, label)
        }
        6 => {
            // Counts at the start of the header.
            let mut header = g.header();
            let (at, what) = if rng.below(2) == 0 { (8, "tensor count") } else { (16, "metadata count") };
            header[at..at + 8].copy_from_slice(&EXTREMES[rng.below(EXTREMES.len())].to_le_bytes());
            (Some(header), None, what.into())
        }
        _ => {
            // Truncated, in the header or the data.
            let header_len = g.header().len() as u64;
            let cut = if rng.below(2) == 0 { rng.next() % header_len } else { header_len + rng.next() % (64 << 20) };
            (None, Some(cut), "truncated".into())
        }
    }
}

fn fuzz_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLM_FUZZ_DIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let d = shm.join(format!("slm-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        return d;
    }
    support::scratch_dir("gguf-fuzz")
}

/// Runs one file in a child; returns its outcome (a typed result, or "ABORTED ..." / "HUNG"). A child that
/// runs past the time limit is run once more with a longer one before it counts as hung: on a machine busy
/// with other work (a build beside the fuzzer) a normal load can take that long, and a real hang hangs again.
fn run_child(path: &Path) -> String {
    match run_child_within(path, Duration::from_secs(20)) {
        hung if hung == "HUNG" => run_child_within(path, Duration::from_secs(120)),
        outcome => outcome,
    }
}

fn run_child_within(path: &Path, limit: Duration) -> String {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["fuzz_child", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env("SLM_FUZZ_FILE", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
            return match out.lines().find_map(|l| l.strip_prefix(MARK)) {
                Some(outcome) if status.success() => outcome.to_owned(),
                _ => format!("ABORTED ({status})"),
            };
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return "HUNG".into();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn campaign(model: &Path, cases: usize, seed: u64) -> BTreeMap<String, usize> {
    let g = Gguf::read(model);
    let dir = fuzz_dir();
    let path = dir.join(format!("{}.gguf", model.file_stem().unwrap().to_string_lossy()));
    let mut rng = Rng(seed | 1);
    let mut counts = BTreeMap::new();
    let mut bad = Vec::new();
    for case in 0..cases {
        let (header, cut, label) = mutate(&g, &mut rng);
        match (header, cut) {
            (Some(h), _) => g.write_with_header(&h, &path),
            (None, Some(cut)) => {
                g.write(&path);
                std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            }
            (None, None) => unreachable!(),
        }
        let outcome = run_child(&path);
        if outcome.starts_with("ABORTED") || outcome == "HUNG" {
            bad.push(format!("case {case} (seed {seed}): {label}: {outcome}"));
            std::fs::copy(&path, dir.join(format!("failing-{case}.gguf"))).ok();
        }
        *counts.entry(outcome).or_insert(0) += 1;
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir); // only when empty: failing copies are kept
    eprintln!("{}: {cases} mutated headers:", model.display());
    for (outcome, n) in &counts {
        eprintln!("  {n:6}  {outcome}");
    }
    assert!(bad.is_empty(), "aborted or hung:\n{}", bad.join("\n"));
    counts
}

fn cases(default: usize) -> usize {
    std::env::var("SLM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("SLM_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_2026)
}

/// Values that aborted, hung or threw in an outside fuzzing run or in a reading of llama.cpp, and neighbours of
/// them: each file is loaded and asked in a child process; none may abort or hang.
#[test]
fn the_regression_corpus_never_aborts_or_hangs() {
    if std::env::var_os("SLM_FUZZ_FILE").is_some() {
        return;
    }
    let base = Gguf::read(&support::smollm2_path());
    let dir = fuzz_dir();
    let path = dir.join("regression.gguf");
    type Edit = fn(&mut Gguf);
    let corpus: Vec<(&str, Edit)> = vec![
        ("tokenizer t5", |g| {
            g.set_str("tokenizer.ggml.model", "t5");
        }),
        ("tokenizer bert", |g| {
            g.set_str("tokenizer.ggml.model", "bert");
        }),
        ("tokenizer plamo2", |g| {
            g.set_str("tokenizer.ggml.model", "plamo2");
        }),
        ("tokenizer rwkv", |g| {
            g.set_str("tokenizer.ggml.model", "rwkv");
        }),
        ("tokenizer llama on BPE", |g| {
            g.set_str("tokenizer.ggml.model", "llama");
        }),
        ("tokenizer none", |g| {
            g.set_str("tokenizer.ggml.model", "none");
        }),
        ("tokenizer unknown", |g| {
            g.set_str("tokenizer.ggml.model", "gpt3");
        }),
        ("pre-tokenizer unknown", |g| {
            g.set_str("tokenizer.ggml.pre", "no-such-pre");
        }),
        ("bos out of range, added", |g| {
            g.set_u32("tokenizer.ggml.bos_token_id", 999_999);
            g.set("tokenizer.ggml.add_bos_token", 7, vec![1]);
        }),
        ("eos out of range", |g| {
            g.set_u32("tokenizer.ggml.eos_token_id", 999_999);
        }),
        ("duplicate token", |g| {
            let t = g.token(5000);
            g.set_token(5001, &t);
        }),
        ("empty token", |g| {
            g.set_token(5001, "");
        }),
        ("layers 0", |g| {
            g.set_u32("llama.block_count", 0);
        }),
        ("layers 513", |g| {
            g.set_u32("llama.block_count", 513);
        }),
        ("experts without used", |g| {
            g.set_u32("llama.expert_count", 8);
        }),
        ("used without experts", |g| {
            g.set_u32("llama.expert_used_count", 2);
        }),
        ("experts max", |g| {
            g.set_u32("llama.expert_count", u32::MAX).set_u32("llama.expert_used_count", 1);
        }),
        ("rope scaling empty", |g| {
            g.set_str("llama.rope.scaling.type", "");
        }),
        ("rope scaling unknown", |g| {
            g.set_str("llama.rope.scaling.type", "cubic");
        }),
        ("rope freq base 0", |g| {
            g.set_f32("llama.rope.freq_base", 0.0);
        }),
        ("rope dims odd", |g| {
            g.set_u32("llama.rope.dimension_count", 33);
        }),
        ("eps negative", |g| {
            g.set_f32("llama.attention.layer_norm_rms_epsilon", -1e-5);
        }),
        ("eps NaN", |g| {
            g.set_f32("llama.attention.layer_norm_rms_epsilon", f32::NAN);
        }),
        ("eps inf", |g| {
            g.set_f32("llama.attention.layer_norm_rms_epsilon", f32::INFINITY);
        }),
        ("heads 0", |g| {
            g.set_u32("llama.attention.head_count", 0);
        }),
        ("kv heads 0", |g| {
            g.set_u32("llama.attention.head_count_kv", 0);
        }),
        ("context 0", |g| {
            g.set_u32("llama.context_length", 0);
        }),
        ("embedding 0", |g| {
            g.set_u32("llama.embedding_length", 0);
        }),
        ("template bomb", |g| {
            g.set_str("tokenizer.chat_template", "{{ 'x' * 100000000 }}");
        }),
        ("template loop", |g| {
            g.set_str("tokenizer.chat_template", "{% for i in range(100000000) %}x{% endfor %}");
        }),
        ("architecture unknown", |g| {
            g.set_str("general.architecture", "no-such-arch");
        }),
        ("alignment 3", |g| {
            g.set_u32("general.alignment", 3);
        }),
    ];
    let mut bad = Vec::new();
    for (label, edit) in corpus {
        let mut g = base.clone();
        edit(&mut g);
        g.write(&path);
        let outcome = run_child(&path);
        eprintln!("  {label:28} {outcome}");
        if outcome.starts_with("ABORTED") || outcome == "HUNG" {
            bad.push(format!("{label}: {outcome}"));
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn mutated_smollm2_headers_never_abort_or_hang() {
    if std::env::var_os("SLM_FUZZ_FILE").is_some() {
        return;
    }
    campaign(&support::smollm2_path(), cases(24), seed());
}

#[test]
fn mutated_gemma_headers_never_abort_or_hang() {
    if std::env::var_os("SLM_FUZZ_FILE").is_some() {
        return;
    }
    campaign(&support::gemma_path(), cases(12), seed() ^ 0x9e37);
}
