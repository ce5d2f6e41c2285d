//! The training itself, through llama.cpp's training API (`llama_opt_*`, via llama-cpp-sys-2). It runs only
//! in the child process ([`super::serve_child`]): llama.cpp aborts the process on misuse.

use std::ffi::{c_char, c_void, CString};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use llama_cpp_sys_2 as sys;

use super::{Job, Progress};

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
        let mut mp = sys::llama_model_default_params();
        mp.load_mode = sys::LLAMA_LOAD_MODE_NONE;
        let model = sys::llama_model_load_from_file(f32c.as_ptr(), mp);
        if model.is_null() {
            return Err("cannot load the F32 model".into());
        }
        let vocab = sys::llama_model_get_vocab(model);
        let n_ctx = job.context as usize;
        let windows = |texts: &[String]| -> Vec<i32> { texts.iter().flat_map(|t| tokenize(vocab, t)).collect() };
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
        let _ = std::fs::remove_file(&f32_path);
        let repaired = repair_metadata(&job.base, &saved, &job.out);
        let _ = std::fs::remove_file(&saved);
        repaired
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
