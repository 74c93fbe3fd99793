"""The seven expressions as movements of dlib's 68 landmarks (iBUG numbering).

Each movement is given in units of the inter-ocular distance (IOD) as (lateral, vertical):
lateral > 0 moves a point away from the face's midline, vertical > 0 moves it down. The
movements follow FACS action units: e.g. happiness = AU6 cheek raiser + AU12 lip-corner puller
(+AU25 lips part), surprise = AU1+2 brow raisers + AU5 lid raiser + AU26 jaw drop.
"""

from __future__ import annotations

import numpy as np

# Side of each landmark as seen in the image: -1 left of the midline, +1 right, 0 on it.
_SIDE = np.zeros(68, dtype=np.float32)
_SIDE[[*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67]] = -1
_SIDE[[*range(9, 17), *range(22, 27), 34, 35, *range(42, 48), 52, 53, 54, 55, 56, 63, 64, 65]] = 1

Move = tuple[tuple[int, ...], float, float]  # (indices, lateral, vertical)

# Mirror pairs are listed together so both halves move alike.
MOVES: dict[str, list[Move]] = {
    "neutral": [],
    "anger": [  # AU4 brow lowerer, AU7 lid tightener, AU23/24 lips pressed, AU9-ish flare
        ((20, 21, 22, 23), -0.07, 0.11),
        ((19, 24), -0.03, 0.07),
        ((18, 25), 0.0, 0.04),
        ((17, 26), 0.0, 0.02),
        ((37, 38, 43, 44), 0.0, 0.02),
        ((40, 41, 46, 47), 0.0, -0.04),
        ((31, 35), 0.04, -0.01),
        ((32, 34), 0.02, 0.0),
        ((49, 50, 51, 52, 53), 0.0, 0.02),
        ((55, 56, 57, 58, 59), 0.0, -0.05),
        ((61, 62, 63), 0.0, 0.015),
        ((65, 66, 67), 0.0, -0.015),
        ((48, 54, 60, 64), -0.04, 0.01),
        ((7, 8, 9), 0.0, -0.03),
    ],
    "disgust": [  # AU9 nose wrinkler, AU10 upper-lip raiser, AU4 slight
        ((29, 30), 0.0, -0.03),
        ((31, 32, 33, 34, 35), 0.0, -0.07),
        ((31, 35), 0.03, 0.0),
        ((49, 53), 0.0, -0.10),
        ((50, 51, 52), 0.0, -0.11),
        ((61, 62, 63), 0.0, -0.09),
        ((48, 54), -0.01, 0.02),
        ((55, 56, 57, 58, 59), 0.0, 0.03),
        ((65, 66, 67), 0.0, 0.02),
        ((20, 21, 22, 23), -0.03, 0.06),
        ((17, 18, 19, 24, 25, 26), 0.0, 0.02),
        ((40, 41, 46, 47), 0.0, -0.04),
    ],
    "fear": [  # AU1+2+4 brows up and together, AU5 lids up, AU20 lip stretch, AU25/26
        ((17, 26), 0.0, -0.05),
        ((18, 25), 0.0, -0.09),
        ((19, 24), -0.01, -0.11),
        ((20, 23), -0.03, -0.12),
        ((21, 22), -0.04, -0.12),
        ((37, 38, 43, 44), 0.0, -0.06),
        ((36, 39, 42, 45), 0.0, -0.01),
        ((48, 54), 0.10, 0.03),
        ((60, 64), 0.08, 0.03),
        ((49, 53, 59, 55), 0.05, 0.0),
        ((65, 66, 67), 0.0, 0.11),
        ((55, 56, 57, 58, 59), 0.0, 0.08),
        ((61, 62, 63), 0.0, -0.01),
        ((5, 6, 7, 8, 9, 10, 11), 0.0, 0.06),
    ],
    "happiness": [  # AU6 cheek raiser, AU12 lip-corner puller, AU25 lips part
        ((48, 54), 0.13, -0.10),
        ((60, 64), 0.11, -0.08),
        ((49, 53), 0.06, -0.07),
        ((50, 52), 0.02, -0.03),
        ((51,), 0.0, -0.02),
        ((59, 55), 0.06, -0.03),
        ((58, 56), 0.0, 0.02),
        ((57,), 0.0, 0.03),
        ((61, 63), 0.02, -0.04),
        ((62,), 0.0, -0.03),
        ((65, 67), 0.02, 0.05),
        ((66,), 0.0, 0.06),
        ((40, 41, 46, 47), 0.0, -0.045),
        ((36, 45), 0.0, -0.01),
        ((2, 3, 13, 14), 0.02, -0.02),
        ((31, 35), 0.02, -0.01),
        ((7, 8, 9), 0.0, 0.03),
    ],
    "sadness": [  # AU1 inner brow raiser, AU4, AU15 lip-corner depressor, AU17 chin raiser
        ((20, 21, 22, 23), -0.02, -0.09),
        ((19, 24), 0.0, -0.04),
        ((17, 26), 0.0, 0.04),
        ((18, 25), 0.0, 0.01),
        ((37, 38, 43, 44), 0.0, 0.03),
        ((48, 54), -0.01, 0.09),
        ((60, 64), 0.0, 0.06),
        ((49, 53), 0.0, 0.02),
        ((56, 57, 58), 0.0, -0.03),
        ((65, 66, 67), 0.0, -0.01),
        ((7, 8, 9), 0.0, -0.03),
    ],
    "surprise": [  # AU1+2 brows up, AU5 lids up, AU26/27 jaw drop
        ((17, 26), 0.0, -0.10),
        ((18, 25), 0.0, -0.15),
        ((19, 24), 0.0, -0.17),
        ((20, 23), 0.0, -0.16),
        ((21, 22), 0.0, -0.15),
        ((37, 38, 43, 44), 0.0, -0.07),
        ((36, 39, 42, 45), 0.0, -0.015),
        ((40, 41, 46, 47), 0.0, 0.02),
        ((65, 66, 67), 0.0, 0.28),
        ((56, 57, 58), 0.0, 0.28),
        ((55, 59), -0.01, 0.24),
        ((60, 64), -0.02, 0.10),
        ((48, 54), -0.04, 0.12),
        ((61, 62, 63), 0.0, -0.02),
        ((4, 12), 0.0, 0.12),
        ((5, 11), 0.0, 0.20),
        ((6, 7, 9, 10), 0.0, 0.26),
        ((8,), 0.0, 0.28),
    ],
}

# Mouth movements for speaking between trials, and the eyelids' blink.
SPEAK: list[Move] = [
    ((65, 66, 67), 0.0, 0.09),
    ((55, 56, 57, 58, 59), 0.0, 0.08),
    ((48, 54, 60, 64), -0.01, 0.03),
    ((6, 7, 8, 9, 10), 0.0, 0.07),
    ((5, 11), 0.0, 0.04),
]
# Expressions whose open mouth shows the upper teeth.
SHOWS_TEETH = frozenset({"happiness", "fear", "disgust"})


def displacement(moves: list[Move], iod: float, scale: float = 1.0) -> np.ndarray:
    """``(68, 2)`` pixel displacement of each landmark for a list of moves."""
    d = np.zeros((68, 2), dtype=np.float32)
    for idx, lateral, vertical in moves:
        ix = list(idx)
        d[ix, 0] += lateral * _SIDE[ix] * iod * scale
        d[ix, 1] += vertical * iod * scale
    return d


def expression_displacement(emotion: str, iod: float, scale: float = 1.0) -> np.ndarray:
    if emotion not in MOVES:
        raise KeyError(f"unknown expression {emotion!r}; known: {sorted(MOVES)}")
    return displacement(MOVES[emotion], iod, scale)


def blink_displacement(landmarks: np.ndarray) -> np.ndarray:
    """Close both eyes: upper lids travel most of the way to the lower lids."""
    d = np.zeros((68, 2), dtype=np.float32)
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):
        gap = landmarks[lower, 1] - landmarks[upper, 1]
        d[upper, 1] = 0.85 * gap
        d[lower, 1] = -0.15 * gap
    return d


def close_mouth_displacement(landmarks: np.ndarray) -> np.ndarray:
    """Bring the inner lips together (a neutral, closed mouth)."""
    d = np.zeros((68, 2), dtype=np.float32)
    for upper, lower in ((61, 67), (62, 66), (63, 65)):
        mid = (landmarks[upper, 1] + landmarks[lower, 1]) / 2
        d[upper, 1] = mid - landmarks[upper, 1]
        d[lower, 1] = mid - landmarks[lower, 1]
    return d


def envelope(n_frames: int, start: int, rise: int, hold: int, decay: int) -> np.ndarray:
    """Expression intensity per frame: neutral → onset → peak → offset → neutral.

    Smoothstep ramps; the plateau bows slightly so that the peak is a single frame (the
    middle of the hold), as a labeller would mark it.
    """
    t = np.zeros(n_frames, dtype=np.float32)
    i = np.arange(n_frames, dtype=np.float32)

    def smooth(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3 - 2 * x)

    up = smooth((i - start) / max(rise, 1))
    peak = start + rise + hold // 2
    down = smooth((start + rise + hold + decay - i) / max(decay, 1))
    bow = 1.0 - 0.04 * ((i - peak) / max(hold / 2 + 1, 1)) ** 2
    t = np.minimum(up, down) * np.where(np.abs(i - peak) <= hold / 2 + 1, bow, 0.96)
    t[i < start] = 0.0
    t[i > start + rise + hold + decay] = 0.0
    return t.astype(np.float32)
