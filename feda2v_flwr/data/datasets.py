"""What a dataset holds, before any audio is read: its classes and its files.

Six datasets: ``procedural`` (synthesised, nothing on disk), ``esc50`` (the official ESC-50
release), ``vegas`` (the original experiments' VEGAS layout, 10 fixed classes), ``vggsound``
(the official metadata csv + downloaded clips), ``audiofolder`` (one sub-folder per class) and
``precomputed`` (embedding arrays, one sub-folder per class). Class references in the config may
be names or integer indices; :meth:`DatasetIndex.resolve` turns both into names.
"""

from __future__ import annotations

import csv
import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from feda2v_flwr.config.paths import ConfigError, resolve_run_path
from feda2v_flwr.config.schema import DataSettings
from feda2v_flwr.data.audio_files import AUDIO_EXTENSIONS, EMBEDDING_EXTENSION, embedding_header
from feda2v_flwr.data.procedural import SOUND_CLASSES

log = logging.getLogger(__name__)

LAYOUTS = {  # what data.root must hold, for error messages
    "esc50": (
        "audio/*.wav and meta/esc50.csv, as in the official ESC-50 release "
        "(csv columns filename, fold, target, category, esc10, src_file, take)"
    ),
    "vegas": (
        "one folder per VEGAS class with its clips in audios/ (<root>/<class>/audios/*.wav; video_info.csv, "
        "img/ and videos/ may be there and are ignored); the classes are baby_cry, chainsaw, dog, drum, "
        "fireworks, helicopter, printer, rail_transport, snoring, water_flowing"
    ),
    "vggsound": (
        "the official vggsound.csv (rows youtube_id,start_seconds,label,split with split train or test) and "
        "the clips as <root>/<split>/audios/<youtube_id>_<start_seconds, 6 digits>.wav (or .flac)"
    ),
    "audiofolder": "one sub-folder of .wav/.flac/.ogg/.mp3 files per class (<root>/<class name>/*.wav)",
    "precomputed": (
        "one sub-folder of .npy files per class (<root>/<class name>/*.npy), each a float array (T, D) "
        "of the same shape"
    ),
}
ESC50_COLUMNS = ("filename", "fold", "target", "category")
# The original experiments' VEGAS classes; the position is the class index (kept when folders are absent).
VEGAS_CLASSES = (
    "baby_cry",
    "chainsaw",
    "dog",
    "drum",
    "fireworks",
    "helicopter",
    "printer",
    "rail_transport",
    "snoring",
    "water_flowing",
)
VGGSOUND_SPLITS = ("train", "test")
VGGSOUND_EXTENSIONS = (".wav", ".flac")


GROUP_SEPARATOR = "__"  # <group>__<rest>.wav: see file_group


class DatasetError(ValueError):
    """The data on disk does not match what the configuration expects; the message says what to fix."""


@dataclass(frozen=True)
class AudioFile:
    """One clip file of the dataset (audio, or a ``precomputed`` embedding), with its class,
    its fold (ESC-50 only) and its official split (VGGSound only: train or test)."""

    path: Path
    class_name: str
    fold: int | None = None
    official_split: str | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """A dataset's classes and files.

    ``classes`` is the default order (round-robin node assignment follows it); ``ids`` says
    what an integer class reference means: ESC-50's ``target``, VEGAS's fixed indices, VGGSound's
    position among the sorted labels of its csv, else the position in ``classes`` (procedural:
    built-in order; audiofolder, precomputed: sorted folder names). ``files`` is sorted by path
    and empty for the procedural dataset, whose clips are synthesised. ``precomputed`` only:
    ``embedding_shape`` (T, D) of every array, read from the header of ``embedding_source``.
    """

    name: str
    classes: tuple[str, ...]
    ids: Mapping[int, str]
    files: tuple[AudioFile, ...] = ()
    embedding_shape: tuple[int, int] | None = None
    embedding_source: Path | None = None

    def resolve(self, ref: str | int, *, where: str) -> str:
        """The class name that ``ref`` (a name or an index) refers to; ``where`` starts the error."""
        if isinstance(ref, int):
            if ref not in self.ids:
                indices = sorted(self.ids)
                contiguous = indices == list(range(indices[0], indices[-1] + 1))
                listed = f"{indices[0]}..{indices[-1]}" if contiguous else str(indices)
                raise ConfigError(
                    f"{where} lists class index {ref}, but the '{self.name}' dataset's class indices are "
                    f"{listed}. Use one of those indices or a class name."
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
    indexers = {
        "esc50": _esc50_index,
        "vegas": _vegas_index,
        "vggsound": _vggsound_index,
        "audiofolder": _audiofolder_index,
        "precomputed": _precomputed_index,
    }
    return indexers[data.dataset](root)


def dataset_root(data: DataSettings) -> Path:
    """``data.root`` made absolute (relative to the launch directory); it must be a directory."""
    layout = LAYOUTS[data.dataset]
    if data.root is None:  # no copy of the data on this machine (a deployment's server may have none)
        raise DatasetError(
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


def _vegas_index(root: Path) -> DatasetIndex:
    folders = {p.name for p in _class_folders(root)}
    ignored = sorted(folders - set(VEGAS_CLASSES))
    if ignored:
        log.warning(
            "%s: ignoring folder(s) %s, which are not VEGAS classes (%s)", root, ignored, ", ".join(VEGAS_CLASSES)
        )
    without_audios = [c for c in VEGAS_CLASSES if c in folders and not (root / c / "audios").is_dir()]
    if without_audios:
        log.warning("%s: class folder(s) %s have no audios/ folder; those classes are left out", root, without_audios)
    present = {i: c for i, c in enumerate(VEGAS_CLASSES) if c in folders and c not in without_audios}
    if not present:
        raise DatasetError(
            f"{root} holds none of the VEGAS class folders. The 'vegas' dataset's root holds {LAYOUTS['vegas']}."
        )
    files = tuple(
        AudioFile(path, class_name)
        for class_name in present.values()
        for path in sorted((root / class_name / "audios").iterdir())
        if path.suffix.lower() in AUDIO_EXTENSIONS
    )
    return DatasetIndex("vegas", tuple(present.values()), present, files)


def _vggsound_index(root: Path) -> DatasetIndex:
    meta = root / "vggsound.csv"
    if not meta.is_file():
        raise DatasetError(f"{meta} does not exist. The 'vggsound' dataset's root holds {LAYOUTS['vggsound']}.")
    on_disk = {split: _file_names(root / split / "audios") for split in VGGSOUND_SPLITS}
    labels: set[str] = set()
    files: list[AudioFile] = []
    missing: list[str] = []
    with meta.open(newline="") as handle:
        for line, row in enumerate(csv.reader(handle), start=1):
            if not any(field.strip() for field in row):
                continue
            if len(row) != 4:
                raise DatasetError(
                    f"{meta}, line {line}: expected 4 fields youtube_id,start_seconds,label,split but got {len(row)} "
                    f"({row!r}). Quote labels that contain commas."
                )
            youtube_id, start, label, split = (field.strip() for field in row)
            try:
                start_seconds = int(start)
            except ValueError:
                if line == 1:  # a header row; the official file has none
                    continue
                raise DatasetError(f"{meta}, line {line}: start_seconds must be an integer, got {start!r}.") from None
            if split not in VGGSOUND_SPLITS:
                raise DatasetError(f"{meta}, line {line}: split must be 'train' or 'test', got {split!r}.")
            labels.add(label)
            stem = f"{youtube_id}_{start_seconds:06d}"
            name = next((stem + ext for ext in VGGSOUND_EXTENSIONS if stem + ext in on_disk[split]), None)
            if name is None:
                missing.append(f"{split}/audios/{stem}.wav")
            else:
                files.append(AudioFile(root / split / "audios" / name, label, official_split=split))
    if missing:
        log.warning(
            "%s: %d of the %d clips listed in vggsound.csv have no audio file (VGGSound downloads always miss "
            "some videos); they are left out. First missing: %s",
            root,
            len(missing),
            len(missing) + len(files),
            ", ".join(missing[:3]),
        )
    if not files:
        raise DatasetError(
            f"None of the clips listed in {meta} is on disk. The 'vggsound' dataset's root holds {LAYOUTS['vggsound']}."
        )
    ids = dict(enumerate(sorted(labels)))
    present = {f.class_name for f in files}
    classes = tuple(label for label in ids.values() if label in present)
    return DatasetIndex("vggsound", classes, ids, tuple(sorted(files, key=lambda f: f.path)))


def _audiofolder_index(root: Path) -> DatasetIndex:
    classes, files = _folder_files(root, "audiofolder", AUDIO_EXTENSIONS)
    return DatasetIndex("audiofolder", classes, dict(enumerate(classes)), files)


def _precomputed_index(root: Path) -> DatasetIndex:
    classes, files = _folder_files(root, "precomputed", (EMBEDDING_EXTENSION,))
    for file in files:  # the first readable array sets the shape every other must have
        try:
            shape, dtype = embedding_header(file.path)
        except ValueError:
            continue  # reported (once) when a partition probes its files
        if len(shape) != 2 or not np.issubdtype(dtype, np.floating):
            raise DatasetError(embedding_mismatch(file.path, shape, dtype))
        return DatasetIndex("precomputed", classes, dict(enumerate(classes)), files, (shape[0], shape[1]), file.path)
    raise DatasetError(
        f"{root} holds no readable .npy file. The 'precomputed' dataset's root holds {LAYOUTS['precomputed']}."
    )


def embedding_mismatch(path: Path, shape: tuple[int, ...], dtype: np.dtype, index: DatasetIndex | None = None) -> str:
    """The error for an array that is not a float (T, D) array of the dataset's shape."""
    expected = (
        f"a float array of the shape (T, D) = {index.embedding_shape} of {index.embedding_source} (one T and one D "
        "per run)"
        if index is not None
        else "a float array (T, D)"
    )
    return (
        f"{path} holds a {dtype} array of shape {tuple(shape)}; every .npy file of the 'precomputed' dataset must be "
        f"{expected}. Re-save it as a float array (T, D) with np.save, or move it out of data.root."
    )


def file_group(path: Path) -> str:
    """The group a clip file belongs to under ``data.split_by: "groups"``: its name up to the
    first ``__`` (``bd_haus__007.flac`` -> ``bd_haus``), the whole stem when it has none."""
    return path.stem.split(GROUP_SEPARATOR, 1)[0]


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_files(root: Path, name: str, extensions: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[AudioFile, ...]]:
    """One class per sub-folder (sorted), with the sub-folder's files of the given extensions."""
    folders = _class_folders(root)
    if not folders:
        raise DatasetError(f"{root} has no class folders. The '{name}' dataset's root holds {LAYOUTS[name]}.")
    files = tuple(
        AudioFile(path, folder.name)
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.suffix.lower() in extensions
    )
    return tuple(folder.name for folder in folders), files


def _file_names(folder: Path) -> set[str]:
    """Names of the files in ``folder`` (one listing instead of a stat per csv row); empty if absent."""
    return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()
