#!/usr/bin/env python3
"""Writes small LoRA adapters for SmolLM2-135M, for the tests (the gguf package from PyPI, plus numpy).

    make_test_adapters.py BASE.gguf OUT_DIR

  OUT_DIR/smollm2-lora-zero.gguf   B matrices all zero: the model's output is identical to the base model's
  OUT_DIR/smollm2-lora-shift.gguf  non-zero B: the output differs
  OUT_DIR/smollm2-lora-corrupt.gguf  the shift adapter cut short: loading it must fail cleanly

Each adapter has rank 4 on attn_q and attn_v of every layer. In ggml order a weight is [in, out]; its
lora_a is [in, r] and lora_b is [r, out] (numpy shapes are the reverse).
"""
import os
import sys

import gguf
import numpy as np

RANK = 4
TARGETS = ("attn_q", "attn_v", "ffn_down")


def write(base: gguf.GGUFReader, path: str, scale_b: float, seed: int) -> None:
    arch = bytes(base.fields["general.architecture"].parts[-1]).decode()
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(RANK))
    for t in base.tensors:
        name = t.name
        if not name.endswith(".weight") or not any(f".{target}." in name for target in TARGETS):
            continue
        n_in, n_out = (int(d) for d in t.shape[:2])
        a = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(RANK, n_in)).astype(np.float32)
        b = (rng.normal(0.0, 1.0, size=(n_out, RANK)) * scale_b).astype(np.float32)
        w.add_tensor(name + ".lora_a", a)
        w.add_tensor(name + ".lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    base_path, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    base = gguf.GGUFReader(base_path)
    zero = os.path.join(out_dir, "smollm2-lora-zero.gguf")
    shift = os.path.join(out_dir, "smollm2-lora-shift.gguf")
    corrupt = os.path.join(out_dir, "smollm2-lora-corrupt.gguf")
    write(base, zero, 0.0, 1)
    write(base, shift, 0.5, 2)
    with open(shift, "rb") as f:
        data = f.read()
    with open(corrupt, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    for p in (zero, shift, corrupt):
        print(f"make-test-adapters: wrote {p} ({os.path.getsize(p)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
