#!/bin/sh
# The stack's object store: SeaweedFS's master, volume server, filer and S3 gateway in one process
# over one data directory (/data, the volume). Settings come from the environment, never the image:
#   S3_ACCESS_KEY, S3_SECRET_KEY   the one S3 identity (admin: MLflow makes the buckets with it)
#   SEAWEEDFS_DIR                  data directory (default /data)
#   SEAWEEDFS_VOLUME_SIZE_MB       size of each volume file (default 256)
# Arguments are passed on to `weed server` (`weed help server`).
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}" "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
# The identity file is written at each start, outside the image and the data volume, readable by
# this user alone; JSON-escaped, so any character may appear in the secret.
config="${TMPDIR:-/tmp}/seaweedfs-s3.json"
umask 077
python3 - "$config" <<'PY'
import json, os, sys
identity = {"name": "emoflow",
            "credentials": [{"accessKey": os.environ["S3_ACCESS_KEY"],
                             "secretKey": os.environ["S3_SECRET_KEY"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
with open(sys.argv[1], "w") as f:
    json.dump({"identities": [identity]}, f)
PY
# - Master, volume server and filer talk over loopback and listen there alone: only S3 (:8333)
#   faces the network, and a new container address after a restart changes nothing.
# - Each bucket is a collection that grows 7 volumes at once, and -volume.max=0 allows as many
#   volumes as the free disk holds at their full size: with 1 GiB volumes the stack's three buckets
#   wanted ~21 GiB free and failed ("no free volumes left") on a disk with 19 GiB; 256 MiB volumes
#   need ~5.4 GiB (SeaweedFS's default is 30 GiB).
# - A stop takes ~17 s (the filer's gRPC drain): compose and Kubernetes give it 30 s.
# - Logs go to stderr only (the container's log), not to files in /tmp.
# - No telemetry; the Iceberg and Lance catalogs stay off. The log's "no signing key found for
#   STS service" concerns temporary credentials (STS), which the stack does not use.
exec weed -logtostderr=true server -dir="${SEAWEEDFS_DIR:-/data}" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.ip.bind=0.0.0.0 \
    -master.volumeSizeLimitMB="${SEAWEEDFS_VOLUME_SIZE_MB:-256}" -volume.max=0 \
    -volume.preStopSeconds=1 -master.telemetry=false \
    -s3 -s3.port=8333 -s3.config="$config" -s3.port.iceberg=0 -s3.port.lance=0 \
    "$@"
