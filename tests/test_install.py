"""The installed environment is the tested one: requirements/lock.txt pins every dependency of
pyproject.toml within its range, and what is installed here equals the lock."""

from __future__ import annotations

import importlib.metadata
import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from lockfile import locked_versions, normalise

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [
    Requirement(entry)
    for entry in PROJECT["dependencies"] + [e for extra in PROJECT["optional-dependencies"].values() for e in extra]
]
# The packages whose versions decide what a run computes or how Flower behaves.
MAIN = [normalise(r.name) for r in REQUIREMENTS] + ["ray", "grpcio", "protobuf", "tokenizers"]


def test_the_lock_pins_every_dependency_within_its_range():
    pins = locked_versions()
    for requirement in REQUIREMENTS:
        name = normalise(requirement.name)
        assert name in pins, f"requirements/lock.txt lacks {name}: run scripts/lock.sh"
        assert requirement.specifier.contains(Version(pins[name]), prereleases=True), (
            f"lock {name}=={pins[name]} is outside pyproject's {requirement}: run scripts/lock.sh"
        )
    assert "ray" in pins  # flwr[simulation]'s extra is resolved too


def test_flwr_is_one_exact_version():
    flwr = next(r for r in REQUIREMENTS if r.name == "flwr")
    assert str(flwr.specifier) == f"=={locked_versions()['flwr']}"
    assert flwr.extras == {"simulation"}


def test_torch_is_locked_to_the_cpu_build_and_pyproject_keeps_a_range():
    torch = next(r for r in REQUIREMENTS if r.name == "torch")
    assert not str(torch.specifier).startswith("=="), "GPU users keep their own torch: a range, not a pin"
    assert locked_versions()["torch"] == "2.13.0+cpu"


@pytest.mark.parametrize("name", MAIN)
def test_installed_versions_equal_the_lock(name):
    locked, installed = locked_versions()[name], importlib.metadata.version(name)
    if name == "torch" and installed != locked and not os.environ.get("FEDA2V_STRICT_LOCK"):
        pytest.skip(f"torch {installed} is this environment's own build (the lock's is {locked}; CI is strict)")
    assert installed == locked, f"{name} {installed} is installed, the lock says {locked}: bash scripts/install.sh"
