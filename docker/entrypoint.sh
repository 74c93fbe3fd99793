#!/bin/sh
# The emoflow image's entry point. For the worker role (EMOFLOW_WORKSPACE set) it makes the
# workspace on first start: a git + DVC checkout of the project that the retrain flow runs in,
# with the DVC remote on the stack's object store. Then it runs the given command.
set -eu
ws="${EMOFLOW_WORKSPACE:-}"
if [ -n "$ws" ] && [ ! -e "$ws/dvc.yaml" ]; then
    echo "emoflow: making the workspace $ws from the image's project files" >&2
    mkdir -p "$ws"
    cp -R /app/. "$ws/"
    cd "$ws"
    git init -q -b main
    git config user.email "worker@emoflow.local"
    git config user.name "emoflow worker"
    [ -d .dvc ] || dvc init -q
    if [ -n "${EMOFLOW_DVC_REMOTE:-}" ]; then
        dvc remote add -f -d stack "$EMOFLOW_DVC_REMOTE"
        [ -z "${AWS_ENDPOINT_URL:-}" ] || dvc remote modify stack endpointurl "$AWS_ENDPOINT_URL"
    fi
    git add -A >/dev/null
    git commit -q -m "workspace from the emoflow image" || true
fi
[ -z "$ws" ] || cd "$ws"
exec "$@"
