"""``feda2v-data``: fetch a dataset into the layout its ``data.dataset`` reads, verified, or
build one from recordings that install offline (``prepare``: see ``prepare.py``).

    feda2v-data download esc50 --root data/ESC-50-master
    feda2v-data download esc50 --root data/ESC-50-master --archive ~/ESC-50-master.zip
    feda2v-data prepare sonic-pi --root data/sonic-pi
    feda2v-data prepare espeak --root data/espeak

ESC-50: the official GitHub archive is downloaded (or read from ``--archive``), its md5 is
compared with the published ones, ``audio/`` and ``meta/`` are extracted into ``--root``, and the
result is verified: ``meta/esc50.csv`` has its published md5 and every clip it lists is there.
GitHub rebuilds the archive's bytes when the repository changes, so an archive whose md5 is not
a published one is accepted only when its extracted files verify. Running it again on a verified
copy does nothing; an incomplete ``audio/`` or ``meta/`` in ``--root`` is replaced.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tqdm import tqdm

from feda2v_flwr.data.prepare import (
    SONIC_PI_SAMPLES,
    EspeakSettings,
    PrepareError,
    SonicPiSettings,
    prepare_espeak,
    prepare_sonic_pi,
)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
ESC50_ARCHIVE = "ESC-50-master.zip"
# Published md5s of ESC-50-master.zip (GitHub's archive of the master branch):
# - soundata, soundata/datasets/esc50.py, REMOTES["all"].checksum (github.com/soundata/soundata);
# - AminJun/torchaudio.dataset.ESC-50, ESC-50.py, ESC_50.zip_md5 (an older build of the archive).
ESC50_ARCHIVE_MD5S = ("7771e4b9d86d0945acce719c7a59305a", "70cce0ef1196d802ae62ce40db11b620")
# md5 of meta/esc50.csv, published identically by soundata's ESC-50 index v2.0.0
# (soundata/datasets/indexes/esc50_index.json, "metadata") and AminJun/torchaudio.dataset.ESC-50
# (ESC-50.py, meta["md5"]).
ESC50_META_MD5 = "54a0d0055a10bb7df84ad340a148722e"
ESC50_CLIPS = 2000  # 50 classes x 40 clips
ESC50_FOLDERS = ("audio", "meta")  # what the 'esc50' dataset reads; the rest of the archive is left out
NETWORK_ERRORS = (URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class DownloadError(RuntimeError):
    """A download that cannot complete; the message says what to do."""


def download_esc50(root: Path, archive: Path | None = None, keep_archive: bool = False) -> str:
    """Put a verified ESC-50 into ``root`` (``audio/*.wav`` + ``meta/esc50.csv``); returns what was done."""
    if verify_esc50(root) is None:
        return f"ESC-50 is already in {root} and verified ({ESC50_CLIPS} clips, meta/esc50.csv md5); nothing to do."
    root.mkdir(parents=True, exist_ok=True)
    downloaded = archive is None
    if archive is None:
        archive = root / ESC50_ARCHIVE
        if not archive.is_file():
            _fetch(ESC50_URL, archive, root)
    elif not archive.is_file():
        raise DownloadError(f"--archive {archive} is not a file. Give the path of the ESC-50-master.zip you copied.")
    md5 = file_md5(archive)
    staging = root / ".esc50-extracting"
    try:
        problem = _extract(archive, staging) or verify_esc50(staging)
        if problem is not None:
            if downloaded:
                archive.unlink()
            known = "is a published one" if md5 in ESC50_ARCHIVE_MD5S else "matches none of the published ones"
            what = "It was deleted; run the command again to download it anew" if downloaded else "Copy it again"
            raise DownloadError(
                f"{archive} failed verification: its md5 {md5} {known} ({', '.join(ESC50_ARCHIVE_MD5S)}) and "
                f"{problem}. The file is damaged or incomplete. {what}, or download it from {ESC50_URL} on another "
                "machine."
            )
        for folder in ESC50_FOLDERS:
            target = root / folder
            if target.exists():
                shutil.rmtree(target)
            (staging / folder).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if downloaded and not keep_archive:
        archive.unlink()
    note = (
        "the archive's md5 is a published one"
        if md5 in ESC50_ARCHIVE_MD5S
        else f"the archive's md5 {md5} is not a published one (GitHub rebuilds archives), but its files verify"
    )
    return f"ESC-50 is ready in {root}: {ESC50_CLIPS} clips and meta/esc50.csv verified; {note}."


def verify_esc50(root: Path) -> str | None:
    """What is wrong with the ESC-50 copy in ``root``, or ``None`` when it is complete: the
    published md5 of ``meta/esc50.csv``, every clip it lists in ``audio/``, 2000 clips in all."""
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        return "meta/esc50.csv is missing"
    md5 = file_md5(meta)
    if md5 != ESC50_META_MD5:
        return f"meta/esc50.csv has md5 {md5}, not the published {ESC50_META_MD5}"
    with meta.open(newline="") as handle:
        listed = [row["filename"] for row in csv.DictReader(handle)]
    audio = root / "audio"
    present = {p.name for p in audio.iterdir() if p.suffix == ".wav"} if audio.is_dir() else set()
    absent = [name for name in listed if name not in present]
    if absent:
        return f"{len(absent)} of the {len(listed)} clips meta/esc50.csv lists are not in audio/ (e.g. {absent[0]})"
    if len(present) != ESC50_CLIPS:
        return f"audio/ holds {len(present)} .wav files, not {ESC50_CLIPS}"
    return None


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, target: Path, root: Path) -> None:
    """Download ``url`` to ``target`` with a progress bar; a partial file never keeps ``target``'s name."""
    partial = target.with_name(target.name + ".part")
    try:
        with urlopen(url, timeout=60) as response, partial.open("wb") as out:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name) as progress:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    progress.update(len(block))
        partial.replace(target)
    except HTTPError as err:
        raise DownloadError(
            f"{url} answered HTTP {err.code} ({err.reason}). Download the archive in a browser and run this command "
            f"again with --archive PATH, or point data.root at an existing copy of ESC-50."
        ) from None
    except NETWORK_ERRORS as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(
            f"Cannot download {url}: {reason}. This machine has no network (or cannot reach GitHub). Download the "
            f"archive on a connected machine from {url}, copy it here and run "
            f"`feda2v-data download esc50 --root {root} --archive PATH`, or point data.root at an existing copy "
            "of ESC-50 (audio/*.wav + meta/esc50.csv)."
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _extract(archive: Path, staging: Path) -> str | None:
    """Extract the archive's ``audio/`` and ``meta/`` (below its single top folder, if it has
    one) into ``staging``; returns what is wrong when it is not a sound zip archive."""
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = [n for n in bundle.namelist() if not n.endswith("/")]
            tops = {PurePosixPath(n).parts[0] for n in names}
            strip = 1 if len(tops) == 1 and all(len(PurePosixPath(n).parts) > 1 for n in names) else 0
            for name in names:
                parts = PurePosixPath(name).parts[strip:]
                if ".." in parts or PurePosixPath(name).is_absolute() or parts[0] not in ESC50_FOLDERS:
                    continue
                target = staging.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(name) as source, target.open("wb") as out:  # checks each member's CRC
                    shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        return f"it is not a readable zip archive ({err})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="feda2v-data", description="Fetch datasets for feda2v-flwr runs.")
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="download, verify and extract a dataset")
    datasets = download.add_subparsers(dest="dataset", required=True)
    esc50 = datasets.add_parser(
        "esc50",
        help="ESC-50 (about 600 MB) from GitHub",
        description=f"Download {ESC50_URL}, verify it and extract audio/ and meta/ into --root "
        "(the layout of data.dataset 'esc50'; set data.root to the same folder).",
    )
    esc50.add_argument("--root", type=Path, required=True, help="folder that will hold audio/ and meta/")
    esc50.add_argument("--archive", type=Path, help="verify and extract this ESC-50-master.zip instead of downloading")
    esc50.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip in --root")
    _add_prepare_commands(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            message = _prepare(args)
        else:
            message = download_esc50(args.root, args.archive, args.keep_archive)
    except (DownloadError, PrepareError, OSError) as err:
        print(f"feda2v-data: {err}", file=sys.stderr)
        return 1
    print(message)
    return 0


def _add_prepare_commands(commands) -> None:  # noqa: ANN001 (argparse's private subparsers action)
    prepare = commands.add_parser("prepare", help="build a dataset of real recordings that install offline")
    datasets = prepare.add_subparsers(dest="dataset", required=True)
    sonic = datasets.add_parser(
        "sonic-pi",
        help="10 instrument families from Debian's sonic-pi-samples (CC0), augmented",
        description="Augmented clips of Debian's sonic-pi-samples (apt-get install sonic-pi-samples) in the "
        "audiofolder layout: one folder per sample family. Use data.split_by 'groups'.",
    )
    sonic.add_argument("--root", type=Path, required=True, help="new or empty folder for the dataset")
    sonic.add_argument("--source", type=Path, default=SONIC_PI_SAMPLES, help="folder of the samples (*.flac)")
    sonic.add_argument("--clips-per-class", type=int, default=SonicPiSettings.clips_per_class)
    sonic.add_argument("--seconds", type=float, default=SonicPiSettings.seconds, help="length of every clip")
    sonic.add_argument("--seed", type=int, default=SonicPiSettings.seed)
    speech = datasets.add_parser(
        "espeak",
        help="10 spoken command words from espeak-ng, many voices",
        description="Ten command words spoken by espeak-ng (apt-get install espeak-ng) with several voices, "
        "speeds and pitches, in the audiofolder layout. Use data.split_by 'groups' (a voice is a group).",
    )
    speech.add_argument("--root", type=Path, required=True, help="new or empty folder for the dataset")
    speech.add_argument("--speakers", type=int, default=EspeakSettings.speakers, help="voices (accent+variant)")
    speech.add_argument("--takes", type=int, default=EspeakSettings.takes, help="takes of each word per voice")
    speech.add_argument("--seed", type=int, default=EspeakSettings.seed)


def _prepare(args: argparse.Namespace) -> str:
    if args.dataset == "sonic-pi":
        if args.clips_per_class < 3 or args.seconds <= 0.2:
            raise PrepareError("--clips-per-class must be at least 3 and --seconds above 0.2.")
        return prepare_sonic_pi(args.root, SonicPiSettings(args.clips_per_class, args.seconds, args.seed), args.source)
    if args.takes < 1:
        raise PrepareError("--takes must be at least 1.")
    return prepare_espeak(args.root, EspeakSettings(args.speakers, args.takes, args.seed))


if __name__ == "__main__":
    sys.exit(main())
