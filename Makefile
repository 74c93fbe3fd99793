# Two commands for a fresh machine with Python 3.11: `make demo` and `make test`.
# Both create .venv on first use and reuse it while pyproject.toml and constraints.txt are unchanged.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# dvc.yaml's stage commands call `emoflow`: the venv's bin goes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
STAMP := $(VENV)/.emoflow-installed

.PHONY: install demo test test-all lint sheet clean-data label-env serve pipeline-up pipeline-down exp \
	stack-images stack-up stack-down stack-test

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,stack]'
	$(BIN)/python -m pip install --quiet --no-deps $$($(BIN)/python docker/requirements.py --no-deps)
	@touch $(STAMP)

install: $(STAMP)

# The labelling GUI (`emoflow mark`) needs OpenCV's GUI build, which installs the same cv2 package
# as the headless build the services use; so it gets its own small venv with only what `mark`
# imports (emoflow itself without its deps). See docs/labelling.md.
LABEL_VENV ?= .venv-label
LABEL_STAMP := $(LABEL_VENV)/.emoflow-installed
LABEL_PKGS := opencv-python==5.0.0.93 av==18.1.0 numpy==2.4.6 typer==0.29.1 pydantic==2.14.4 \
	pyyaml==6.0.3

$(LABEL_STAMP): pyproject.toml
	@test -x $(LABEL_VENV)/bin/python || $(PYTHON) -m venv $(LABEL_VENV)
	@echo '*' > $(LABEL_VENV)/.gitignore
	$(LABEL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LABEL_VENV)/bin/python -m pip install --quiet $(LABEL_PKGS)
	$(LABEL_VENV)/bin/python -m pip install --quiet --no-deps -e .
	@touch $(LABEL_STAMP)

label-env: $(LABEL_STAMP)  ## .venv-label: OpenCV's GUI build for `emoflow mark`

demo: install           ## generate the sample recordings and reproduce every stage
	$(BIN)/dvc repro

test: install lint      ## fast tests (slow, service and gpu tests excluded)
	$(BIN)/pytest

test-all: install lint  ## everything this machine can run but the stack (CI runs these, then the stack)
	$(BIN)/pytest -m "not gpu and not stack"

# The compose stack (docs/deploy.md). With Docker: `docker compose -f docker/compose.yaml
# --env-file docker/.env --profile cpu up -d --build`. Without a registry (Podman, as root):
STACK := $(BIN)/podman-compose -f docker/compose.yaml --env-file docker/.env --profile cpu
stack-images: install   ## build every image with Podman from Debian's packages (no registry)
	CONTAINERS_CONF=$(abspath docker/ci/containers.conf) bash docker/ci/build-images.sh

stack-up: install       ## the CPU profile under Podman (docker/.env from docker/.env.example)
	@test -f docker/.env || { echo "copy docker/.env.example to docker/.env and set its secrets"; exit 2; }
	CONTAINERS_CONF=$(abspath docker/ci/containers.conf) $(STACK) up -d --no-build

stack-down:
	CONTAINERS_CONF=$(abspath docker/ci/containers.conf) $(STACK) down -v -t 5

stack-test: stack-images ## the platform test through the stack (CI's last step)
	CONTAINERS_CONF=$(abspath docker/ci/containers.conf) $(BIN)/pytest -m stack tests/stack

lint: install
	$(BIN)/ruff check .

sheet: install          ## the README's contact sheet of one sample participant
	$(BIN)/emoflow contact-sheet --participant p001 --out docs/img/sample_contact_sheet.png

# The retrain flow in a local Prefect (docs/pipelines.md): server with embedded sqlite on
# 127.0.0.1:4200 (state and logs in .prefect/), the process work pool, the weekly `retrain`
# deployment of pipelines/prefect.yaml and a worker; pipeline-down stops both by their PIDs.
pipeline-up: install    ## Prefect server + worker + retrain deployment; UI at http://127.0.0.1:4200
	$(BIN)/python -m emoflow.orchestration.local up

pipeline-down:          ## stop the Prefect server and worker that pipeline-up started
	$(BIN)/python -m emoflow.orchestration.local down

# dvc.yaml's stage commands call `emoflow`: run experiments through make, whose PATH has the venv
# (where emoflow is installed globally, e.g. in a container, plain `dvc exp run` works as well).
exp: install            ## a DVC experiment: make exp ARGS="-S sample.participants=10 -S ..."
	$(BIN)/dvc exp run $(ARGS)

# The emotion service on http://127.0.0.1:3000 with the model `make demo` trained (offline; see
# docs/service.md for the registry's @champion, the API key and the limits).
EMOFLOW_MODEL_DIR ?= $(abspath models/fan)
serve: install          ## BentoML service of models/fan (EMOFLOW_API_KEY=... to require a key)
	cd services/emotion && EMOFLOW_MODEL_DIR=$(EMOFLOW_MODEL_DIR) $(abspath $(BIN))/bentoml serve service:Emotion --host 127.0.0.1 --port 3000

clean-data:
	rm -rf data/ .dvc/tmp/runs
