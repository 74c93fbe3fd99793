#!/bin/sh
# Wait for Postgres and the object store, make the buckets (MLflow's artifacts, the DVC remote,
# the service's capture store), then serve MLflow: Postgres backend, S3 artifacts proxied
# through the server.
set -eu
wait_for() {  # host port
    python - "$1" "$2" <<'PY'
import socket, sys, time
host, port, end = sys.argv[1], int(sys.argv[2]), time.time() + 180
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        break
    except OSError:
        if time.time() > end:
            sys.exit(f"mlflow: {host}:{port} did not answer in 180 s")
        time.sleep(1)
PY
}
wait_for "${POSTGRES_HOST:-postgres}" 5432
wait_for "${S3_HOST:-objectstore}" 8333
python - <<'PY'
import os, time
import boto3
from botocore.exceptions import ClientError, EndpointConnectionError
s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
for bucket in (os.environ.get("MLFLOW_BUCKET", "mlflow"), os.environ.get("DVC_BUCKET", "dvc"),
               os.environ.get("CAPTURE_BUCKET", "capture")):
    for attempt in range(30):
        try:
            s3.head_bucket(Bucket=bucket)
            break
        except ClientError:
            s3.create_bucket(Bucket=bucket)
            print(f"mlflow: made bucket {bucket}", flush=True)
            break
        except EndpointConnectionError:
            time.sleep(1)
PY
exec mlflow server --host 0.0.0.0 --port 5000 \
    --backend-store-uri "postgresql+psycopg2://${MLFLOW_DB_USER:-mlflow}:${MLFLOW_DB_PASSWORD}@${POSTGRES_HOST:-postgres}:5432/mlflow" \
    --artifacts-destination "s3://${MLFLOW_BUCKET:-mlflow}" --serve-artifacts \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:5000,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
    --workers "${MLFLOW_WORKERS:-2}"
