# syntax=docker/dockerfile:1.7
# CI's stand-in for the stack's object store: no image registry is reachable on the CI machines,
# so SeaweedFS's image cannot be pulled there. moto's S3 server (PyPI) speaks the same S3 API that
# MLflow (boto3) and DVC (s3fs) call; it keeps objects in memory, which is enough for one CI run
# and nothing more: real deployments use compose's default (SeaweedFS) or a managed store.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv /opt/moto && /opt/moto/bin/pip install 'moto[server]==5.2.5'
RUN groupadd --gid 10001 s3 && useradd --uid 10001 --gid s3 s3
USER 10001:10001
EXPOSE 8333
HEALTHCHECK --interval=5s --timeout=3s --retries=10 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8333/moto-api/', timeout=2)"]
ENTRYPOINT ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "8333"]
