//! The LoRA adapter of a fine-tune: each trained weight's difference from the base, factored by a truncated
//! SVD, written as a GGUF adapter that llama.cpp applies to the original (quantized) base. Runs in the child.

use std::ffi::CString;
use std::path::Path;

use faer::Mat;
use llama_cpp_sys_2 as sys;

/// One weight's difference from the base as the two factors of its best rank-`rank` approximation:
/// `W_tuned - W_base ≈ B · A`, `B = U_r √S_r` (n_out × rank), `A = √S_r V_rᵀ` (rank × n_in), both row-major.
pub(super) struct Factors {
    /// The base model's tensor name (`blk.3.attn_q.weight`).
    pub name: String,
    pub n_in: usize,
    pub n_out: usize,
    /// The rank kept (the lower of the largest rank asked for and the matrix's).
    pub rank: usize,
    /// n_out × rank.
    pub b: Vec<f32>,
    /// rank × n_in.
    pub a: Vec<f32>,
    /// The squared norm of the difference that each rank keeps, cumulated (`kept[r-1]` for rank r).
    pub kept: Vec<f64>,
    /// The squared norm of the whole difference.
    pub total: f64,
}

/// The share of the differences' squared norm (all weights together) that rank `rank` keeps.
pub(super) fn kept_share(factors: &[Factors], rank: usize) -> f64 {
    let total: f64 = factors.iter().map(|f| f.total).sum();
    let kept: f64 = factors.iter().filter_map(|f| f.kept.get(rank.min(f.rank).checked_sub(1)?)).sum();
    if total > 0.0 {
        kept / total
    } else {
        1.0
    }
}

/// The factors of a row-major `n_out × n_in` difference (`delta[o * n_in + i]`), up to `max_rank`.
pub(super) fn factor(name: &str, delta: &[f32], n_in: usize, n_out: usize, max_rank: usize) -> Result<Factors, String> {
    let m = Mat::<f32>::from_fn(n_out, n_in, |o, i| delta[o * n_in + i]);
    let svd = m.thin_svd().map_err(|e| format!("the SVD of {name} did not converge: {e:?}"))?;
    let (u, s, v) = (svd.U(), svd.S().column_vector(), svd.V());
    let rank = max_rank.min(n_in).min(n_out);
    let total: f64 = (0..s.nrows()).map(|j| f64::from(s[j]).powi(2)).sum();
    let mut kept = Vec::with_capacity(rank);
    let mut sum = 0.0;
    for j in 0..rank {
        sum += f64::from(s[j]).powi(2);
        kept.push(sum);
    }
    let root: Vec<f32> = (0..rank).map(|j| s[j].max(0.0).sqrt()).collect();
    let mut b = vec![0f32; n_out * rank];
    for o in 0..n_out {
        for j in 0..rank {
            b[o * rank + j] = u[(o, j)] * root[j];
        }
    }
    let mut a = vec![0f32; rank * n_in];
    for j in 0..rank {
        for i in 0..n_in {
            a[j * n_in + i] = root[j] * v[(i, j)];
        }
    }
    Ok(Factors { name: name.to_owned(), n_in, n_out, rank, b, a, kept, total })
}

fn cstring(text: &str) -> Result<CString, String> {
    CString::new(text).map_err(|_| format!("{text:?} has a NUL byte"))
}

/// Whether a tensor's difference goes into the adapter: the 2-D weights of the transformer blocks (llama.cpp
/// applies adapters to matrix products; norms are vectors, the token embedding never trains).
fn adaptable(name: &str, dims: i32) -> bool {
    dims == 2 && name.starts_with("blk.") && name.ends_with(".weight")
}

/// The differences between the F32 base and the F32 fine-tuned model, factored up to `max_rank`, with the
/// base's architecture name. Weights that did not change (frozen blocks) are left out.
pub(super) fn differences(
    base: &Path,
    tuned: &Path,
    max_rank: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(String, Vec<Factors>), String> {
    let (base_c, tuned_c) = (cstring(&base.to_string_lossy())?, cstring(&tuned.to_string_lossy())?);
    // SAFETY: both contexts are freed once, after the last read of their tensors' data; every tensor read is
    // F32 and contiguous (checked), with ne0 × ne1 elements.
    unsafe {
        let mut base_tensors: *mut sys::ggml_context = std::ptr::null_mut();
        let base_meta = sys::gguf_init_from_file(
            base_c.as_ptr(),
            sys::gguf_init_params { no_alloc: false, ctx: &mut base_tensors },
        );
        let mut tuned_tensors: *mut sys::ggml_context = std::ptr::null_mut();
        let tuned_meta = sys::gguf_init_from_file(
            tuned_c.as_ptr(),
            sys::gguf_init_params { no_alloc: false, ctx: &mut tuned_tensors },
        );
        let free = || {
            if !base_meta.is_null() {
                sys::gguf_free(base_meta);
            }
            if !tuned_meta.is_null() {
                sys::gguf_free(tuned_meta);
            }
            if !base_tensors.is_null() {
                sys::ggml_free(base_tensors);
            }
            if !tuned_tensors.is_null() {
                sys::ggml_free(tuned_tensors);
            }
        };
        if base_meta.is_null() || tuned_meta.is_null() || base_tensors.is_null() || tuned_tensors.is_null() {
            free();
            return Err("cannot read the base and the fine-tuned weights".into());
        }
        let key = cstring("general.architecture")?;
        let id = sys::gguf_find_key(base_meta, key.as_ptr());
        let arch = if id >= 0 {
            std::ffi::CStr::from_ptr(sys::gguf_get_val_str(base_meta, id)).to_string_lossy().into_owned()
        } else {
            free();
            return Err("the base model names no architecture".into());
        };
        let mut work = Vec::new();
        let mut t = sys::ggml_get_first_tensor(tuned_tensors);
        while !t.is_null() {
            let name = std::ffi::CStr::from_ptr(sys::ggml_get_name(t)).to_string_lossy().into_owned();
            if adaptable(&name, sys::ggml_n_dims(t)) {
                work.push((name, t));
            }
            t = sys::ggml_get_next_tensor(tuned_tensors, t);
        }
        let mut out = Vec::new();
        for (done, (name, t)) in work.iter().enumerate() {
            progress(done, work.len());
            let name_c = cstring(name)?;
            let b = sys::ggml_get_tensor(base_tensors, name_c.as_ptr());
            let ok = |x: *mut sys::ggml_tensor| {
                (*x).type_ == sys::GGML_TYPE_F32 && sys::ggml_is_contiguous(x) && (*x).ne[2] == 1 && (*x).ne[3] == 1
            };
            if b.is_null() || !ok(b) || !ok(*t) || (*b).ne != (**t).ne {
                free();
                return Err(format!("{name} is not an F32 matrix of the same shape in both models"));
            }
            let (n_in, n_out) = ((**t).ne[0] as usize, (**t).ne[1] as usize);
            let tuned_w = std::slice::from_raw_parts((**t).data as *const f32, n_in * n_out);
            let base_w = std::slice::from_raw_parts((*b).data as *const f32, n_in * n_out);
            let delta: Vec<f32> = tuned_w.iter().zip(base_w).map(|(x, y)| x - y).collect();
            if delta.iter().all(|d| *d == 0.0) {
                continue;
            }
            match factor(name, &delta, n_in, n_out, max_rank) {
                Ok(f) => out.push(f),
                Err(e) => {
                    free();
                    return Err(e);
                }
            }
        }
        progress(work.len(), work.len());
        free();
        Ok((arch, out))
    }
}

/// The tensor type of an adapter matrix whose rows have `row` elements: Q8_0 where the row is whole blocks of
/// 32 (half the bytes of F16, and less to read per token), F16 otherwise.
fn matrix_type(row: usize) -> sys::ggml_type {
    if row.is_multiple_of(32) {
        sys::GGML_TYPE_Q8_0
    } else {
        sys::GGML_TYPE_F16
    }
}

/// Writes the rank-`rank` adapter (each weight's first `rank` factors; Q8_0 or F16, see [`matrix_type`]) as a
/// GGUF file llama.cpp loads with `llama_adapter_lora_init`: `general.type = adapter`, `adapter.type = lora`,
/// alpha = rank (scale 1), tensors `<name>.lora_a` (ne = [n_in, r]) and `<name>.lora_b` (ne = [r, n_out]).
/// Returns the file's size.
pub(super) fn write_adapter(path: &Path, arch: &str, factors: &[Factors], rank: usize) -> Result<u64, String> {
    let path_c = cstring(&path.to_string_lossy())?;
    // SAFETY: the ggml context has room for every tensor created in it (their bytes plus an overhead each, plus
    // slack); each tensor's data is written by ggml_quantize_chunk / ggml_fp32_to_fp16_row for exactly its
    // rows × row length, from a source of that many floats; contexts are freed once.
    unsafe {
        let bytes: usize = factors
            .iter()
            .map(|f| {
                let r = f.rank.min(rank);
                sys::ggml_row_size(matrix_type(f.n_in), f.n_in as i64) * r
                    + sys::ggml_row_size(matrix_type(r), r as i64) * f.n_out
            })
            .sum();
        let params = sys::ggml_init_params {
            mem_size: bytes + (2 * factors.len() + 8) * sys::ggml_tensor_overhead() + (1 << 20),
            mem_buffer: std::ptr::null_mut(),
            no_alloc: false,
        };
        let ctx = sys::ggml_init(params);
        if ctx.is_null() {
            return Err("cannot allocate the adapter's tensors".into());
        }
        let gguf = sys::gguf_init_empty();
        let set_str = |k: &str, v: &str| -> Result<(), String> {
            let (k, v) = (cstring(k)?, cstring(v)?);
            sys::gguf_set_val_str(gguf, k.as_ptr(), v.as_ptr());
            Ok(())
        };
        // A row-major `rows × row` matrix of floats into a new tensor named `name`.
        let matrix = |name: &str, src: &[f32], row: usize, rows: usize| -> Result<*mut sys::ggml_tensor, String> {
            let ty = matrix_type(row);
            let t = sys::ggml_new_tensor_2d(ctx, ty, row as i64, rows as i64);
            if t.is_null() {
                return Err("the adapter's tensors do not fit".to_owned());
            }
            let name = cstring(name)?;
            sys::ggml_set_name(t, name.as_ptr());
            if ty == sys::GGML_TYPE_F16 {
                sys::ggml_fp32_to_fp16_row(src.as_ptr(), (*t).data as *mut sys::ggml_fp16_t, (row * rows) as i64);
            } else {
                sys::ggml_quantize_chunk(ty, src.as_ptr(), (*t).data, 0, rows as i64, row as i64, std::ptr::null());
            }
            Ok(t)
        };
        let result = (|| {
            set_str("general.architecture", arch)?;
            set_str("general.type", "adapter")?;
            set_str("general.name", "slm-agents fine-tune")?;
            set_str("adapter.type", "lora")?;
            let alpha = cstring("adapter.lora.alpha")?;
            sys::gguf_set_val_f32(gguf, alpha.as_ptr(), rank as f32);
            for f in factors {
                let r = f.rank.min(rank);
                // A's first r rows are contiguous; B's first r columns are gathered row by row.
                let a = matrix(&format!("{}.lora_a", f.name), &f.a[..r * f.n_in], f.n_in, r)?;
                let b_cols: Vec<f32> =
                    (0..f.n_out).flat_map(|o| f.b[o * f.rank..o * f.rank + r].iter().copied()).collect();
                let b = matrix(&format!("{}.lora_b", f.name), &b_cols, r, f.n_out)?;
                sys::gguf_add_tensor(gguf, a);
                sys::gguf_add_tensor(gguf, b);
            }
            if sys::gguf_write_to_file(gguf, path_c.as_ptr(), false) {
                Ok(())
            } else {
                Err(format!("cannot write {}", path.display()))
            }
        })();
        sys::gguf_free(gguf);
        sys::ggml_free(ctx);
        result?;
    }
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_rebuild_a_low_rank_difference() {
        // A rank-2 difference of a 6 × 4 matrix (n_out = 6, n_in = 4), row-major.
        let (n_in, n_out) = (4, 6);
        let u = [[1.0f32, 0.5], [0.0, 1.0], [2.0, -1.0], [0.5, 0.5], [-1.0, 0.0], [0.0, 2.0]];
        let v = [[1.0f32, 0.0, -1.0, 2.0], [0.5, 1.0, 0.0, -0.5]];
        let delta: Vec<f32> =
            (0..n_out).flat_map(|o| (0..n_in).map(move |i| u[o][0] * v[0][i] + u[o][1] * v[1][i])).collect();
        let f = factor("blk.0.attn_q.weight", &delta, n_in, n_out, 3).unwrap();
        assert_eq!(f.rank, 3);
        let rebuilt = |r: usize| -> Vec<f32> {
            (0..n_out)
                .flat_map(|o| {
                    let f = &f;
                    (0..n_in).map(move |i| (0..r).map(|j| f.b[o * f.rank + j] * f.a[j * n_in + i]).sum())
                })
                .collect()
        };
        for (x, y) in rebuilt(2).iter().zip(&delta) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // Rank 2 keeps all of it; rank 1 does not.
        let err1: f32 = rebuilt(1).iter().zip(&delta).map(|(x, y)| (x - y).powi(2)).sum();
        assert!(err1 > 1e-2);
        let fs = [f];
        assert!(kept_share(&fs, 2) > 0.9999 && kept_share(&fs, 1) < 0.999);
    }

    #[test]
    fn only_block_matrices_are_adapted() {
        assert!(adaptable("blk.0.attn_q.weight", 2));
        assert!(!adaptable("blk.0.attn_norm.weight", 1));
        assert!(!adaptable("token_embd.weight", 2));
    }
}
