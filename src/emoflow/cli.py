"""The ``emoflow`` command: thin wrappers that parse arguments, load params and call a stage.

Heavy libraries (torch, mlflow, OpenCV, dlib, PyAV, ...) are imported inside the commands that
use them, after the arguments are checked: ``--help`` and a bad argument answer at once
(tests/unit/test_cli_imports.py keeps it so).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import typer

from emoflow.config import DEFAULT_PARAMS, load_params
from emoflow.errors import EmoflowError
from emoflow.inference.availability import BACKENDS, check_backend
from emoflow.layout import LAYOUT, fold_dir
from emoflow.media.formats import VIDEO_EXTS
from emoflow.models import registry

app = typer.Typer(
    help="emoflow: from raw lab recordings to a served facial-expression model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: Rich markup would eat every "[...]" in help texts ("[start, end]",
    # "[default: ...]") and label flags "<bool>".
    rich_markup_mode=None,
)

ParamsOption = typer.Option(DEFAULT_PARAMS, "--params", "-p", help="The params.yaml to read.")


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def sample(
    params: Path = ParamsOption,
    out: Path = typer.Option(LAYOUT.data, help="Data root: writes raw/, marks/, sample_truth/."),
) -> None:
    """Generate lab-like session recordings, their protocol and ground-truth marks."""
    from emoflow.sample.generate import generate_sample

    generate_sample(load_params(params).sample, out)


@app.command()
def segment(
    params: Path = ParamsOption,
    sessions: Path = typer.Option(
        LAYOUT.sessions, help="<participant>.mp4 recordings (.mov, .mkv, .avi; any case)."
    ),
    protocol: Path = typer.Option(LAYOUT.protocol, help="The stimulus log."),
    out: Path = typer.Option(LAYOUT.trials, help="Trial clips and trials.csv."),
) -> None:
    """Cut each session into one clip per trial, starting at its trigger beep."""
    from emoflow.ingest.segment import segment_sessions

    segment_sessions(sessions, protocol, out, load_params(params).segment)


@app.command()
def validate(
    params: Path = ParamsOption,
    trials: Path = typer.Option(LAYOUT.trials_csv, help="trials.csv; clips lie beside it."),
    marks: Path = typer.Option(LAYOUT.marks, help="One <trial_id>.txt per trial."),
    report: Path = typer.Option(LAYOUT.validation_report, help="Data Docs + summary.json."),
    out: Path = typer.Option(
        LAYOUT.validated, help="valid_trials.csv (gate passed) + quarantine.csv."
    ),
) -> None:
    """The great-expectations gate over trials and marks (docs/validation.md)."""
    from emoflow.validation.gate import validate as run_gate

    run_gate(load_params(params), trials, marks, report, out)


@app.command()
def trim(
    params: Path = ParamsOption,
    valid: Path = typer.Option(LAYOUT.valid_trials, help="Trials that passed validation."),
    trials: Path = typer.Option(LAYOUT.trials, help="The trial clips."),
    out: Path = typer.Option(LAYOUT.clips, help="Labelled clips and clips.csv."),
    reviewed: Path = typer.Option(
        None, help="Also the reviewed served clips: reviewed.csv + clips/ (emoflow review accept)."
    ),
) -> None:
    """Cut valid trials to their marked [start, end] into one folder per label."""
    from emoflow.ingest.trim import trim_trials

    trim_trials(valid, trials, out, load_params(params).trim, reviewed)


@app.command()
def faces(
    params: Path = ParamsOption,
    clips: Path = typer.Option(LAYOUT.clips_csv, help="Labelled clips."),
    out: Path = typer.Option(LAYOUT.faces, help="Face files and faces.csv."),
) -> None:
    """dlib detection and alignment, K-means frame selection: one face file per clip."""
    from emoflow.faces.stage import extract_faces

    extract_faces(clips, out, load_params(params).faces)


@app.command()
def split(
    params: Path = ParamsOption,
    faces: Path = typer.Option(LAYOUT.faces_csv, help="The faces table."),
    out: Path = typer.Option(LAYOUT.splits, help="Manifests (and folds/)."),
) -> None:
    """Train/val/test manifests (subject-independent by default) and k folds."""
    from emoflow.datasets.splits import make_splits

    make_splits(faces, out, load_params(params).split)


@app.command("import")
def import_dataset(
    root: Path = typer.Argument(None, help="Dataset root (none with --manifest)."),
    out: Path = typer.Option(..., "--out", help="Output, e.g. data/imported/<name>."),
    subject_regex: str = typer.Option(
        "",
        "--subject-regex",
        help="<root>/<label>/ trees: regex over a clip's path in its label folder; group 1 or "
        "(?P<subject>...) is the subject, e.g. '^(S\\d+)_'.",
    ),
    manifest: Path = typer.Option(
        None, "--manifest", help="CSV/TSV: path, label, subject[, start, end, peak, split]."
    ),
    name_pattern: str = typer.Option(
        "", "--name-pattern", help="Regex with (?P<label>...) and (?P<subject>...) over paths."
    ),
    layout: str = typer.Option("labels", "--layout", help="labels | ckplus (CK+ as shipped)."),
    label_map: Path = typer.Option(
        None, "--label-map", help="YAML: dataset label or code -> class, or drop."
    ),
    folds_from: Path = typer.Option(
        None, "--folds-from", help="The dataset's folds: CSV/TSV of fold + subject|trial_id|path."
    ),
    cropped: bool = typer.Option(False, "--cropped", help="Frames are already cropped faces."),
    crop_padding: str = typer.Option(
        "auto", "--crop-padding",
        help="--cropped: margin per side (fraction of the crop; auto = frame a tight crop like "
             "the aligned chips, 0 = as it is).",
    ),
    grayscale: bool = typer.Option(False, "--grayscale", help="Store faces as grayscale."),
    peak: str = typer.Option("none", "--peak", help="none | last (CK+: sequences end at apex)."),
    static: bool = typer.Option(
        False, "--static", help="Each image is a clip (sets faces.min_face_frames to 1)."
    ),
    folds: int = typer.Option(0, "--folds", help="Also write k subject-independent folds."),
    params: Path = ParamsOption,
    video_ext: str = typer.Option(",".join(VIDEO_EXTS), "--video-ext", help="Video extensions."),
    image_ext: str = typer.Option("png,jpg,jpeg,bmp,tiff", "--image-ext", help="Image types."),
) -> None:
    """A public labelled dataset (CK+, RAVDESS, AFEW, DFEW, FER...) → processed faces
    (docs/importer.md)."""
    from emoflow.datasets import importer

    opts = importer.ImportOptions(subject_regex, cropped, grayscale, importer.check_peak(peak),
                                  static, importer.parse_exts(video_ext),
                                  importer.parse_exts(image_ext), layout, name_pattern,
                                  importer.check_crop_padding(crop_padding))  # fmt: skip
    importer.import_dataset(root, out, load_params(params), opts, folds, manifest=manifest,
                            label_map=label_map, folds_from=folds_from, keep_rows=False)


MODELS = registry.NAMES  # the architectures (light: no torch until a command runs)
PROBE = "fan_probe"  # metrics/fan_probe.json, metrics/fan_probe_cv.json: `emoflow probe`


def _model(value: str) -> str:
    """``--model`` is checked here, before a command imports torch to find it unknown."""
    if value not in MODELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(MODELS)}")
    return value


ModelOption = typer.Option("fan", "--model", "-m", callback=_model, help=" | ".join(MODELS))
FacesDirOption = typer.Option(LAYOUT.faces, help="Face files (faces.csv).")
SplitsOption = typer.Option(LAYOUT.splits, help="Split manifests.")


@app.command()
def train(
    model: str = ModelOption,
    params: Path = ParamsOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
    fold: int | None = typer.Option(None, help="Train on fold k's manifests (folds/fold_k)."),
    out: Path | None = typer.Option(None, help="Model folder [default: models/<model>]."),
    processes: int | None = typer.Option(
        None, help="DDP processes [default: train.processes]; relaunches under torchrun."
    ),
) -> None:
    """Train FAN or Deep-Emotion (DDP, checkpoints every epoch, resumes), tracked in MLflow."""
    import subprocess

    from emoflow.training.distributed import torchrun_argv, under_torchrun

    p = load_params(params)
    n = processes or p.train.processes
    if n > 1 and not under_torchrun():
        # torchrun runs this training only, not the command that called it (e.g. crossval).
        argv = ["train", "--model", model, "--params", str(params), "--faces", str(faces),
                "--splits", str(splits), *(["--fold", str(fold)] if fold is not None else []),
                *(["--out", str(out)] if out is not None else [])]  # fmt: skip
        if rc := subprocess.run(torchrun_argv(n, argv), check=False).returncode:
            raise typer.Exit(rc)
        return
    from emoflow.training.run import run_training

    out = out or LAYOUT.model_dir(model, fold)
    run_training(model, p, faces, fold_dir(splits, fold), out)


@app.command()
def evaluate(
    model: str = ModelOption,
    params: Path = ParamsOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
    fold: int | None = typer.Option(None, help="Evaluate fold k's model on its test set."),
    model_dir: Path | None = typer.Option(None, help="[default: models/<model>]"),
    metrics: Path | None = typer.Option(None, help="[default: metrics/<model>.json]"),
    plots: Path | None = typer.Option(None, help="[default: plots/<model>]"),
) -> None:
    """Test-split metrics (WAR, UAR, macro-F1, per class), confusion matrix and curves."""
    from emoflow.training.evaluate import evaluate_model

    evaluate_model(
        model, load_params(params), faces, fold_dir(splits, fold),
        model_dir or LAYOUT.model_dir(model, fold), metrics or LAYOUT.metrics(model, fold),
        plots or LAYOUT.plots(model, fold),
    )  # fmt: skip


@app.command()
def crossval(
    model: str = ModelOption,
    params: Path = ParamsOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
) -> None:
    """Train and evaluate on every fold of split.folds; mean ± std in metrics/<model>_cv.json."""
    from emoflow.training.evaluate import REPORT, summarise

    p = load_params(params)
    if p.split.folds < 2:
        raise typer.BadParameter("split.folds is below 2: no folds to cross-validate")
    files = []
    for k in range(p.split.folds):
        train(model, params, faces, splits, k, None, None)
        evaluate(model, params, faces, splits, k, None, None, None)
        files.append(LAYOUT.plots(model, k) / REPORT)
    summarise(files, LAYOUT.cv_metrics(model))


@app.command()
def probe(
    params: Path = ParamsOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
    folds: bool = typer.Option(False, "--folds", help="Every fold of split.folds, as crossval."),
) -> None:
    """A logistic regression on FAN's frozen features: the floor its heads must beat.

    Writes metrics/fan_probe.json (the split) or, with --folds, metrics/fan_probe_cv.json."""
    import json

    from emoflow.fsio import atomic_write_text
    from emoflow.training.probe import fan_features, probe_folds, probe_split

    p = load_params(params)
    if folds and p.split.folds < 2:
        raise typer.BadParameter("split.folds is below 2: no folds to probe")
    features = fan_features(p, params)
    if folds:
        result = probe_folds(p, faces, [fold_dir(splits, k) for k in range(p.split.folds)],
                             features)  # fmt: skip
        out, war, uar = LAYOUT.cv_metrics(PROBE), result["war"], result["uar"]
        line = (f"WAR {war['mean']:.3f} ± {war['std']:.3f}, UAR {uar['mean']:.3f} ± "
                f"{uar['std']:.3f} over {result['folds']} folds")  # fmt: skip
    else:
        result = probe_split(p, faces, splits, features)
        out, t = LAYOUT.metrics(PROBE), result["test"]
        line = f"test WAR {t['war']:.3f}, UAR {t['uar']:.3f}, macro-F1 {t['macro_f1']:.3f}"
    atomic_write_text(out, json.dumps(result, indent=1))
    typer.echo(f"linear probe on FAN's features: {line} → {out}")


@app.command()
def register(
    model: str = ModelOption,
    params: Path = ParamsOption,
    model_dir: Path | None = typer.Option(None, help="[default: models/<model>]"),
    metrics: Path | None = typer.Option(None, help="Test metrics [default: metrics/<model>.json]"),
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
) -> None:
    """A new registry version of emoflow-<model> from the model folder; alias challenger."""
    from emoflow.release.registry import register as register_model

    done = register_model(model_dir or LAYOUT.model_dir(model), model, load_params(params),
                          metrics or LAYOUT.metrics(model), (faces, splits))  # fmt: skip
    typer.echo(f"registered {done.uri} ({', '.join(done.files)}) as @challenger")


def _margin(value: float) -> float:
    """``--min-delta`` is a finite number ≥ 0 (click's FloatRange lets NaN through)."""
    if not math.isfinite(value) or value < 0:
        raise typer.BadParameter(f"must be a finite number ≥ 0, got {value}")
    return value


BackendOption = typer.Option("auto", help=" | ".join(BACKENDS))


@app.command()
def promote(
    model: str = ModelOption,
    metric: str = typer.Option("uar", help="uar | war | macro_f1"),
    min_delta: float = typer.Option(
        0.005, callback=_margin, help="How much the challenger must win by (≥ 0)."
    ),
    require_promotion: bool = typer.Option(
        False, "--require-promotion", help="Exit 3 when the champion stays (for pipelines)."
    ),
    test: Path = typer.Option(LAYOUT.manifest("test"), help="Test manifest."),
    faces: Path = FacesDirOption,
    report: Path | None = typer.Option(
        None, help="The decision record [default: reports/promotion-<model>.json]."),
    backend: str = BackendOption,
    challenger: str | None = typer.Option(None, help="Version [default: @challenger]."),
) -> None:
    """Score @challenger and @champion on the test set now; move @champion only if it wins."""
    check_backend(backend)
    from emoflow.release.promote import exit_code
    from emoflow.release.promote import promote as run_promote

    decision = run_promote(model, metric, min_delta, test, faces, report, backend, challenger)
    typer.echo(decision.message)
    raise typer.Exit(exit_code(decision, require_promotion))


ModelDirOption = typer.Option(None, help="[default: models/<model>]")


@app.command()
def predict(
    videos: list[Path] = typer.Argument(..., help="Video files."),
    model_dir: Path | None = typer.Option(None, help="A model folder [default: models/fan]."),
    model_uri: str | None = typer.Option(
        None, help="A registered version instead, e.g. models:/emoflow-fan@champion."
    ),
    backend: str = BackendOption,
    as_json: bool = typer.Option(False, "--json", help="One JSON clip result per line."),
    workers: int = typer.Option(
        0, min=0, help="Processes for several files (0 = one per core; at most one per file)."
    ),
) -> None:
    """Emotion of each video: label, confidence, faces found; exit 2 if any file failed."""
    if model_dir is not None and model_uri is not None:
        raise typer.BadParameter("give --model-dir or --model-uri, not both")
    check_backend(backend)
    if model_uri:
        from emoflow.tracking.store import check_store

        check_store()  # an absent registry or a server down, before any model code loads
    from emoflow.inference import Predictor
    from emoflow.inference.files import predict_files

    folder = model_dir or LAYOUT.model_dir("fan")
    predictor = (Predictor.from_uri(model_uri, backend) if model_uri
                 else Predictor.from_dir(folder, backend))  # fmt: skip
    if predict_files(predictor, videos, as_json, workers=workers):
        raise typer.Exit(2)


@app.command()
def export(
    model: str = ModelOption,
    model_dir: Path | None = ModelDirOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
    # The range the exporter and FAN support (export.OPSETS; a test checks they agree), so a
    # wrong number is a usage error before torch loads; Deep-Emotion needs 16+ (checked there).
    opset: int = typer.Option(
        20, min=12, max=20, help="ONNX opset, 12-20 (Deep-Emotion's GridSample needs 16+)."
    ),
    tolerance: float = typer.Option(1e-4, help="Largest |Δp| allowed against PyTorch."),
) -> None:
    """ONNX with a dynamic clip batch, written only if it matches PyTorch on every test clip."""
    from emoflow.release.export import export_model

    export_model(model_dir or LAYOUT.model_dir(model), faces, splits, opset, tolerance,
                 arch=model)  # fmt: skip


@app.command()
def convert(
    model: str = ModelOption,
    model_dir: Path | None = ModelDirOption,
    faces: Path = FacesDirOption,
    splits: Path = SplitsOption,
    precision: str = typer.Option("fp16", help="fp16 | fp32"),
    min_batch: int = typer.Option(1, help="Smallest clip batch of the optimisation profile."),
    opt_batch: int = typer.Option(16, help="Clip batch TensorRT tunes for."),
    max_batch: int = typer.Option(64, help="Largest clip batch (at least the predictor's 16)."),
    max_frames: int = typer.Option(64, help="Most frames a clip (the service's max_faces)."),
) -> None:
    """A TensorRT engine from model.onnx (GPU machine with TensorRT), checked against ONNX."""
    from emoflow.release.convert import convert_model

    convert_model(model_dir or LAYOUT.model_dir(model), faces, splits, precision,
                  (min_batch, opt_batch, max_batch), max_frames, arch=model)  # fmt: skip


@app.command("contact-sheet")
def contact_sheet(
    participant: str = typer.Option("p001", help="Participant id, e.g. p001."),
    data: Path = typer.Option(LAYOUT.data, help="Data root written by `emoflow sample`."),
    out: Path = typer.Option(Path("docs/img/sample_contact_sheet.png"), help="PNG to write."),
) -> None:
    """A PNG of one participant's expressions at their peaks, read from the sample videos."""
    from emoflow.sample.contact_sheet import write_contact_sheet

    write_contact_sheet(data, participant, out)


@app.command()
def mark(
    trials: Path = typer.Argument(..., help="A folder of trial clips (*.mp4) or a trials.csv."),
    marks_dir: Path = typer.Option(LAYOUT.marks, "--marks-dir", help="Where marks go."),
    redo: bool = typer.Option(False, "--all", help="Also open clips that already have marks."),
    jump: int = typer.Option(10, min=1, help="Frames per F/B (and Up/Down) jump."),
    labeller: str = typer.Option(
        "", "--labeller", help="Who labels (a review queue's provenance) [default: $USER]."
    ),
) -> None:
    """The labelling GUI: mark start, end, peak and quality flags per clip (docs/labelling.md);
    on a review queue (`emoflow review pull`) also the class, keys 1-9."""
    import getpass

    from emoflow.labelling.app import mark_trials

    mark_trials(trials, marks_dir, redo=redo, jump=jump,
                labeller_name=labeller or getpass.getuser())


review = typer.Typer(help="The feedback loop's labelling side (docs/feedback.md).",
                     no_args_is_help=True)  # fmt: skip
app.add_typer(review, name="review")
StoreOption = typer.Option(..., "--store", envvar="EMOFLOW_CAPTURE_STORE",
                           help="The capture store: a folder or s3://bucket/prefix.")  # fmt: skip
QueueOption = typer.Option(LAYOUT.review_queue, "--queue", help="The labelling queue.")
ReviewMarksOption = typer.Option(LAYOUT.review_marks, "--marks-dir",
                                 help="The queue's marks and labels (emoflow mark --marks-dir).")
ReviewedOption = typer.Option(LAYOUT.reviewed, "--reviewed",
                              help="The reviewed data: reviewed.csv + clips/ (DVC).")  # fmt: skip


@review.command("pull")
def review_pull(
    store: str = StoreOption,
    endpoint: str = typer.Option(
        None, "--endpoint", envvar="EMOFLOW_CAPTURE_S3_ENDPOINT", help="An S3 store's URL."
    ),
    out: Path = QueueOption,
    reviewed: Path = ReviewedOption,
    params: Path = ParamsOption,
) -> None:
    """Kept clips (and feedback) → a queue for `emoflow mark`, least confident first."""
    from emoflow.feedback.accept import reviewed_ids
    from emoflow.feedback.pull import pull_queue
    from emoflow.feedback.store import CaptureStore

    classes = list(load_params(params).classes)
    pull_queue(CaptureStore(store, endpoint), out, classes, reviewed_ids(reviewed))


@review.command("accept")
def review_accept(
    queue: Path = QueueOption,
    marks_dir: Path = ReviewMarksOption,
    out: Path = ReviewedOption,
    params: Path = ParamsOption,
    dvc: bool = typer.Option(True, "--dvc/--no-dvc", help="dvc add the clips folder."),
) -> None:
    """Labelled clips of the queue → data/reviewed (with their provenance), under DVC."""
    from emoflow.feedback.accept import accept

    accept(queue, marks_dir, out, list(load_params(params).classes), dvc=dvc)


def run() -> None:
    """Entry point: a user error is one line on stderr and exit code 2, not a traceback."""
    try:
        app()
    except EmoflowError as exc:
        _close_progress_bars()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _close_progress_bars() -> None:
    """End the line of any bar the error interrupted: the traceback keeps its loop alive, so
    it would not close by itself and the error would land on the bar's line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


if __name__ == "__main__":
    run()
