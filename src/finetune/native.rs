//! The training itself, through llama.cpp's training API (`llama_opt_*`, via llama-cpp-sys-2). It runs only
//! in the child process ([`super::serve_child`]): llama.cpp aborts the process on misuse.

use std::ffi::{c_char, c_void, CString};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use llama_cpp_sys_2 as sys;

use super::{lora, Job, Progress};

/// The epoch being trained, for the callbacks (they have no user-data pointer).
static EPOCH: AtomicUsize = AtomicUsize::new(0);

/// Writes one progress line to the parent (the child's standard output is the protocol, not a log).
pub(super) fn emit(progress: &Progress) {
    if let Ok(line) = serde_json::to_string(progress) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

unsafe extern "C" fn on_batch(
    train: bool,
    _opt: sys::ggml_opt_context_t,
    _dataset: sys::ggml_opt_dataset_t,
    result: sys::ggml_opt_result_t,
    ibatch: i64,
    ibatch_max: i64,
    _t_start_us: i64,
) {
    let (mut loss, mut unc) = (0f64, 0f64);
    // SAFETY: llama.cpp passes a live result for the epoch being run.
    unsafe { sys::ggml_opt_result_loss(result, &mut loss, &mut unc) };
    if train {
        emit(&Progress::Step {
            epoch: EPOCH.load(Ordering::Relaxed),
            step: ibatch as usize,
            steps: ibatch_max as usize,
            loss,
        });
    }
}

/// The learning rate for the optimizer, passed through its user-data pointer.
unsafe extern "C" fn optimizer_params(userdata: *mut c_void) -> sys::ggml_opt_optimizer_params {
    // SAFETY: the pointer is to the `f32` learning rate that outlives training.
    let lr = unsafe { *(userdata as *const f32) };
    let mut p = unsafe { sys::ggml_opt_get_default_optimizer_params(std::ptr::null_mut()) };
    p.adamw.alpha = lr;
    p.sgd.alpha = lr;
    p
}

/// Trains the blocks at or after `first` (by name, `blk.N.`), all but the embedding when `first` is 0.
unsafe extern "C" fn filter(tensor: *const sys::ggml_tensor, userdata: *mut c_void) -> bool {
    // SAFETY: the pointer is to the `usize` first block that outlives training; names are C strings.
    let first = unsafe { *(userdata as *const usize) };
    let name = unsafe { std::ffi::CStr::from_ptr(sys::ggml_get_name(tensor)) }.to_string_lossy();
    if first == 0 {
        return unsafe { sys::llama_opt_param_filter_all(tensor, std::ptr::null_mut()) };
    }
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|block| block >= first)
}

fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.to_string_lossy().as_bytes()).map_err(|_| format!("{} has a NUL byte", path.display()))
}

/// Tokenizes `text` with the model's vocabulary, special tokens parsed (the rendered chat template holds them).
fn tokenize(vocab: *const sys::llama_vocab, text: &str) -> Vec<i32> {
    // Writes into `tokens`; a negative count is the size needed.
    let into = |tokens: &mut Vec<i32>| {
        // SAFETY: the buffer holds `tokens.len()` tokens, and llama.cpp writes at most that many.
        unsafe {
            sys::llama_tokenize(
                vocab,
                text.as_ptr() as *const c_char,
                text.len() as i32,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                false,
                true,
            )
        }
    };
    let mut tokens = vec![0i32; text.len() + 8];
    let mut n = into(&mut tokens);
    if n < 0 {
        tokens.resize((-n) as usize, 0);
        n = into(&mut tokens);
    }
    tokens.truncate(n.max(0) as usize);
    tokens
}

/// Runs the job: the base converted to F32, the last blocks (or all) trained on windows of the rendered
/// examples, the result saved as an F32 GGUF at `job.out`.
pub(super) fn train(job: &Job) -> Result<(), String> {
    // SAFETY: every pointer below comes from llama.cpp and is freed once, in reverse order of creation; the
    // settings were validated by the parent, and anything llama.cpp still asserts on ends this child only.
    unsafe {
        sys::llama_backend_init();
        let f32_path = job.work_dir.join("base-f32.gguf");
        let mut qp = sys::llama_model_quantize_default_params();
        qp.ftype = sys::LLAMA_FTYPE_ALL_F32;
        qp.allow_requantize = true;
        qp.pure_ = true;
        qp.nthread = job.threads as i32;
        let (base, f32c) = (cstring(&job.base)?, cstring(&f32_path)?);
        if sys::llama_model_quantize(base.as_ptr(), f32c.as_ptr(), &qp) != 0 {
            return Err(format!("cannot convert {} to F32", job.base.display()));
        }
        if let Some(tuned) = &job.tuned {
            let result = finish(job, &f32_path, tuned);
            let _ = std::fs::remove_file(&f32_path);
            return result;
        }
        let mut mp = sys::llama_model_default_params();
        mp.load_mode = sys::LLAMA_LOAD_MODE_NONE;
        let model = sys::llama_model_load_from_file(f32c.as_ptr(), mp);
        if model.is_null() {
            return Err("cannot load the F32 model".into());
        }
        let vocab = sys::llama_model_get_vocab(model);
        let n_ctx = job.context as usize;
        let windows =
            |texts: &[(String, usize)]| -> Vec<i32> { texts.iter().flat_map(|(t, _)| tokenize(vocab, t)).collect() };
        let train_tokens = windows(&job.texts);
        let eval_tokens = windows(&job.eval_texts);
        let n_train = train_tokens.len().saturating_sub(1) / n_ctx;
        let n_eval = eval_tokens.len().saturating_sub(1) / n_ctx;
        if n_train == 0 {
            sys::llama_model_free(model);
            return Err(format!(
                "the training examples make {} tokens, less than one window of {n_ctx}",
                train_tokens.len()
            ));
        }
        let ndata = n_train + n_eval;
        let dataset = sys::ggml_opt_dataset_init(
            sys::GGML_TYPE_I32,
            sys::GGML_TYPE_I32,
            n_ctx as i64,
            n_ctx as i64,
            ndata as i64,
            1,
        );
        let data = (*sys::ggml_opt_dataset_data(dataset)).data as *mut i32;
        let labels = (*sys::ggml_opt_dataset_labels(dataset)).data as *mut i32;
        let fill = |row: usize, tokens: &[i32], start: usize| {
            for j in 0..n_ctx {
                *data.add(row * n_ctx + j) = tokens[start + j];
                *labels.add(row * n_ctx + j) = tokens[start + j + 1];
            }
        };
        for i in 0..n_train {
            fill(i, &train_tokens, i * n_ctx);
        }
        for i in 0..n_eval {
            fill(n_train + i, &eval_tokens, i * n_ctx);
        }

        let mut cp = sys::llama_context_default_params();
        cp.n_ctx = n_ctx as u32;
        cp.n_batch = n_ctx as u32;
        cp.n_ubatch = n_ctx as u32;
        cp.n_seq_max = 1;
        cp.n_threads = job.threads as i32;
        cp.n_threads_batch = job.threads as i32;
        cp.type_k = sys::GGML_TYPE_F32;
        cp.type_v = sys::GGML_TYPE_F32;
        cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        let ctx = sys::llama_init_from_model(model, cp);
        if ctx.is_null() {
            sys::ggml_opt_dataset_free(dataset);
            sys::llama_model_free(model);
            return Err("cannot create the training context".into());
        }
        // One decode before training makes the CPU backend take the context's thread count.
        let mut first = train_tokens[..1].to_vec();
        let _ = sys::llama_decode(ctx, sys::llama_batch_get_one(first.as_mut_ptr(), 1));
        sys::llama_memory_clear(sys::llama_get_memory(ctx), true);

        let n_layer = sys::llama_model_n_layer(model).max(0) as usize;
        let mut first_block: usize = match job.layers {
            Some(n) => n_layer.saturating_sub(n),
            None => 0,
        };
        let mut lr: f32 = job.learning_rate;
        let params = sys::llama_opt_params {
            n_ctx_train: 0,
            param_filter: Some(filter),
            param_filter_ud: &mut first_block as *mut usize as *mut c_void,
            get_opt_pars: Some(optimizer_params),
            get_opt_pars_ud: &mut lr as *mut f32 as *mut c_void,
            optimizer_type: sys::GGML_OPT_OPTIMIZER_TYPE_ADAMW,
        };
        sys::llama_opt_init(ctx, model, params);
        emit(&Progress::Started { windows: n_train, eval_windows: n_eval, context: job.context });

        for epoch in 0..job.epochs {
            EPOCH.store(epoch, Ordering::Relaxed);
            let train_result = sys::ggml_opt_result_init();
            let eval_result = sys::ggml_opt_result_init();
            sys::llama_opt_epoch(ctx, dataset, train_result, eval_result, n_train as i64, Some(on_batch), None);
            let (mut loss, mut eval_loss, mut unc) = (0f64, 0f64, 0f64);
            sys::ggml_opt_result_loss(train_result, &mut loss, &mut unc);
            sys::ggml_opt_result_loss(eval_result, &mut eval_loss, &mut unc);
            emit(&Progress::Epoch { epoch, loss, eval_loss: if n_eval > 0 { Some(eval_loss) } else { None } });
            sys::ggml_opt_result_free(train_result);
            sys::ggml_opt_result_free(eval_result);
        }

        let saved = job.work_dir.join("tuned-raw.gguf");
        let saved_c = cstring(&saved)?;
        sys::llama_model_save_to_file(model, saved_c.as_ptr());
        sys::llama_free(ctx);
        sys::ggml_opt_dataset_free(dataset);
        sys::llama_model_free(model);
        let result = finish(job, &f32_path, &saved);
        let _ = std::fs::remove_file(&f32_path);
        let _ = std::fs::remove_file(&saved);
        result
    }
}

/// After training: the F32 model kept if asked, the adapter factored, each candidate rank scored on the
/// held-out examples, the chosen one written to `job.out`.
fn finish(job: &Job, base_f32: &Path, saved: &Path) -> Result<(), String> {
    if let Some(keep) = &job.keep_model {
        repair_metadata(&job.base, saved, keep)?;
    }
    let max_rank = job.ranks.iter().copied().max().unwrap_or(0);
    let (arch, mut factors) =
        lora::differences(base_f32, saved, max_rank, |done, total| emit(&Progress::Factoring { done, total }))?;
    if factors.is_empty() {
        return Err("training changed no weight: there is no adapter to make".into());
    }
    if let Some(n) = job.max_matrices {
        // The matrices whose updates the largest rank keeps most of.
        factors.sort_by(|a, b| b.kept.last().unwrap_or(&0.0).total_cmp(a.kept.last().unwrap_or(&0.0)));
        factors.truncate(n.max(1));
    }
    let mut candidates = Vec::new();
    for &rank in &job.ranks {
        let path = job.work_dir.join(format!("adapter-r{rank}.gguf"));
        let bytes = lora::write_adapter(&path, &arch, &factors, rank)?;
        candidates.push((rank, path, bytes, lora::kept_share(&factors, rank)));
    }
    drop(factors);
    let paths: Vec<&Path> = candidates.iter().map(|(_, p, _, _)| p.as_path()).collect();
    let losses = score(&job.base, &paths, job.scored(), job.threads)?;
    let base_loss = losses[0];
    emit(&Progress::Rank { rank: 0, loss: base_loss, kept: 0.0 });
    let scored: Vec<(usize, f64)> = candidates.iter().map(|(r, ..)| *r).zip(losses[1..].iter().copied()).collect();
    for ((_, _, _, kept), (rank, loss)) in candidates.iter().zip(&scored) {
        emit(&Progress::Rank { rank: *rank, loss: *loss, kept: *kept });
    }
    let chosen = choose_rank(&scored, job.rank_tolerance);
    let index = scored.iter().position(|(r, _)| *r == chosen).ok_or("no rank was chosen")?;
    let (rank, path, bytes, _) = &candidates[index];
    std::fs::copy(path, &job.out).map_err(|e| format!("cannot write {}: {e}", job.out.display()))?;
    for (_, p, _, _) in &candidates {
        let _ = std::fs::remove_file(p);
    }
    emit(&Progress::Adapter { rank: *rank, bytes: *bytes, loss: scored[index].1, base_loss });
    emit(&Progress::Done { peak_memory_bytes: peak_memory() });
    Ok(())
}

/// The smallest rank whose held-out loss is within `tolerance` of the best: loss ≤ best × (1 + tolerance).
/// `ranks` holds (rank, loss) pairs.
pub(super) fn choose_rank(ranks: &[(usize, f64)], tolerance: f64) -> usize {
    let finite = ranks.iter().filter(|(_, l)| l.is_finite());
    let Some(best) = finite.clone().map(|(_, l)| *l).min_by(f64::total_cmp) else {
        return ranks.iter().map(|(r, _)| *r).max().unwrap_or(0);
    };
    let mut ok: Vec<usize> = finite.filter(|(_, l)| *l <= best * (1.0 + tolerance)).map(|(r, _)| *r).collect();
    ok.sort_unstable();
    ok[0]
}

/// The peak resident memory of this process (Linux's `VmHWM`), in bytes.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The mean loss (negative log-likelihood per token) of each example's reply, on the base model alone and with
/// each adapter: `[base, adapters...]`. An example is (text, byte offset where the reply starts).
fn score(base: &Path, adapters: &[&Path], examples: &[(String, usize)], threads: usize) -> Result<Vec<f64>, String> {
    let base_c = cstring(base)?;
    // SAFETY: the model outlives the adapters (freed with it) and the context; the batch holds `cap` tokens and
    // is filled with at most that many; logits are read only for positions that asked for them.
    unsafe {
        let model = sys::llama_model_load_from_file(base_c.as_ptr(), sys::llama_model_default_params());
        if model.is_null() {
            return Err(format!("cannot load {}", base.display()));
        }
        let mut loaded = Vec::new();
        for path in adapters {
            let c = cstring(path)?;
            let a = sys::llama_adapter_lora_init(model, c.as_ptr());
            if a.is_null() {
                sys::llama_model_free(model);
                return Err(format!("llama.cpp refused the adapter {}", path.display()));
            }
            loaded.push(a);
        }
        let vocab = sys::llama_model_get_vocab(model);
        let n_vocab = sys::llama_vocab_n_tokens(vocab).max(0) as usize;
        let tokenized: Vec<(Vec<i32>, usize)> = examples
            .iter()
            .map(|(text, at)| (tokenize(vocab, text), tokenize(vocab, &text[..*at]).len()))
            .filter(|(t, n)| *n >= 1 && t.len() > *n)
            .collect();
        if tokenized.is_empty() {
            sys::llama_model_free(model);
            return Err("no example to score the adapter on".into());
        }
        let longest = tokenized.iter().map(|(t, _)| t.len()).max().unwrap_or(1);
        let cap = longest.div_ceil(256) * 256;
        let mut cp = sys::llama_context_default_params();
        cp.n_ctx = cap as u32;
        cp.n_batch = cap as u32;
        cp.n_ubatch = cap.min(512) as u32;
        cp.n_seq_max = 1;
        cp.n_threads = threads as i32;
        cp.n_threads_batch = threads as i32;
        let ctx = sys::llama_init_from_model(model, cp);
        if ctx.is_null() {
            sys::llama_model_free(model);
            return Err("cannot create the scoring context".into());
        }
        let mut batch = sys::llama_batch_init(cap as i32, 0, 1);
        let mut losses = Vec::new();
        let mut failed = None;
        'candidates: for which in 0..=loaded.len() {
            let (mut one, mut scale) = (if which > 0 { loaded[which - 1] } else { std::ptr::null_mut() }, 1.0f32);
            let n = usize::from(which > 0);
            sys::llama_set_adapters_lora(ctx, &mut one, n, &mut scale);
            let (mut nll, mut count) = (0f64, 0usize);
            for (tokens, n_prompt) in &tokenized {
                sys::llama_memory_clear(sys::llama_get_memory(ctx), true);
                for (i, &tok) in tokens.iter().enumerate() {
                    *batch.token.add(i) = tok;
                    *batch.pos.add(i) = i as i32;
                    *batch.n_seq_id.add(i) = 1;
                    **batch.seq_id.add(i) = 0;
                    *batch.logits.add(i) = i8::from(i + 1 >= *n_prompt && i + 1 < tokens.len());
                }
                batch.n_tokens = tokens.len() as i32;
                if sys::llama_decode(ctx, batch) != 0 {
                    failed = Some("llama.cpp could not score an example".to_owned());
                    break 'candidates;
                }
                for i in n_prompt - 1..tokens.len() - 1 {
                    let logits = std::slice::from_raw_parts(sys::llama_get_logits_ith(ctx, i as i32), n_vocab);
                    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
                    let target = tokens[i + 1] as usize;
                    nll += sum.ln() - f64::from(logits[target] - max);
                    count += 1;
                }
            }
            losses.push(nll / count.max(1) as f64);
        }
        sys::llama_batch_free(batch);
        sys::llama_free(ctx);
        sys::llama_model_free(model);
        match failed {
            Some(reason) => Err(reason),
            None => Ok(losses),
        }
    }
}

/// `llama_model_save_to_file` drops the chat template and the file type, writes the training context as the
/// context length and adds defaults: the saved tensors are written again under the original's key-values, with
/// the file type set to F32.
fn repair_metadata(original: &Path, saved: &Path, out: &Path) -> Result<(), String> {
    let (original_c, saved_c, out_c) = (cstring(original)?, cstring(saved)?, cstring(out)?);
    // SAFETY: contexts from gguf_init_* are freed once; tensors live in `tensors` until it is freed, after
    // the file is written.
    unsafe {
        let meta = sys::gguf_init_from_file(
            original_c.as_ptr(),
            sys::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() },
        );
        let mut tensors: *mut sys::ggml_context = std::ptr::null_mut();
        let tuned =
            sys::gguf_init_from_file(saved_c.as_ptr(), sys::gguf_init_params { no_alloc: false, ctx: &mut tensors });
        if meta.is_null() || tuned.is_null() || tensors.is_null() {
            return Err("cannot read the saved model back".into());
        }
        let outc = sys::gguf_init_empty();
        sys::gguf_set_kv(outc, meta);
        let key = CString::new("general.file_type").unwrap_or_default();
        #[allow(clippy::unnecessary_cast)] // the enum's C type differs between platforms
        sys::gguf_set_val_u32(outc, key.as_ptr(), sys::LLAMA_FTYPE_ALL_F32 as u32);
        for i in 0..sys::gguf_get_n_tensors(tuned) {
            let t = sys::ggml_get_tensor(tensors, sys::gguf_get_tensor_name(tuned, i));
            if !t.is_null() {
                sys::gguf_add_tensor(outc, t);
            }
        }
        let ok = sys::gguf_write_to_file(outc, out_c.as_ptr(), false);
        sys::gguf_free(outc);
        sys::gguf_free(tuned);
        sys::ggml_free(tensors);
        sys::gguf_free(meta);
        if ok {
            Ok(())
        } else {
            Err(format!("cannot write {}", out.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::choose_rank;

    #[test]
    fn the_smallest_rank_near_the_best_loss_is_chosen() {
        // The weather cluster's figures (docs/finetune.md).
        let ranks = [(16, 0.269), (32, 0.164), (64, 0.130), (128, 0.127)];
        assert_eq!(choose_rank(&ranks, 0.05), 64);
        assert_eq!(choose_rank(&ranks, 0.0), 128);
        assert_eq!(choose_rank(&ranks, 1.0), 32);
        assert_eq!(choose_rank(&[(8, f64::NAN), (16, 0.5)], 0.05), 16);
    }
}
