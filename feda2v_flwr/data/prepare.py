"""``feda2v-data prepare``: real recordings that install offline, written as an audiofolder.

    apt-get install sonic-pi-samples espeak-ng          # Debian / Ubuntu
    feda2v-data prepare sonic-pi --root data/sonic-pi    # 10 instrument families, CC0
    feda2v-data prepare espeak --root data/espeak        # 10 spoken command words, 30 voices

Both write ``<root>/<class>/<group>__<take>.<ext>`` (``data.dataset: "audiofolder"``) and a
``prepared.json`` that records what was built. Run ``data.split_by: "groups"`` on them so that a
recording (Sonic Pi) or a voice (espeak) is never in two splits of a class: otherwise a test clip
can be a variant of a training clip.

- **sonic-pi**: Debian's ``sonic-pi-samples`` (165 FLAC one-shots and loops from freesound.org,
  CC0 per the package's samples README). A class is a sample family, the name's first word
  (``bd_haus`` -> ``bd``), kept when it has at least 8 recordings: ambi, bass, bd, drum, elec,
  glitch, loop, mehackit, perc, tabla. Each clip is one recording, augmented (seeded): a speed
  change of 0.9-1.12 (pitch and tempo), a random crop of long recordings, up to 0.25 s of leading
  silence, a gain of -12-0 dB and white noise at 20-40 dB SNR; ``--seconds`` long, 44.1 kHz mono
  FLAC. The clips of a class cycle through its recordings, so every recording has about the same
  number of variants.
- **espeak**: the words yes, no, up, down, left, right, on, off, stop and go (Speech Commands'
  ten), spoken by ``--speakers`` voices of espeak-ng (an English accent with a voice variant:
  ``en-gb-scotland+f3``), ``--takes`` times each at a seeded speed (130-210 words per minute) and
  pitch (20-80): within-class variety from voices, speeds and pitches. 22.05 kHz WAV, as espeak-ng
  writes it.

Everything is seeded (``--seed``): the same command writes the same files. A root that already
holds this build is left as it is; another build in it is replaced.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from feda2v_flwr.data.datasets import GROUP_SEPARATOR
from feda2v_flwr.seeding import recording_rng, voice_choice_rng

MANIFEST = "prepared.json"
PREPARE_VERSION = 1  # bump when the same settings would write other audio

SONIC_PI_SAMPLES = Path("/usr/share/sonic-pi/samples")  # Debian's sonic-pi-samples
SONIC_PI_SAMPLE_RATE = 44_100
SONIC_PI_MIN_RECORDINGS = 8
SONIC_PI_LICENCE = (
    "Sonic Pi samples (Debian package sonic-pi-samples): from freesound.org, placed in the public domain by "
    "their authors (CC0 1.0); see the package's samples README for each sample's source."
)

ESPEAK_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
# espeak-ng 1.51's voice variants (espeak-ng --voices=variant) that change the voice, not only its effects.
ESPEAK_VARIANTS = (
    *(f"m{i}" for i in range(1, 8)),
    *(f"f{i}" for i in range(1, 6)),
    "klatt",
    "klatt2",
    "klatt3",
    "adam",
    "alicia",
    "andy",
    "annie",
    "benjamin",
    "david",
    "edward",
    "grandpa",
    "linda",
    "max",
    "michael",
    "paul",
    "robert",
    "steph",
)
ESPEAK_LICENCE = "Spoken by espeak-ng (GPL-3.0 program); the generated audio is this project's output."


class PrepareError(RuntimeError):
    """A dataset that cannot be built here; the message says what to install or change."""


@dataclass(frozen=True)
class SonicPiSettings:
    clips_per_class: int = 40
    seconds: float = 3.0
    seed: int = 0


@dataclass(frozen=True)
class EspeakSettings:
    speakers: int = 30
    takes: int = 2
    seed: int = 0


def prepare_sonic_pi(root: Path, settings: SonicPiSettings, source: Path = SONIC_PI_SAMPLES) -> str:
    """Write the sonic-pi audiofolder into ``root``; returns what was done."""
    families = sonic_pi_families(source)
    manifest = {"dataset": "sonic-pi", "version": PREPARE_VERSION, **asdict(settings), "licence": SONIC_PI_LICENCE}
    if _already_built(root, manifest):
        return f"{root} already holds this sonic-pi build; nothing to do."
    staging = _staging(root)
    length = int(round(settings.seconds * SONIC_PI_SAMPLE_RATE))
    with tqdm(total=len(families) * settings.clips_per_class, desc="sonic-pi", unit="clip") as progress:
        for family, recordings in families.items():
            (staging / family).mkdir()
            waves = [_read_mono(path) for path in recordings]
            for take in range(settings.clips_per_class):
                which = take % len(recordings)
                rng = recording_rng(settings.seed, family, take)
                clip = augment(waves[which], length, rng)
                name = f"{recordings[which].stem}{GROUP_SEPARATOR}{take:03d}.flac"
                soundfile.write(staging / family / name, clip, SONIC_PI_SAMPLE_RATE, subtype="PCM_16")
                progress.update()
    clips = len(families) * settings.clips_per_class
    _publish(staging, root, {**manifest, "classes": list(families), "clips": clips})
    return f"sonic-pi is ready in {root}: {clips} clips of {len(families)} classes. {SONIC_PI_LICENCE}"


def sonic_pi_families(source: Path) -> dict[str, list[Path]]:
    """Sample families with at least 8 recordings: {first word of the name: its FLAC files}."""
    files = sorted(source.glob("*.flac")) if source.is_dir() else []
    if not files:
        raise PrepareError(
            f"{source} holds no Sonic Pi samples (*.flac). Install them with `apt-get install sonic-pi-samples` "
            "(Debian, Ubuntu), or give --source the folder that holds them."
        )
    families: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        families[path.stem.split("_", 1)[0]].append(path)
    kept = {name: paths for name, paths in sorted(families.items()) if len(paths) >= SONIC_PI_MIN_RECORDINGS}
    if len(kept) < 2:
        raise PrepareError(f"{source} has fewer than 2 sample families of {SONIC_PI_MIN_RECORDINGS}+ recordings.")
    return kept


def augment(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """One variant of ``wave`` (mono float, 44.1 kHz), ``length`` samples: speed change, crop,
    leading silence, gain and noise (see the module docstring)."""
    speed = rng.uniform(0.9, 1.12)
    positions = np.arange(0, wave.size - 1, speed)
    wave = np.interp(positions, np.arange(wave.size), wave) if positions.size else wave
    start = int(rng.integers(0, wave.size - length + 1)) if wave.size > length else 0
    delay = int(rng.uniform(0, 0.25) * SONIC_PI_SAMPLE_RATE)
    clip = np.zeros(length)
    piece = wave[start : start + length - delay]
    clip[delay : delay + piece.size] = piece
    clip *= 10 ** (rng.uniform(-12, 0) / 20) / max(np.abs(clip).max(), 1e-9)
    power = np.mean(clip[delay : delay + piece.size] ** 2) if piece.size else 0.0
    noise = rng.standard_normal(length) * np.sqrt(power / 10 ** (rng.uniform(20, 40) / 10))
    return np.clip(clip + noise, -1.0, 1.0).astype(np.float32)


def prepare_espeak(root: Path, settings: EspeakSettings) -> str:
    """Write the espeak audiofolder into ``root``; returns what was done."""
    speakers = espeak_speakers(settings.speakers, settings.seed)
    manifest = {"dataset": "espeak", "version": PREPARE_VERSION, **asdict(settings), "licence": ESPEAK_LICENCE}
    if _already_built(root, manifest):
        return f"{root} already holds this espeak build; nothing to do."
    staging = _staging(root)
    with tqdm(total=len(ESPEAK_WORDS) * len(speakers) * settings.takes, desc="espeak", unit="clip") as progress:
        for word in ESPEAK_WORDS:
            (staging / word).mkdir()
            for speaker in speakers:
                for take in range(settings.takes):
                    rng = recording_rng(settings.seed, f"{word}/{speaker}", take)
                    speed, pitch = int(rng.integers(130, 211)), int(rng.integers(20, 81))
                    wave, rate = speak(word, speaker, speed=speed, pitch=pitch)
                    soundfile.write(staging / word / f"{speaker}{GROUP_SEPARATOR}{take}.wav", wave, rate)
                    progress.update()
    clips = len(ESPEAK_WORDS) * len(speakers) * settings.takes
    _publish(staging, root, {**manifest, "classes": list(ESPEAK_WORDS), "speakers": speakers, "clips": clips})
    return f"espeak is ready in {root}: {len(ESPEAK_WORDS)} words x {len(speakers)} voices x {settings.takes} takes"


def espeak_speakers(count: int, seed: int) -> list[str]:
    """``count`` voices (accent+variant), a seeded choice among all combinations."""
    voices = [f"{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS]
    if not 2 <= count <= len(voices):
        raise PrepareError(f"--speakers must be between 2 and {len(voices)}, got {count}.")
    order = voice_choice_rng(seed).permutation(len(voices))[:count]
    return sorted(voices[i] for i in order)


def speak(word: str, voice: str, *, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """(mono float32 wave, sample rate) of espeak-ng saying ``word``."""
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word]
    try:
        result = subprocess.run(command, capture_output=True, check=True, timeout=60)
    except FileNotFoundError:
        raise PrepareError("espeak-ng is not installed. Install it with `apt-get install espeak-ng`.") from None
    except subprocess.CalledProcessError as err:
        raise PrepareError(f"`{' '.join(command)}` failed: {err.stderr.decode(errors='replace').strip()}") from None
    wave, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    return wave, rate


def _read_mono(path: Path) -> np.ndarray:
    wave, rate = soundfile.read(path, dtype="float64", always_2d=True)
    if rate != SONIC_PI_SAMPLE_RATE:
        raise PrepareError(f"{path} is sampled at {rate} Hz, not {SONIC_PI_SAMPLE_RATE}: not a Sonic Pi sample.")
    return wave.mean(axis=1)


def _already_built(root: Path, manifest: dict) -> bool:
    path = root / MANIFEST
    try:
        built = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return {k: built.get(k) for k in manifest} == manifest and all(
        (root / name).is_dir() for name in built.get("classes", [])
    )


def _staging(root: Path) -> Path:
    """An empty staging folder in ``root``; a ``root`` that holds anything but an earlier build is
    refused (its folders would be replaced)."""
    if root.is_dir() and not (root / MANIFEST).is_file():
        others = [p.name for p in root.iterdir() if p.name != ".preparing"]
        if others:
            raise PrepareError(
                f"{root} is not empty ({', '.join(sorted(others)[:3])}...) and holds no earlier build ({MANIFEST}). "
                "Give --root a new or empty folder."
            )
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ".preparing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _publish(staging: Path, root: Path, manifest: dict) -> None:
    """Replace ``root``'s class folders with the staged ones, then write the manifest (last, so a
    root with a manifest is complete)."""
    (root / MANIFEST).unlink(missing_ok=True)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        shutil.rmtree(folder)  # an earlier build's classes
    for folder in sorted(staging.iterdir()):
        folder.rename(root / folder.name)
    staging.rmdir()
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
