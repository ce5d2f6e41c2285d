#!/usr/bin/env bash
# Builds the API docs the way docs.rs does: DOCS_RS=1, offline, the registry sources read-only, and the
# features, default-features and rustdoc arguments of [package.metadata.docs.rs] as published in Cargo.toml.
#
# The registry sources are made read-only with a private read-only bind mount (root in a mount namespace:
# `unshare -m`), because root ignores file permission bits. Where that is not possible the script says so and
# builds with writable sources: the rest of the conditions still hold.
set -euo pipefail
cd "$(dirname "$0")/.."

args=$(python3 - <<'PY'
import shlex, tomllib
meta = tomllib.load(open("Cargo.toml", "rb")).get("package", {}).get("metadata", {}).get("docs", {}).get("rs", {})
out = []
if meta.get("all-features"):
    out.append("--all-features")
if meta.get("no-default-features"):
    out.append("--no-default-features")
if meta.get("features"):
    out += ["--features", ",".join(meta["features"])]
print(" ".join(shlex.quote(a) for a in out))
print(" ".join(meta.get("rustdoc-args", [])))
PY
)
cargo_args=$(printf '%s\n' "$args" | sed -n 1p)
rustdoc_args=$(printf '%s\n' "$args" | sed -n 2p)
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"

# Everything the offline build needs must be downloaded first (docs.rs has it all locally).
cargo fetch --quiet

# shellcheck disable=SC2086
build="DOCS_RS=1 RUSTC_BOOTSTRAP=1 RUSTDOCFLAGS='$rustdoc_args -D warnings' \
    cargo doc --offline --no-deps --target-dir target/docs-rs $cargo_args"
echo "docs-rs: $build" >&2
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null \
    && unshare -m true 2>/dev/null; then
    unshare -m sh -c "mount --bind '$registry' '$registry' && mount -o remount,bind,ro '$registry' \
        && ! touch '$registry/.docs-rs-probe' 2>/dev/null && $build"
else
    echo "docs-rs: cannot make $registry read-only here (needs root and unshare); building with it writable" >&2
    sh -c "$build"
fi
