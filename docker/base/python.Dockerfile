# A Python 3.11 base made from Debian's own packages, for machines that reach Debian's mirrors but
# no image registry (CI here, air-gapped sites). Where a registry is reachable, the images use the
# official python:3.11-slim-bookworm instead (the default of their PYTHON_IMAGE argument).
#   podman import rootfs.tar localhost/debian:base        # rootfs from `mmdebstrap --variant=minbase bookworm`
#   podman build -f docker/base/python.Dockerfile --build-arg BASE=localhost/debian:base -t localhost/python:3.11 .
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates curl \
    && ln -sf /usr/bin/python3 /usr/local/bin/python \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
