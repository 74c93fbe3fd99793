#!/bin/sh
# The worker role: wait for the Prefect API, (re)make the process work pool and the retrain
# deployment of docker/prefect.yaml, then run the worker in the workspace (EMOFLOW_WORKSPACE).
set -eu
python - <<'PY'
import os, sys, time, urllib.request
url, end = os.environ["PREFECT_API_URL"].rstrip("/") + "/health", time.time() + 300
while True:
    try:
        urllib.request.urlopen(url, timeout=3).read()
        break
    except OSError:
        if time.time() > end:
            sys.exit(f"worker: {url} did not answer in 300 s")
        time.sleep(2)
PY
prefect work-pool create "${EMOFLOW_POOL:-emoflow-stack}" --type process --overwrite
prefect deploy --prefect-file docker/prefect.yaml --all
exec prefect worker start --pool "${EMOFLOW_POOL:-emoflow-stack}" --type process --with-healthcheck
