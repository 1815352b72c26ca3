"""``feda2v-data download esc50`` on a small fake archive served from a file:// URL: download,
verification, extraction into the 'esc50' layout, idempotence, offline and damaged archives."""

from __future__ import annotations

import zipfile
from pathlib import Path
from urllib.error import URLError

import pytest

from conftest import tiny_config, write_clip
from feda2v_flwr.data import download, federation_classes
from feda2v_flwr.data.download import file_md5, main

CLASSES = {0: "dog", 1: "rooster"}


@pytest.fixture
def fake_esc50(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 4-clip ESC-50-master.zip laid out like GitHub's, with the module's URL, archive md5,
    csv md5 and clip count pointed at it."""
    source = tmp_path / "source" / "ESC-50-master"
    lines = ["filename,fold,target,category,esc10,src_file,take"]
    for target, category in CLASSES.items():
        for fold in (1, 2):
            name = f"{fold}-{100 + target}-A-{target}.wav"
            write_clip(source / "audio" / name, seed=10 * target + fold)
            lines.append(f"{name},{fold},{target},{category},False,{100 + target},A")
    (source / "meta").mkdir()
    (source / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
    (source / "README.md").write_text("not extracted")
    archive = tmp_path / "ESC-50-master.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(source.rglob("*")):
            bundle.write(path, path.relative_to(source.parent).as_posix())
    monkeypatch.setattr(download, "ESC50_URL", archive.as_uri())
    monkeypatch.setattr(download, "ESC50_ARCHIVE_MD5S", (file_md5(archive),))
    monkeypatch.setattr(download, "ESC50_META_MD5", file_md5(source / "meta" / "esc50.csv"))
    monkeypatch.setattr(download, "ESC50_CLIPS", 4)
    return archive


def test_download_verifies_extracts_the_esc50_layout_and_is_idempotent(fake_esc50, tmp_path, capsys):
    root = tmp_path / "data" / "ESC-50-master"
    assert main(["download", "esc50", "--root", str(root)]) == 0
    assert "ESC-50 is ready" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["audio", "meta"]  # no archive, no README, no staging
    assert len(list((root / "audio").glob("*.wav"))) == 4
    config = tiny_config(data={"dataset": "esc50", "root": str(root), "classes": None})
    assert federation_classes(config) == ["dog", "rooster"]  # the layout the 'esc50' dataset reads

    fake_esc50.unlink()  # a second run must not download
    assert main(["download", "esc50", "--root", str(root)]) == 0
    assert "already in" in capsys.readouterr().out


def test_a_copied_archive_is_verified_and_extracted_and_kept(fake_esc50, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "urlopen", _offline)
    root = tmp_path / "esc"
    assert main(["download", "esc50", "--root", str(root), "--archive", str(fake_esc50)]) == 0
    assert (root / "meta" / "esc50.csv").is_file() and fake_esc50.is_file()


def test_an_archive_github_rebuilt_is_accepted_when_its_files_verify(fake_esc50, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "ESC50_ARCHIVE_MD5S", ("0" * 32,))
    assert main(["download", "esc50", "--root", str(tmp_path / "esc"), "--keep-archive"]) == 0
    assert "is not a published one" in capsys.readouterr().out
    assert (tmp_path / "esc" / "ESC-50-master.zip").is_file()


def test_offline_is_one_clear_message_and_exit_code_1(fake_esc50, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "urlopen", _offline)
    root = tmp_path / "esc"
    assert main(["download", "esc50", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "no network" in err and "--archive PATH" in err and "data.root" in err and download.ESC50_URL in err
    assert "Traceback" not in err
    assert list(root.iterdir()) == []  # no partial file left


def test_a_damaged_download_is_deleted_and_fails(fake_esc50, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "ESC50_ARCHIVE_MD5S", ("0" * 32,))
    monkeypatch.setattr(download, "ESC50_META_MD5", "f" * 32)  # the extracted csv no longer verifies
    root = tmp_path / "esc"
    assert main(["download", "esc50", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "failed verification" in err and "matches none of the published ones" in err and "deleted" in err
    assert list(root.iterdir()) == []  # archive and staging removed, nothing extracted

    truncated = tmp_path / "copied.zip"
    truncated.write_bytes(fake_esc50.read_bytes()[:500])
    assert main(["download", "esc50", "--root", str(root), "--archive", str(truncated)]) == 1
    assert "not a readable zip archive" in capsys.readouterr().err
    assert truncated.is_file()  # the user's own copy is never deleted


def test_verify_names_what_is_missing(fake_esc50, tmp_path):
    root = tmp_path / "esc"
    assert main(["download", "esc50", "--root", str(root)]) == 0
    assert download.verify_esc50(root) is None
    next((root / "audio").glob("*.wav")).unlink()
    assert "1 of the 4 clips meta/esc50.csv lists are not in audio/" in download.verify_esc50(root)
    assert download.verify_esc50(tmp_path / "nothing") == "meta/esc50.csv is missing"


def _offline(*args, **kwargs):
    raise URLError("[Errno -3] Temporary failure in name resolution")
