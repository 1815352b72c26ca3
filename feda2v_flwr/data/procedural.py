"""Procedurally generated environmental sounds: the offline default dataset.

Ten classes named like ESC-50 classes, synthesised with numpy. Every clip is a pure function of
(class, index, seed, sample rate, duration): nothing is downloaded or committed. Each clip draws
its own parameters (pitch, rate, timing, level, background noise), so a class has real spread.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import signal

from feda2v_flwr.seeding import procedural_clip_seed

GENERATOR_VERSION = "procedural-v1"

Synth = Callable[[np.random.Generator, np.ndarray, int], np.ndarray]


def _bandpass(x: np.ndarray, low: float, high: float, sr: int) -> np.ndarray:
    sos = signal.butter(4, [low, min(high, 0.45 * sr)], btype="bandpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _events(rng: np.random.Generator, n: int, rate_hz: float, sr: int) -> np.ndarray:
    """Event onsets (sample indices) of a jittered periodic process."""
    period = sr / rate_hz
    onsets = np.arange(rng.uniform(0, period), n, period)
    return (onsets + rng.normal(0, 0.05 * period, onsets.size)).clip(0, n - 1).astype(int)


def _place(n: int, onsets: np.ndarray, grain: np.ndarray) -> np.ndarray:
    out = np.zeros(n + grain.size)
    for start in onsets:
        out[start : start + grain.size] += grain
    return out[:n]


def siren(rng, t, sr):
    f0, depth, rate = rng.uniform(550, 850), rng.uniform(200, 450), rng.uniform(0.3, 1.2)
    phase = 2 * np.pi * np.cumsum(f0 + depth * np.sin(2 * np.pi * rate * t)) / sr
    return np.sin(phase) + 0.3 * np.sin(2 * phase)


def rain(rng, t, sr):
    hiss = _bandpass(rng.normal(size=t.size), 1500, 7000, sr) * 0.5
    drop = np.exp(-np.arange(int(0.01 * sr)) / (0.002 * sr)) * rng.normal(size=int(0.01 * sr))
    drops = _place(t.size, _events(rng, t.size, rng.uniform(20, 60), sr), drop)
    return hiss + 0.8 * drops


def dog(rng, t, sr):
    bark_len = int(rng.uniform(0.12, 0.25) * sr)
    bt = np.arange(bark_len) / sr
    f = rng.uniform(350, 600) * np.exp(-bt * rng.uniform(2, 5))
    bark = signal.sawtooth(2 * np.pi * np.cumsum(f) / sr) * np.exp(-bt * 12)
    bark = _bandpass(bark, 400, 2500, sr)
    return _place(t.size, _events(rng, t.size, rng.uniform(1.0, 2.5), sr), bark)


def clock_tick(rng, t, sr):
    n = int(0.02 * sr)
    click = np.sin(2 * np.pi * rng.uniform(2000, 3500) * np.arange(n) / sr) * np.exp(-np.arange(n) / (0.002 * sr))
    rate = rng.uniform(1.8, 2.2)
    return _place(t.size, (np.arange(0, t[-1], 1 / rate) * sr).astype(int), click)


def church_bells(rng, t, sr):
    f0, out = rng.uniform(180, 420), np.zeros_like(t)
    period = rng.uniform(1.0, 2.0)
    for start in np.arange(rng.uniform(0, 0.5), t[-1], period):
        tt = np.clip(t - start, 0, None)
        env = (t >= start) * np.exp(-tt * rng.uniform(1.0, 2.0))
        for ratio, amp in ((0.5, 0.6), (1.0, 1.0), (1.2, 0.5), (1.5, 0.4), (2.0, 0.3), (2.5, 0.2)):
            out += amp * env * np.sin(2 * np.pi * ratio * f0 * tt)
    return out


def crickets(rng, t, sr):
    carrier = np.sin(2 * np.pi * rng.uniform(3800, 5200) * t)
    pulses = (np.sin(2 * np.pi * rng.uniform(25, 40) * t) > 0).astype(float)
    chirps = (np.sin(2 * np.pi * rng.uniform(1.0, 3.0) * t) > 0.2).astype(float)
    return carrier * pulses * chirps


def engine(rng, t, sr):
    f0 = rng.uniform(28, 60) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    out = sum(np.sin(k * phase) / k for k in range(1, 9))
    return out * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(4, 12) * t)) + 0.1 * rng.normal(size=t.size)


def wind(rng, t, sr):
    brown = np.cumsum(rng.normal(size=t.size))
    brown = signal.detrend(brown)
    gust = 1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.28))
    return _bandpass(brown, 60, 900, sr) * gust


def chirping_birds(rng, t, sr):
    n = int(rng.uniform(0.06, 0.12) * sr)
    ct = np.arange(n) / sr
    f_start, f_end = rng.uniform(2500, 3500), rng.uniform(4500, 6500)
    chirp = signal.chirp(ct, f_start, ct[-1], f_end) * np.hanning(n)
    return _place(t.size, _events(rng, t.size, rng.uniform(3, 7), sr), chirp)


def door_wood_knock(rng, t, sr):
    n = int(0.06 * sr)
    kt = np.arange(n) / sr
    f = rng.uniform(120, 260)
    knock = (np.sin(2 * np.pi * f * kt) + 0.5 * np.sin(2 * np.pi * 2.7 * f * kt)) * np.exp(-kt * 60)
    onsets: list[int] = []
    for group in np.arange(rng.uniform(0, 0.8), t[-1] - 0.6, rng.uniform(1.5, 2.5)):
        onsets += [int((group + k * rng.uniform(0.15, 0.22)) * sr) for k in range(3)]
    return _place(t.size, np.array(onsets, dtype=int), knock)


SOUND_CLASSES: dict[str, Synth] = {
    "siren": siren,
    "rain": rain,
    "dog": dog,
    "clock_tick": clock_tick,
    "church_bells": church_bells,
    "crickets": crickets,
    "engine": engine,
    "wind": wind,
    "chirping_birds": chirping_birds,
    "door_wood_knock": door_wood_knock,
}


def synthesize(class_name: str, index: int, *, seed: int, sample_rate: int, seconds: float) -> np.ndarray:
    """One mono float32 clip in [-1, 1] of ``round(seconds * sample_rate)`` samples."""
    if class_name not in SOUND_CLASSES:
        known = ", ".join(SOUND_CLASSES)
        raise ValueError(f"Unknown procedural sound class '{class_name}'. Known classes: {known}")
    rng = np.random.default_rng(procedural_clip_seed(class_name, index, seed))
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    x = SOUND_CLASSES[class_name](rng, t, sample_rate)
    x = x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)
    x = x + rng.uniform(0.002, 0.02) * rng.normal(size=t.size)
    return np.clip(x, -1, 1).astype(np.float32)
