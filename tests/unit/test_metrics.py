"""WAR / UAR / F1 / confusion on hand-computed cases, against scikit-learn, and fold summaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from emoflow.training.metrics import classification_report, flat_metrics, summarise_folds

ABC = ["a", "b", "c"]


def test_hand_computed_three_classes() -> None:
    # true a a a b b c ; pred a a b b c c
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ABC)
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["n"] == 6
    assert report["war"] == pytest.approx(4 / 6)
    # recalls: a 2/3, b 1/2, c 1/1
    assert report["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    a, b, c = (report["per_class"][k] for k in ABC)
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["predicted"]) == (0.5, 1.0, 2)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert [a["f1"], b["f1"], c["f1"]] == pytest.approx(f1)
    assert report["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert report["classes"] == ABC
    assert report["classes_without_support"] == []


def test_class_without_support_is_left_out_of_uar_and_f1() -> None:
    # c never occurs in truth; one clip is predicted c.
    report = classification_report([0, 0, 1, 1], [0, 2, 1, 1], ABC)
    assert report["classes_without_support"] == ["c"]
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                        "support": 0, "predicted": 1}  # fmt: skip
    assert report["uar"] == pytest.approx((0.5 + 1.0) / 2)  # not / 3
    f1_a = 2 * 1.0 * 0.5 / 1.5
    assert report["macro_f1"] == pytest.approx((f1_a + 1.0) / 2)
    assert report["war"] == pytest.approx(3 / 4)


def test_never_predicted_class_has_precision_zero_and_predicted_zero() -> None:
    report = classification_report([0, 1, 2], [0, 0, 2], ABC)
    b = report["per_class"]["b"]
    assert b["predicted"] == 0 and b["precision"] == 0.0 and b["recall"] == 0.0


def test_report_is_plain_json() -> None:
    report = classification_report(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), ABC)
    assert json.loads(json.dumps(report)) == report
    assert all(type(v) is int for row in report["confusion"] for v in row)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("seed", range(5))
def test_matches_sklearn_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = [f"c{i}" for i in range(7)]
    y_true = rng.integers(0, 6, size=200)  # class 6 has no support
    y_pred = np.where(rng.random(200) < 0.5, y_true, rng.integers(0, 7, size=200))
    report = classification_report(y_true.tolist(), y_pred.tolist(), classes)
    labels = list(range(7))
    supported = sorted(set(y_true.tolist()))
    assert report["war"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert report["uar"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=supported, average="macro", zero_division=0))
    np.testing.assert_array_equal(report["confusion"],
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                     zero_division=0)  # fmt: skip
    for i, name in enumerate(classes):
        row = report["per_class"][name]
        assert row["precision"] == pytest.approx(p[i])
        assert row["recall"] == pytest.approx(r[i])
        assert row["f1"] == pytest.approx(f[i])
        assert row["support"] == s[i]


@pytest.mark.parametrize(("y_true", "y_pred", "match"), [
    ([0, 1], [0], "labels"),
    ([0, 3], [0, 1], "outside"),
    ([0, -1], [0, 1], "outside"),
    ([], [], "no samples"),
    ([0.5, 1], [0, 1], "integer"),
])  # fmt: skip
def test_bad_input(y_true: list, y_pred: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        classification_report(y_true, y_pred, ABC)


def test_flat_metrics() -> None:
    report = classification_report([0, 0, 1], [0, 1, 1], ABC)
    flat = flat_metrics(report, prefix="val_")
    assert set(flat) == {"val_war", "val_uar", "val_macro_f1", "val_recall_a", "val_recall_b"}
    assert flat["val_recall_a"] == 0.5


def test_summarise_folds_mean_and_population_std() -> None:
    folds = [
        classification_report([0, 0, 1, 1], [0, 0, 1, 1], ABC),  # war 1, recall a 1, b 1
        classification_report([0, 0, 1, 2], [0, 1, 1, 0], ABC),  # war .5, a .5, b 1, c 0
        classification_report([0, 1, 1, 2], [1, 1, 1, 2], ABC),  # war .75, a 0, b 1, c 1
    ]
    summary = summarise_folds(folds)
    assert summary["folds"] == 3
    wars = [1.0, 0.5, 0.75]
    assert summary["war"]["mean"] == pytest.approx(np.mean(wars))
    assert summary["war"]["std"] == pytest.approx(np.std(wars, ddof=0))
    uars = [f["uar"] for f in folds]
    assert summary["uar"] == pytest.approx({"mean": np.mean(uars), "std": np.std(uars)})
    assert summary["macro_f1"]["mean"] == pytest.approx(np.mean([f["macro_f1"] for f in folds]))
    a = summary["per_class_recall"]["a"]
    assert a["folds"] == 3 and a["mean"] == pytest.approx(0.5)
    assert a["std"] == pytest.approx(np.std([1.0, 0.5, 0.0]))
    c = summary["per_class_recall"]["c"]  # no support in fold 1: averaged over 2 folds
    assert c == pytest.approx({"mean": 0.5, "std": 0.5, "folds": 2})
    assert json.loads(json.dumps(summary)) == summary


def test_summarise_folds_rejects_mismatched_classes() -> None:
    with pytest.raises(ValueError, match="classes"):
        summarise_folds([classification_report([0, 1], [0, 1], ABC),
                         classification_report([0, 1], [0, 1], ["a", "b"])])  # fmt: skip
    with pytest.raises(ValueError, match="no fold"):
        summarise_folds([])
