"""What a dataset holds, before any audio is read: its classes and its audio files.

Three datasets: ``procedural`` (synthesised, nothing on disk), ``esc50`` (the official ESC-50
release) and ``audiofolder`` (one sub-folder per class). Class references in the config may be
names or integer indices; :meth:`DatasetIndex.resolve` turns both into names.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from feda2v_flwr.config.loading import ConfigError, resolve_run_path
from feda2v_flwr.config.schema import DataSettings
from feda2v_flwr.data.audio_files import AUDIO_EXTENSIONS
from feda2v_flwr.data.procedural import SOUND_CLASSES

LAYOUTS = {  # what data.root must hold, for error messages
    "esc50": (
        "audio/*.wav and meta/esc50.csv, as in the official ESC-50 release "
        "(csv columns filename, fold, target, category, esc10, src_file, take)"
    ),
    "audiofolder": "one sub-folder of .wav/.flac/.ogg files per class (<root>/<class name>/*.wav)",
}
ESC50_COLUMNS = ("filename", "fold", "target", "category")


class DatasetError(ValueError):
    """The data on disk does not match what the configuration expects; the message says what to fix."""


@dataclass(frozen=True)
class AudioFile:
    """One audio file of the dataset, with its class and (ESC-50 only) its fold."""

    path: Path
    class_name: str
    fold: int | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """A dataset's classes and files.

    ``classes`` is the default order (round-robin node assignment follows it); ``ids`` says
    what an integer class reference means: ESC-50's ``target``, else the position in ``classes``
    (procedural: built-in order; audiofolder: sorted folder names). ``files`` is sorted by path
    and empty for the procedural dataset, whose clips are synthesised.
    """

    name: str
    classes: tuple[str, ...]
    ids: Mapping[int, str]
    files: tuple[AudioFile, ...] = ()

    def resolve(self, ref: str | int, *, where: str) -> str:
        """The class name that ``ref`` (a name or an index) refers to; ``where`` starts the error."""
        if isinstance(ref, int):
            if ref not in self.ids:
                raise ConfigError(
                    f"{where} lists class index {ref}, but the '{self.name}' dataset's class indices are "
                    f"{min(self.ids)}..{max(self.ids)}. Use an index from that range or a class name."
                )
            return self.ids[ref]
        if ref not in self.classes:
            close = difflib.get_close_matches(ref, self.classes, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{where} lists '{ref}', which the '{self.name}' dataset does not have.{hint} "
                f"Available: {list(self.classes)}"
            )
        return ref


def index_dataset(data: DataSettings) -> DatasetIndex:
    """Index ``data.dataset``: class list and file list, from metadata and directory listings only."""
    if data.dataset == "procedural":
        return DatasetIndex("procedural", tuple(SOUND_CLASSES), dict(enumerate(SOUND_CLASSES)))
    root = dataset_root(data)
    return _esc50_index(root) if data.dataset == "esc50" else _audiofolder_index(root)


def dataset_root(data: DataSettings) -> Path:
    """``data.root`` made absolute (relative to the launch directory); it must be a directory."""
    layout = LAYOUTS[data.dataset]
    if data.root is None:
        raise ConfigError(
            f"data.dataset '{data.dataset}' reads audio files: set data.root to the folder that holds {layout}."
        )
    root = resolve_run_path(data.root)
    if not root.is_dir():
        raise DatasetError(
            f"data.root {root} is not a directory (relative paths resolve against the directory the run was "
            f"launched from). Point it at the folder that holds {layout}."
        )
    return root


def _esc50_index(root: Path) -> DatasetIndex:
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DatasetError(f"{meta} does not exist. The 'esc50' dataset's root holds {LAYOUTS['esc50']}.")
    with meta.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in ESC50_COLUMNS if column not in (reader.fieldnames or ())]
        if missing:
            raise DatasetError(
                f"{meta} has no column(s) {missing}. The 'esc50' dataset's root holds {LAYOUTS['esc50']}."
            )
        rows = list(reader)
    names: dict[int, str] = {}
    files = []
    for line, row in enumerate(rows, start=2):
        try:
            target, fold = int(row["target"]), int(row["fold"])
        except ValueError:
            raise DatasetError(
                f"{meta}, line {line}: target and fold must be integers, got {row['target']!r} and {row['fold']!r}."
            ) from None
        category = row["category"]
        if names.setdefault(target, category) != category:
            raise DatasetError(
                f"{meta}, line {line}: target {target} is '{category}' here but '{names[target]}' on an earlier "
                "line. Each target must name one category."
            )
        files.append(AudioFile(root / "audio" / row["filename"], category, fold))
    if not files:
        raise DatasetError(f"{meta} lists no clips. The 'esc50' dataset's root holds {LAYOUTS['esc50']}.")
    if len(set(names.values())) != len(names):
        raise DatasetError(f"{meta} gives one category two targets. Each category must have one target.")
    ids = dict(sorted(names.items()))
    return DatasetIndex("esc50", tuple(ids.values()), ids, tuple(sorted(files, key=lambda f: f.path)))


def _audiofolder_index(root: Path) -> DatasetIndex:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(
            f"{root} has no class folders. The 'audiofolder' dataset's root holds {LAYOUTS['audiofolder']}."
        )
    classes = tuple(folder.name for folder in folders)
    files = tuple(
        AudioFile(path, folder.name)
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in AUDIO_EXTENSIONS
    )
    return DatasetIndex("audiofolder", classes, dict(enumerate(classes)), files)
