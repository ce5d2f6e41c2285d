#!/usr/bin/env bash
# Makes the small LoRA test adapters for SmolLM2 (see make_test_adapters.py) under models/, with the `gguf`
# package from PyPI installed into models/.pydeps (not into the system Python). Idempotent.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
models="${SLM_MODELS_DIR:-$root/models}"
base="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
PYTHON=${PYTHON:-python3}
deps="$models/.pydeps"

[ -f "$base" ] || { echo "make-test-adapters: $base is missing: run scripts/fetch-models.sh" >&2; exit 1; }
stamp="$models/.adapters-v1"
if [ -f "$stamp" ] && [ -f "$models/smollm2-lora-zero.gguf" ] && [ -f "$models/smollm2-lora-shift.gguf" ] \
    && [ -f "$models/smollm2-lora-corrupt.gguf" ]; then
    echo "make-test-adapters: ok   adapters" >&2
    exit 0
fi
if ! PYTHONPATH="$deps" "$PYTHON" -c "import gguf, numpy" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --target "$deps" "gguf==0.19.0" "numpy>=1.26,<3"
fi
PYTHONPATH="$deps" "$PYTHON" "$root/scripts/make_test_adapters.py" "$base" "$models"
touch "$stamp"
