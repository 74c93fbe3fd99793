"""The sound track of a session: trigger beeps among the sounds that make detection hard.

Distractors: room noise with hum, level changes (a camera's automatic gain), clicks, speech
(voiced, formant-shaped, between trials while the participant answers) and stray tones at other
frequencies than the trigger's.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import lfilter

from emoflow.config import SampleParams
from emoflow.sample.plan import SessionPlan


def tone(freq: float, duration: float, sr: int, ramp: float = 0.005) -> np.ndarray:
    """A sine burst with raised-cosine ramps (no click at its edges)."""
    n = round(duration * sr)
    t = np.arange(n) / sr
    y = np.sin(2 * np.pi * freq * t)
    r = max(1, round(ramp * sr))
    w = 0.5 - 0.5 * np.cos(np.pi * np.arange(r) / r)
    y[:r] *= w
    y[-r:] *= w[::-1]
    return y.astype(np.float32)


def _vowel(duration: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced syllable: glottal pulse train through two formant resonators, with vibrato."""
    n = round(duration * sr)
    vibrato = np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(n) / sr)
    f0 = rng.uniform(100, 230) * (1 + 0.05 * vibrato)
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    y = pulses.astype(np.float64)
    for f, bw in ((rng.uniform(300, 800), 90.0), (rng.uniform(900, 2400), 120.0)):
        r = np.exp(-np.pi * bw / sr)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / sr), r * r], y)
    env = np.sin(np.pi * np.arange(n) / n) ** 0.5
    y = y * env
    return (y / (np.abs(y).max() + 1e-9)).astype(np.float32)


def session_audio(plan: SessionPlan, params: SampleParams) -> np.ndarray:
    """Mono float32 audio of the whole session, aligned with its video frames."""
    rng = np.random.default_rng([params.seed, plan.index, 1])
    sr, fps = params.sample_rate, params.fps
    n = round(plan.n_frames / fps * sr)
    t = np.arange(n) / sr
    # Room noise (pinkish) and mains hum.
    white = rng.normal(0, 1, n).astype(np.float32)
    pink = lfilter([0.05], [1, -0.95], white).astype(np.float32)
    y = 0.004 * white + 0.01 * pink / (np.abs(pink).max() + 1e-9) * 3
    y += 0.003 * np.sin(2 * np.pi * 50 * t) + 0.0015 * np.sin(2 * np.pi * 150 * t)

    def add(sig: np.ndarray, at: float, gain: float) -> None:
        i = round(at * sr)
        j = min(n, i + sig.size)
        if i < n and j > i:
            y[i:j] += gain * sig[: j - i]

    beep = params.beep
    for trial in plan.trials:
        level = 10 ** (-rng.uniform(beep.attenuation_db.min, beep.attenuation_db.max) / 20)
        add(tone(beep.frequency_hz, beep.duration_s, sr), trial.onset_s, level)
    for f0, f1 in plan.speech:
        at = f0 / fps
        while at < f1 / fps:
            d = rng.uniform(0.12, 0.35)
            add(_vowel(d, sr, rng), at, rng.uniform(0.05, 0.25))
            at += d + rng.uniform(0.03, 0.2)
    duration = n / sr
    for at in rng.uniform(0, duration, max(1, int(duration / 4))):  # clicks: mouse, chair
        click = rng.normal(0, 1, round(0.004 * sr)).astype(np.float32)
        click *= np.exp(-np.arange(click.size) / (0.001 * sr)).astype(np.float32)
        add(click, at, rng.uniform(0.2, 0.6))
    for at in rng.uniform(0, duration, max(1, int(duration / 15))):  # stray tones, never 1 kHz
        f = rng.choice([440.0, 660.0, 1500.0, 2200.0, 3000.0])
        add(tone(f, rng.uniform(0.08, 0.3), sr), at, rng.uniform(0.03, 0.15))
    # Automatic gain: level steps of up to ±6 dB, smoothed over 50 ms.
    gain = np.ones(n, np.float32)
    for at in np.sort(rng.uniform(0, duration, max(1, int(duration / 20)))):
        gain[round(at * sr) :] = 10 ** (rng.uniform(-6, 6) / 20)
    gain = uniform_filter1d(gain, round(0.05 * sr), mode="nearest")
    return np.clip(y * gain, -1.0, 1.0).astype(np.float32)
