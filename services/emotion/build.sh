#!/usr/bin/env bash
# Build the emotion service's Bento: emoflow's wheel into wheels/, then `bentoml build` with the
# model the EMOFLOW_* settings name imported into BentoML's store and packed into the Bento.
#   EMOFLOW_MODEL_DIR=models/fan services/emotion/build.sh                 # CPU image
#   EMOFLOW_MODEL_DIR=models/fan services/emotion/build.sh --arg variant=cuda   # CUDA image
# Extra arguments go to `bentoml build` (e.g. --version, --label, -o tag).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(dirname "$(command -v "${PYTHON:-python}")")"
if [ -x "$root/.venv/bin/python" ]; then bin="$root/.venv/bin"; fi
# EMOFLOW_MODEL_DIR relative to where the script was called from, as a user would expect.
if [ -n "${EMOFLOW_MODEL_DIR:-}" ]; then
  EMOFLOW_MODEL_DIR="$(cd "$EMOFLOW_MODEL_DIR" && pwd)"; export EMOFLOW_MODEL_DIR
fi
rm -rf "$here/wheels"
"$bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$here/wheels" "$root" >&2
cd "$here"
# The release the settings name, imported into BentoML's store: the model the Bento carries.
model="$("$bin/python" -m emoserve.source)"
exec "$bin/bentoml" build --arg "model=$model" "$@"
