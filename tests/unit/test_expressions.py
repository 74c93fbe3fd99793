import numpy as np
import pytest

from emoflow.config import EMOTIONS
from emoflow.sample.expressions import MOVES, envelope, expression_displacement
from emoflow.sample.portraits import MIRROR


def test_envelope_rises_peaks_once_and_returns_to_neutral() -> None:
    c = envelope(180, start=20, rise=15, hold=20, decay=25)
    assert c[:21].max() == 0.0 and c[81:].max() == 0.0
    peak = int(np.argmax(c))
    assert peak == 20 + 15 + 10 and c[peak] == pytest.approx(1.0)
    assert np.sum(c == c.max()) == 1
    assert np.all(np.diff(c[20:peak + 1]) >= 0) and np.all(np.diff(c[peak:82]) <= 0)


@pytest.mark.parametrize("emotion", [e for e in EMOTIONS if e != "neutral"])
def test_each_expression_moves_symmetrically(emotion: str) -> None:
    d = expression_displacement(emotion, iod=80.0)
    assert np.abs(d).max() > 0.05 * 80  # a visible movement
    mirrored = d[MIRROR] * [-1, 1]  # a mirror image of the face moves the same way
    np.testing.assert_allclose(mirrored, d, atol=1e-4)


def test_expressions_are_distinct_movements() -> None:
    emotions = [e for e in EMOTIONS if e != "neutral"]
    flat = {e: expression_displacement(e, 1.0).ravel() for e in emotions}
    for i, a in enumerate(emotions):
        for b in emotions[i + 1 :]:
            cos = flat[a] @ flat[b] / np.linalg.norm(flat[a]) / np.linalg.norm(flat[b])
            assert cos < 0.8, (a, b, cos)
    assert set(MOVES) == set(EMOTIONS)
