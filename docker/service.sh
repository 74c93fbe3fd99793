#!/bin/sh
# The service role: wait until the model it serves exists (EMOFLOW_MODEL_URI: the registry alias
# is set by the first retrain run; or EMOFLOW_MODEL_DIR), then serve it with BentoML. Once up,
# the service itself follows the alias (docs/service.md: reloading).
set -eu
if [ -n "${EMOFLOW_MODEL_URI:-}" ]; then
    python - <<'PY'
import logging, os, sys, time
logging.disable(logging.WARNING)
from emoflow.tracking.registry import get_version
uri, waited = os.environ["EMOFLOW_MODEL_URI"], 0
while True:
    try:
        mv = get_version(uri)
        print(f"service: {uri} is version {mv.version}", flush=True)
        break
    except Exception as exc:  # MLflow not up yet, or no such alias yet
        if waited % 60 == 0:
            print(f"service: waiting for {uri} ({type(exc).__name__}: {exc})"[:300], flush=True)
        time.sleep(5)
        waited += 5
PY
fi
cd /app/services/emotion
exec bentoml serve service:Emotion --host 0.0.0.0 --port "${SERVICE_PORT:-3000}"
