"""The Docker files in docker/, checked without a Docker engine: one flwr version everywhere, the
build inputs, and every container command equal to the one feda2v_flwr/deploy/commands.py builds
(the flags the loopback deployment tests run)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from feda2v_flwr.deploy.commands import (
    DEFAULT_NODE_PORT,
    DEFAULT_SUPERLINK_PORT,
    Tls,
    node_config_string,
    superexec_command,
    superlink_command,
    supernode_command,
)
from lockfile import locked_versions

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
FLWR_VERSION = locked_versions()["flwr"]  # tests/test_install.py: the installed flwr is this one
DEPENDENCIES = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

# Official image -> the program its ENTRYPOINT runs (the compose commands leave it out).
PROGRAMS = {
    "superlink": superlink_command()[0],
    "supernode": supernode_command(superlink="superlink", node_config="")[0],
    "superexec": superexec_command(appio_address="superlink")[0],
}
# The combinations docker/README.md tells users to start, in `-f` order.
VARIANTS = {
    "insecure": ["compose.yml"],
    "state": ["compose.yml", "compose.state.yml"],
    "tls": ["compose.yml", "compose.tls.yml"],
    "tls-state": ["compose.yml", "compose.tls.yml", "compose.tls-state.yml"],
}
SUPERLINK_TLS = Tls(Path("/certs/ca.crt"), Path("/certs/superlink.crt"), Path("/certs/superlink.key"))


def compose(*files: str) -> dict:
    """The files merged as `docker compose -f a -f b` merges them, for what is checked here:
    mappings merge key by key, a later `command` replaces the earlier one whole, other lists add up."""
    merged: dict = {}
    for name in files:
        merged = _merge(merged, yaml.safe_load((DOCKER / name).read_text()))
    return merged


def _merge(base: object, overlay: object, key: str = "") -> object:
    if isinstance(base, dict) and isinstance(overlay, dict):
        result = dict(base)
        for name, value in overlay.items():
            result[name] = _merge(base[name], value, name) if name in base else value
        return result
    if isinstance(base, list) and isinstance(overlay, list) and key != "command":
        return base + [item for item in overlay if item not in base]
    return overlay


def expected_commands(variant: str, nodes: int) -> dict[str, list[str]]:
    """Service -> its argv without the program, from the builders (node N holds partition N-1)."""
    tls = variant.startswith("tls")
    database = "/state/state.db" if variant.endswith("state") else None
    superlink = f"superlink:{DEFAULT_SUPERLINK_PORT}"
    commands = {
        "superlink": superlink_command(
            host="0.0.0.0",
            port=DEFAULT_SUPERLINK_PORT,
            tls=SUPERLINK_TLS if tls else None,
            node_auth=tls,
            database=database,
            isolation="process",
        ),
        "superexec-serverapp": superexec_command(appio_address=superlink, ca=SUPERLINK_TLS.ca if tls else None),
    }
    for number in range(1, nodes + 1):
        node_config = node_config_string(number - 1, nodes, data_dir="/data", cache_dir="/cache", state_dir="/state")
        commands[f"supernode-{number}"] = supernode_command(
            superlink=superlink,
            node_config=node_config,
            host="0.0.0.0",
            port=DEFAULT_NODE_PORT,
            tls=Tls(SUPERLINK_TLS.ca) if tls else None,
            auth_key=Path(f"/certs/nodes/node-{number - 1}") if tls else None,
            isolation="process",
        )
        commands[f"superexec-clientapp-{number}"] = superexec_command(
            appio_address=f"supernode-{number}:{DEFAULT_NODE_PORT}"
        )
    return {service: command[1:] for service, command in commands.items()}


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split()[0].upper(), line.split(maxsplit=1)[1]) for line in joined.splitlines() if line.strip()]


def copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for op, arguments in instructions(dockerfile):
        if op == "COPY":
            paths = [word for word in shlex.split(arguments) if not word.startswith("--")]
            sources += paths[:-1]  # the last one is the destination
    return sources


def mounts(service: dict) -> dict[str, str]:
    """Container path -> source (a host path or a named volume) of a service's short-syntax volumes."""
    return {volume.split(":")[1]: volume.split(":")[0] for volume in service.get("volumes", [])}


def test_one_flwr_version_everywhere():
    env = dict(
        line.split("=", 1) for line in (DOCKER / ".env").read_text().splitlines() if line and not line.startswith("#")
    )
    assert env["FLWR_VERSION"] == FLWR_VERSION
    flwr = next(Requirement(entry) for entry in DEPENDENCIES if Requirement(entry).name == "flwr")
    assert str(flwr.specifier) == f"=={FLWR_VERSION}"
    for image in PROGRAMS:
        assert ("ARG", f"FLWR_VERSION={FLWR_VERSION}") in instructions(DOCKER / f"{image}.Dockerfile")
    services = compose("compose.yml")["services"]
    for name, service in services.items():
        assert "image" not in service, f"{name}: every service builds from a docker/*.Dockerfile"
        assert re.fullmatch(r"\$\{FLWR_VERSION(:\?[^}]*)?\}", service["build"]["args"]["FLWR_VERSION"]), name
    for overlay in DOCKER.glob("compose.*.yml"):
        for name, service in yaml.safe_load(overlay.read_text())["services"].items():
            assert "image" not in service, f"{overlay.name}: {name} replaces its image"


@pytest.mark.parametrize("image", PROGRAMS)
def test_each_image_builds_on_its_official_flower_image(image):
    steps = instructions(DOCKER / f"{image}.Dockerfile")
    froms = [arguments for op, arguments in steps if op == "FROM"]
    assert froms == [f"flwr/{image}:${{FLWR_VERSION}}"]
    assert steps.index(("ARG", f"FLWR_VERSION={FLWR_VERSION}")) < steps.index(("FROM", froms[0]))
    entrypoints = [json.loads(arguments) for op, arguments in steps if op == "ENTRYPOINT"]
    assert entrypoints == [[PROGRAMS[image]]]
    env = dict(word.split("=", 1) for op, arguments in steps if op == "ENV" for word in shlex.split(arguments))
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    if image == "superexec":
        assert env["HF_HUB_OFFLINE"] == "1"
        assert ("WORKDIR", "/app") in steps


def test_build_inputs_exist_and_only_they_enter_the_build_context():
    for services in (yaml.safe_load(path.read_text())["services"] for path in DOCKER.glob("compose*.yml")):
        for name, service in services.items():
            if "dockerfile" not in service.get("build", {}):
                continue
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: the Dockerfiles copy paths relative to the repository root"
            assert (context / service["build"]["dockerfile"]).is_file(), name
    for image in PROGRAMS:
        dockerfile = DOCKER / f"{image}.Dockerfile"
        sources = copy_sources(dockerfile)
        assert all((ROOT / source).exists() for source in sources), sources
        ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
        rules = [line for line in ignore if line and not line.startswith("#")]
        assert rules[0] == "*"  # everything else stays out of the context (.venv, outputs, data, certs)
        assert {rule[1:] for rule in rules if rule.startswith("!")} == set(sources)


def test_superexec_copies_what_installing_the_project_needs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources = copy_sources(DOCKER / "superexec.Dockerfile")
    packages = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == {"feda2v_flwr", "strategies"}
    requirements = {"requirements/lock.txt", "requirements/no-deps.txt"}
    assert set(sources) == packages | {"pyproject.toml", pyproject["project"]["readme"]} | requirements
    runs = [arguments for op, arguments in instructions(DOCKER / "superexec.Dockerfile") if op == "RUN"]
    assert any("pip install --no-cache-dir --no-deps -r /app/project/requirements/no-deps.txt" in r for r in runs)


def test_superexec_installs_the_locked_torch_from_the_index_then_the_project_at_the_lock_without_flwr(tmp_path):
    steps = instructions(DOCKER / "superexec.Dockerfile")
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in steps
    public_torch = locked_versions()["torch"].split("+")[0]  # the index picks the build (cpu, cu126...)
    assert ("ARG", f"TORCH_VERSION={public_torch}") in steps
    runs = [arguments for op, arguments in steps if op == "RUN"]
    torch_step = next(i for i, run in enumerate(runs) if '--index-url "${TORCH_INDEX_URL}"' in run)
    project_step = next(i for i, run in enumerate(runs) if "/app/project" in run and "pip install" in run)
    assert torch_step < project_step
    assert '"torch==${TORCH_VERSION}"' in runs[torch_step]
    torch = next(Requirement(entry) for entry in DEPENDENCIES if Requirement(entry).name == "torch")
    assert torch.specifier.contains(public_torch)

    stripped = tmp_path / "project"
    (stripped / "requirements").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", stripped / "pyproject.toml")
    shutil.copy(ROOT / "requirements" / "lock.txt", stripped / "requirements" / "lock.txt")
    install = runs[project_step].split("&& python -m pip install")[0].replace("/app/project", str(stripped))
    subprocess.run(install.replace("/tmp/constraints.txt", str(tmp_path / "constraints.txt")), shell=True, check=True)
    assert "--constraint /tmp/constraints.txt /app/project" in runs[project_step]
    left = tomllib.loads((stripped / "pyproject.toml").read_text())["project"]["dependencies"]
    assert left == [entry for entry in DEPENDENCIES if Requirement(entry).name != "flwr"]
    constraints = (tmp_path / "constraints.txt").read_text()
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    assert constraints == "".join(
        line + "\n" for line in lock.splitlines() if not line.startswith(("flwr==", "torch=="))
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_command_is_the_one_the_builders_make(variant):
    services = compose(*VARIANTS[variant])["services"]
    nodes = sum(name.startswith("supernode-") for name in services)
    assert nodes >= 2
    assert {name: service["command"] for name, service in services.items()} == expected_commands(variant, nodes)


@pytest.mark.parametrize("variant", VARIANTS)
def test_paths_in_commands_are_mounted_and_services_start_after_what_they_dial(variant):
    for name, service in compose(*VARIANTS[variant])["services"].items():
        command = service["command"]
        for path in (argument for argument in command if argument.startswith("/")):
            assert any(Path(path).is_relative_to(target) for target in mounts(service)), f"{name}: {path}"
        for flag in ("--superlink", "--runtime-api-address"):
            if flag in command:
                dialled = command[command.index(flag) + 1].split(":")[0]
                assert dialled in service["depends_on"], f"{name} dials {dialled}"


def test_node_folders_are_mounted_where_the_clientapps_run():
    services = compose("compose.yml")["services"]
    node_caches = set()
    for number in (1, 2):
        volumes = mounts(services[f"superexec-clientapp-{number}"])
        assert volumes["/data"] == f"../data/node-{number}"
        assert f"../data/node-{number}:/data:ro" in services[f"superexec-clientapp-{number}"]["volumes"]
        node_caches |= {volumes["/cache"], volumes["/state"]}
    assert len(node_caches) == 4  # no two nodes share a cache or a state volume
    assert node_caches <= set(compose("compose.yml")["volumes"])
    assert mounts(services["superexec-serverapp"])["/outputs"].startswith("../outputs")


def test_tls_serverapp_superexec_trusts_the_deployment_ca():
    serverapp = compose(*VARIANTS["tls"])["services"]["superexec-serverapp"]
    assert "--insecure" not in serverapp["command"]  # the SuperLink's Runtime API shares its TLS port
    assert mounts(serverapp)[str(SUPERLINK_TLS.ca)] == "../certs/ca.crt"


def test_superlink_port_is_published_on_the_host():
    superlink = compose("compose.yml")["services"]["superlink"]
    assert superlink["ports"] == [f"127.0.0.1:{DEFAULT_SUPERLINK_PORT}:{DEFAULT_SUPERLINK_PORT}"]
    assert f"--superlink 127.0.0.1:{DEFAULT_SUPERLINK_PORT}" in (DOCKER / "README.md").read_text()


def test_gpu_overlay_gives_the_training_containers_gpus_and_cuda_torch():
    base = compose("compose.yml")["services"]
    services = compose("compose.yml", "compose.gpu.yml")["services"]
    superexecs = sorted(name for name in base if name.startswith("superexec-"))
    assert superexecs == ["superexec-clientapp-1", "superexec-clientapp-2", "superexec-serverapp"]
    assert sorted(yaml.safe_load((DOCKER / "compose.gpu.yml").read_text())["services"]) == superexecs
    for name in superexecs:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices), name
        arguments = services[name]["build"]["args"]
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", arguments["TORCH_INDEX_URL"])
        assert arguments["FLWR_VERSION"] == base[name]["build"]["args"]["FLWR_VERSION"]  # merged, not replaced
        assert services[name]["command"] == base[name]["command"]


def test_readme_names_each_compose_file_and_each_exists():
    named = set(re.findall(r"docker/(compose[\w.-]*\.yml)", (DOCKER / "README.md").read_text()))
    assert named == {path.name for path in DOCKER.glob("compose*.yml")}
    assert {name for files in VARIANTS.values() for name in files} | {"compose.gpu.yml"} == named


def test_each_container_sees_only_its_own_keys():
    services = compose(*VARIANTS["tls-state"])["services"]
    certificate_sources = {
        name: {source for source in mounts(service).values() if source.startswith("../certs")}
        for name, service in services.items()
    }
    assert certificate_sources["superlink"] == {"../certs/ca.crt", "../certs/superlink.crt", "../certs/superlink.key"}
    assert certificate_sources["superexec-serverapp"] == {"../certs/ca.crt"}
    for number in (1, 2):
        assert certificate_sources[f"supernode-{number}"] == {"../certs/ca.crt", f"../certs/nodes/node-{number - 1}"}
        assert certificate_sources[f"superexec-clientapp-{number}"] == set()
    assert not any("ca.key" in source for sources in certificate_sources.values() for source in sources)
