"""Finding the stimulus program's trigger beeps in a session's audio track.

A beep is a sustained tone in a known band: for at least ``min_tone_s`` the band holds most of the
spectrum's energy (``purity``, which no level change affects) and stands ``min_level_db`` above
its own median (the room's noise floor in that band). Speech, clicks, hum and tones at other
frequencies fail one of the two tests; a click inside a beep cannot split it in two because onsets
closer than ``min_spacing_s`` merge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emoflow.config import SegmentParams

BRIDGE_S = 0.025
CUT_SHORT_S = 0.5  # decoded audio this much shorter than declared: the file lost its end
MISSING_GAP = 1.5  # a gap this many times the typical one: a beep was missed inside it


@dataclass(frozen=True)
class Beep:
    onset_s: float
    duration_s: float
    level_db: float  # band energy above the band's noise floor
    purity: float  # mean share of the spectrum in the band while the tone lasts


def _window_length(sr: int) -> int:
    """A power of two near 10 ms: fine onsets, yet a band of a few bins."""
    return int(2 ** np.round(np.log2(0.010 * sr)))


def band_profile(audio: np.ndarray, sr: int, band: tuple[float, float], hop_s: float = 0.001
                 ) -> tuple[np.ndarray, np.ndarray, float]:  # fmt: skip
    """Per hop: the band's share of the spectrum and the band energy; and the hop in seconds.

    Hop ``i`` is the window centred on ``i * hop`` (the signal is zero-padded by half a window).
    """
    win = _window_length(sr)
    hop = max(1, round(hop_s * sr))
    padded = np.concatenate([np.zeros(win // 2, np.float32), audio.astype(np.float32),
                             np.zeros(win // 2, np.float32)])  # fmt: skip
    n = max(0, (len(padded) - win) // hop + 1)
    freqs = np.fft.rfftfreq(win, 1 / sr)
    df = freqs[1]
    in_band = (freqs >= band[0] - df / 2) & (freqs <= band[1] + df / 2)
    taper = np.hanning(win).astype(np.float32)
    purity = np.empty(n, np.float32)
    energy = np.empty(n, np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]
    chunk = 8192  # bounded memory for hour-long sessions
    for a in range(0, n, chunk):
        power = np.abs(np.fft.rfft(frames[a : a + chunk] * taper, axis=1)) ** 2
        b = power[:, in_band].sum(1)
        purity[a : a + chunk] = b / (power.sum(1) + 1e-20)
        energy[a : a + chunk] = b
    return purity, energy, hop / sr


def detect_beeps(audio: np.ndarray, sr: int, params: SegmentParams) -> list[Beep]:
    """Onsets of the trigger tones in ``audio`` (mono float), in seconds from its start."""
    band = (params.band_hz.min, params.band_hz.max)
    purity, energy, hop_s = band_profile(audio, sr, band)
    if purity.size == 0:
        return []
    floor = float(np.median(energy)) + 1e-20
    level = 10 * np.log10(energy / floor + 1e-20)
    active = (purity >= params.purity) & (level >= params.min_level_db)
    edges = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    # A click inside a beep dips its purity for a few ms: bridge dips shorter than BRIDGE_S so
    # the beep keeps its true onset instead of starting again after the click.
    if starts.size > 1:
        keep = (starts[1:] - ends[:-1]) * hop_s > BRIDGE_S
        starts = np.concatenate([starts[:1], starts[1:][keep]])
        ends = np.concatenate([ends[:-1][keep], ends[-1:]])
    beeps: list[Beep] = []
    for a, b in zip(starts, ends, strict=True):
        duration = (b - a) * hop_s
        if duration < params.min_tone_s:
            continue
        onset = a * hop_s
        if beeps and onset - beeps[-1].onset_s < params.min_spacing_s:
            continue  # the same beep, split by a click or a level step
        beeps.append(Beep(onset, duration, float(level[a:b].mean()), float(purity[a:b].mean())))
    return beeps


def cut_short(decoded_s: float, declared_s: float) -> bool:
    """Whether a file decodes to clearly less than its container declares (0: unknown)."""
    return declared_s > 0 and declared_s - decoded_s > max(CUT_SHORT_S, 0.01 * declared_s)


def describe_mismatch(beeps: list[Beep], n_trials: int, decoded_s: float | None = None,
                      declared_s: float = 0.0, clip_s: float = 6.0, unbeeped: str = "") -> str:
    """Why the count of beeps and trials parts ways, most likely cause first, for a human.

    Fewer beeps than trials has three usual causes, told apart by the recording itself:
    the file is cut short (its audio decodes to less than the container declares: a
    ``+faststart`` MP4 whose end was lost still opens), a beep inside the session was missed
    (one gap between beeps is unusually long), or the protocol lists trials the session never
    had (the gaps are regular and the recording ends with no room for more). ``decoded_s`` is
    the decoded audio's length, ``declared_s`` the container's duration (0: unknown), and
    ``unbeeped`` names the protocol rows the beeps do not reach (the last ones).
    """
    onsets = [b.onset_s for b in beeps]
    text = f"{len(beeps)} trigger beeps detected, protocol lists {n_trials} trials"
    gaps = np.diff(onsets)
    typical = float(np.median(gaps)) if gaps.size >= 2 else None
    lost = declared_s - decoded_s if decoded_s is not None else 0.0
    rows = f" ({unbeeped})" if unbeeped else ""
    if len(beeps) < n_trials:
        k = n_trials - len(beeps)
        more = f"{k} trial{'s' if k > 1 else ''}"
        tail = (decoded_s - onsets[-1] if onsets else decoded_s) if decoded_s is not None else None
        if decoded_s is not None and cut_short(decoded_s, declared_s):
            text += (f"; most likely the recording is cut short: its audio decodes to "
                     f"{decoded_s:.1f} s of the {declared_s:.1f} s its container declares (a "
                     f"truncated file?), and the last {more}{rows} fell in the lost "
                     f"{lost:.1f} s: recover the whole file")  # fmt: skip
        elif typical is not None and gaps.max() >= MISSING_GAP * typical:
            i = int(np.argmax(gaps))
            text += (f"; longest gap {gaps[i]:.1f} s after the beep at {onsets[i]:.2f} s "
                     f"(typical {typical:.1f} s): a beep is probably missing there")  # fmt: skip
        elif typical is not None and tail is not None and tail < 0.75 * k * typical + clip_s:
            text += (f"; the gaps between beeps are regular (typical {typical:.1f} s) and the "
                     f"complete recording ends {tail:.1f} s after the last beep, with no room "
                     f"for {more} more: most likely the protocol has extra rows{rows}")  # fmt: skip
        elif typical is not None:
            text += (f"; the gaps between beeps are regular (typical {typical:.1f} s) but the "
                     f"recording goes on for {tail:.1f} s after the last beep: either the "
                     f"protocol has extra rows{rows} or the beeps there were not detected "
                     f"(check segment.band_hz and segment.min_level_db)")  # fmt: skip
        else:
            text += ("; too few beeps to compare gaps: check segment.band_hz and "
                     "segment.min_level_db against the trigger tone")  # fmt: skip
    elif typical is not None:
        i = int(np.argmin(gaps))
        text += (
            f"; shortest gap {gaps[i]:.1f} s between beeps at {onsets[i]:.2f} s and "
            f"{onsets[i + 1]:.2f} s (typical {typical:.1f} s): probably an extra beep"
        )
    shown = ", ".join(f"{t:.2f}" for t in onsets[:40])
    return f"{text}; beeps at [{shown}{', ...' if len(onsets) > 40 else ''}] s"
