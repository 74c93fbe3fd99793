"""emoflow's emotion service: a video in, the emotion out (BentoML 1.4).

Two services composed with ``bentoml.depends``:

- ``emoflow`` (the entry point, several CPU workers): the API key and upload limits
  (``emoserve.guard``), checks of the upload, decoding and face alignment with the inference
  core and the preprocessing the served model was trained with;
- ``emoflow_model`` (one worker; ``resources={"gpu": 1}`` where a GPU exists): the model,
  behind a batchable API, so concurrent requests share one model call (adaptive batching).

The public routes are a FastAPI app mounted on the entry service (BentoML's documented way to
add routes): it parses uploads without writing the client's file name anywhere, gives exact
OpenAPI for every response including the errors, and keeps every bad request a 4xx.
Settings come from ``EMOFLOW_*`` variables (``emoserve.settings``); see docs/service.md.
"""

from __future__ import annotations

import logging
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import aiohttp
import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from emoserve import metrics
from emoserve.api import (
    ERROR_RESPONSES,
    FEEDBACK_RESPONSES,
    Info,
    ModelInfo,
    faces_of_video,
    read_face_uploads,
)
from emoserve.backend import has_gpu
from emoserve.capture import Capture
from emoserve.errors import ErrorBody, Rejected
from emoserve.guard import Guard
from emoserve.packaging import BuildArgs, service_image
from emoserve.source import ModelHolder, release_or_exit, settings_or_exit
from emoserve.upload import saved_upload
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from emoflow.artifact import ModelSpec, read_spec
from emoflow.feedback.records import FeedbackIn, FeedbackRecord, new_prediction_id
from emoflow.inference import ClipResult, Predictor
from emoflow.inference.predictor import FoundFaces
from emoflow.media.video import Cancelled

log = logging.getLogger("emoflow.service")
# BentoML's server logging leaves the root logger at WARNING: emoflow's own INFO lines (the
# backend chosen and why, model imports and reloads) belong in the service's log.
logging.getLogger("emoflow").setLevel(logging.INFO)

FACES_FIELD = ("aligned face crops of one clip, in frame order: JPEG/PNG images or one zip of "
               "them (a face file of `emoflow faces`)")  # fmt: skip
OVERLOAD_RETRIES = 4
# Read at import (the decorators below take them); bad settings: one line and exit 2. Importing
# contacts no registry: the release is resolved when the server starts (the deployment hook,
# then each worker's model holder).
SETTINGS = settings_or_exit()
# `bentoml build --arg variant=cuda`: the Bento's image (emoserve.packaging); defaults serve as is.
# `--arg model=<tag>` (build.sh resolves the release and passes its tag): the model it carries.
BUILD = bentoml.use_arguments(BuildArgs)


@bentoml.service(name="emoflow_model", workers=1,
                 resources={"gpu": 1} if has_gpu() else {"cpu": "1"},
                 traffic={"timeout": 120})  # fmt: skip
class EmotionModel:
    """The model: clips of aligned face chips → clip results, batched across requests."""

    bento_model = bentoml.models.BentoModel(BUILD.model) if BUILD.model else None

    def __init__(self) -> None:
        self.holder: ModelHolder[Predictor] = ModelHolder(SETTINGS)
        release, predictor = self.holder.current()
        log.info("serving %s with backend %s: %s", release.tag, predictor.backend,
                 predictor.backend_reason)  # fmt: skip

    @bentoml.api(batchable=SETTINGS.batching, max_batch_size=SETTINGS.max_batch_size,
                 max_latency_ms=SETTINGS.max_latency_ms)  # fmt: skip
    def classify(self, clips: list[np.ndarray]) -> list[ClipResult]:
        """One result per clip (an array of its chips); one model call per batch."""
        _, predictor = self.holder.current()
        return predictor.predict_face_batches([list(c) for c in clips])

    @bentoml.api
    def info(self) -> ModelInfo:
        release, predictor = self.holder.current()
        return ModelInfo(name=release.name, version=release.version, alias=release.alias,
                         tag=release.tag, backend=predictor.backend,
                         backend_reason=predictor.backend_reason,
                         loaded_at=self.holder.loaded_at)  # fmt: skip

    @bentoml.api
    def refresh(self) -> bool:
        """Check the alias now (the entry service asks when its faces' model differs)."""
        return self.holder.refresh()


app = FastAPI(title="emoflow emotion service", version="1",
              description="A video in, the emotion out. Authorization: Bearer <EMOFLOW_API_KEY>.")


@app.exception_handler(Rejected)
async def _rejected(_: Request, exc: Rejected) -> JSONResponse:
    metrics.rejected(exc.reason)
    return JSONResponse(exc.body().model_dump(), status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    metrics.rejected("invalid_request")
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    body = ErrorBody(error=f"{where}: {first.get('msg', 'invalid request')}",
                     reason="invalid_request")  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=400)


@app.exception_handler(Exception)
async def _internal(_: Request, exc: Exception) -> JSONResponse:
    # A fault of ours still answers in the documented shape, and is counted.
    log.error("request failed", exc_info=exc)
    metrics.rejected("internal")
    body = ErrorBody(error=f"internal error ({type(exc).__name__}); the service log has the "
                     "details", reason="internal")  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=500)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Starlette's own refusals (e.g. "Invalid multipart data." on a malformed body) get the same
    # documented body as every other refusal, not FastAPI's {"detail": ...}.
    metrics.rejected("invalid_request")
    body = ErrorBody(error=str(exc.detail), reason="invalid_request")
    return JSONResponse(body.model_dump(), status_code=exc.status_code, headers=exc.headers)


@bentoml.service(name="emoflow", workers=SETTINGS.cpu_workers,
                 traffic={"timeout": SETTINGS.timeout_s + 30},
                 image=service_image(BUILD))  # fmt: skip
@bentoml.asgi_app(app, path="/")
class Emotion:
    """The entry point: uploads, checks, faces; the model service scores the chips."""

    model = bentoml.depends(EmotionModel)

    @bentoml.on_deployment
    def _release() -> None:
        """Once, before any worker starts: the release resolved (and imported into the store),
        or the one line saying why there is none and exit 2."""
        release_or_exit(SETTINGS)

    def __init__(self) -> None:
        if SETTINGS.api_key is None:
            log.warning("EMOFLOW_API_KEY is not set: the API is open to anyone who can reach it")
        # Faces need only the model's spec (its recorded preprocessing), not its weights.
        self.holder: ModelHolder[ModelSpec] = ModelHolder(
            SETTINGS, make=lambda r: read_spec(r.folder), follow=False)
        self._cpu = anyio.CapacityLimiter(1)  # one decode + faces job per worker process
        self.capture = Capture(SETTINGS)

    async def _spec_for(self, version: str) -> ModelSpec:
        """The spec of ``version`` (what the model service just answered with)."""
        release, spec = self.holder.current()
        if release.version != version:
            await anyio.to_thread.run_sync(self.holder.refresh)
            release, spec = self.holder.current()
        return spec

    async def _faces(self, spec: ModelSpec, path: Path, request: Request) -> FoundFaces:
        """Faces in a worker thread that stops when the client leaves or the time is up."""
        gone = threading.Event()
        deadline = time.monotonic() + SETTINGS.timeout_s

        def stop() -> bool:
            return gone.is_set() or time.monotonic() > deadline

        async def watch() -> None:  # the body is read: the next message is the disconnect
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:  # outcomes leave the group as they are (anyio would wrap them in a group)
                outcome: FoundFaces | BaseException = await anyio.to_thread.run_sync(
                    faces_of_video, spec, path, SETTINGS.max_duration_s, SETTINGS.max_pixels,
                    stop, limiter=self._cpu)  # fmt: skip
            except Exception as exc:
                outcome = exc
            tg.cancel_scope.cancel()
        if isinstance(outcome, Cancelled):
            if gone.is_set():
                log.info("predict: the client left; its clip's analysis stopped")
            raise Rejected(504, "timeout", f"the clip took longer than the limit of "
                           f"{SETTINGS.timeout_s:g} s to analyse") from outcome  # fmt: skip
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _classify(self, chips: list[np.ndarray]) -> ClipResult:
        clip = np.stack(chips)
        for attempt in range(OVERLOAD_RETRIES + 1):
            try:
                out = await self.model.to_async.classify([clip])
                return ClipResult.model_validate(_plain(out[0]))
            except (BentoMLException, aiohttp.ClientConnectionError) as exc:
                # The batcher sheds requests it cannot answer within max_latency_ms ("process
                # is overloaded", 503), and a pooled connection the model server closed while
                # idle fails once: wait a little and call again (it is idempotent), then 503.
                if (isinstance(exc, BentoMLException)
                        and exc.error_code != HTTPStatus.SERVICE_UNAVAILABLE):  # fmt: skip
                    raise
                if attempt == OVERLOAD_RETRIES:
                    raise Rejected(503, "overloaded", "the model service is overloaded; "
                                   "retry later") from exc  # fmt: skip
                await anyio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    @app.post("/predict", response_model=ClipResult, responses=ERROR_RESPONSES)
    async def predict(self, request: Request, video: Annotated[UploadFile, File(
            description="a clip: mp4, mov, avi, mkv or webm")],
            keep: Annotated[bool, Form(description="ask the service to keep this clip for "
                                       "labelling (with EMOFLOW_CAPTURE=clips)")] = False,
            ) -> ClipResult:  # fmt: skip
        """Emotion of a video clip: label, probabilities, per-frame face box and weight."""
        t0 = time.perf_counter()
        prediction_id = new_prediction_id()
        async with saved_upload(video, SETTINGS.max_upload_bytes) as path:
            t_up = time.perf_counter()
            _, spec = self.holder.current()
            found = await self._faces(spec, path, request)
            scored = await self._classify(found.chips)
            if scored.model.version != self.holder.current()[0].version:
                # The model service moved to another version meanwhile: redo the faces with
                # that version's preprocessing, so chips and model always match.
                found = await self._faces(await self._spec_for(scored.model.version), path,
                                          request)  # fmt: skip
                scored = await self._classify(found.chips)
            result = found.result(scored)
            result.prediction_id = prediction_id
            await anyio.to_thread.run_sync(self.capture.keep, prediction_id, "predict", result,
                                           path, keep)  # fmt: skip
        total = time.perf_counter() - t0
        result.timings_ms.total = 1e3 * total
        _observe("predict", result, upload=t_up - t0, total=total)
        return result

    @app.post("/predict_faces", response_model=ClipResult, responses=ERROR_RESPONSES)
    async def predict_faces(self, faces: Annotated[list[UploadFile], File(
            description=FACES_FIELD)]) -> ClipResult:  # fmt: skip
        """Emotion of a clip from face crops the client aligned itself (no boxes)."""
        t0 = time.perf_counter()
        _, spec = self.holder.current()
        chips = await read_face_uploads(faces, spec, SETTINGS.max_faces,
                                        SETTINGS.max_upload_bytes)  # fmt: skip
        result = await self._classify(chips)  # one size: the model's input size
        result.prediction_id = new_prediction_id()
        self.capture.keep(result.prediction_id, "predict_faces", result)
        total = time.perf_counter() - t0
        result.timings_ms.total = 1e3 * total
        _observe("predict_faces", result, total=total)
        return result

    @app.post("/feedback", response_model=FeedbackRecord, responses=FEEDBACK_RESPONSES)
    async def feedback(self, given: FeedbackIn) -> FeedbackRecord:
        """A downstream system's label for a kept prediction (needs EMOFLOW_CAPTURE)."""
        _, spec = self.holder.current()
        fb = await anyio.to_thread.run_sync(self.capture.feedback, given, spec.classes)
        log.info("feedback: %s labelled %s (served %s)", fb.prediction_id, fb.label,
                 fb.served_label)  # fmt: skip
        return fb

    @app.get("/info", response_model=Info, responses={401: ERROR_RESPONSES[401]})
    async def info(self) -> Info:
        """The served model (version, alias, backend and why), its classes and preprocessing."""
        model = ModelInfo.model_validate(_plain(await self.model.to_async.info()))
        spec = await self._spec_for(model.version)
        source = SETTINGS.model_uri or (str(SETTINGS.model_dir) if SETTINGS.model_dir
                                        else model.tag)  # fmt: skip
        return Info(model=model, arch=spec.arch, classes=spec.classes,
                    image_size=spec.image_size, grayscale=spec.grayscale,
                    preprocessing=spec.preprocessing.model_dump(), source=source,
                    reload_s=SETTINGS.reload_s, batching=SETTINGS.batching,
                    limits={"max_upload_mb": SETTINGS.max_upload_mb,
                            "max_duration_s": SETTINGS.max_duration_s,
                            "max_megapixels": SETTINGS.max_megapixels,
                            "max_faces": SETTINGS.max_faces,
                            "timeout_s": SETTINGS.timeout_s})  # fmt: skip


Emotion.add_asgi_middleware(Guard, api_key=SETTINGS.api_key,
                            max_upload_bytes=SETTINGS.max_upload_bytes)  # fmt: skip


def _observe(endpoint: str, result: ClipResult, total: float, upload: float | None = None) -> None:
    log.info("%s: %s %s %.2f (%s v%s)", endpoint, result.prediction_id, result.label,
             result.confidence, result.model.name, result.model.version)  # fmt: skip
    metrics.predicted(result.label, endpoint, result.model.version or "", result.confidence)
    t = result.timings_ms
    for stage, ms in (("decode", t.decode), ("faces", t.faces), ("expression", t.expression),
                      ("model", t.model)):  # fmt: skip
        if ms:
            metrics.stage(stage, endpoint, ms / 1e3)
    if upload is not None:
        metrics.stage("upload", endpoint, upload)
    metrics.stage("total", endpoint, total)


def _plain(value: object) -> object:
    """A proxy call's answer as plain data (a dict over HTTP, a model in process)."""
    return value.model_dump() if hasattr(value, "model_dump") else value
