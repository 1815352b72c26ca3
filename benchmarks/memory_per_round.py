"""Does resident memory stay flat across rounds of the default simulation?

Runs ``configs/default.json`` (5 nodes) for ``--rounds`` rounds (default 12) through the
project's launcher (``feda2v_flwr.launch.run_simulation``: own SuperLink, own ``FLWR_HOME`` and
output folder in a temporary directory) while a sampler thread records, every ``--interval``
seconds, the resident set size (RSS) of every process the run spawns, grouped by kind (from the
command line):

- ``server``: ``flwr-simulation``, the process that runs the ServerApp (strategy, server
  generator, fine-tuning, checkpoints) and drives the Ray backend;
- ``clients``: Ray worker processes that serve the ClientApp actors (``ray::ClientAppActor...``,
  summed; the nodes' ``ClientTask``s live there);
- ``superlink``: ``flower-superlink``; ``superexec``: ``flower-superexec``;
- ``ray_system``: raylet, gcs_server, Ray's Python helpers (dashboard, log monitor, agents) and
  idle Ray workers (``ray::IDLE``);
- ``wandb``: the offline W&B service; ``other``: anything else below this process.

Short-lived ``flwr`` CLI calls (``flwr run`` / ``flwr ls``) are recorded as ``cli`` and left out
of the total. Beside RSS it records, from ``/proc/<pid>/status``, ``RssAnon`` (``anon``: the
private heap, where tensors, arrays and Python objects live) and ``RssShmem`` (``shmem``: shared
memory the process has touched, mostly Ray's object store). RSS counts shared pages once per
process, so the total overstates the machine's memory use; the benchmark is about its growth.

Samples are mapped to rounds by watching the run's ``metrics.jsonl``: the end of round r is the
first sample taken after its ``evaluate`` line appeared (its ``round`` line when the round has
no evaluation). The report gives, per round, RSS (and anon) at the end of the round per kind and
in total, the peak total RSS during the round, and the growth from round 2 to round 10 and to the last round.

After the run it checks that no process of the run is left (SuperLink, simulation, Ray) and
lists any ``flower-superlink`` / ``raylet`` / ``ray::`` process still on the machine.

Usage: ``python benchmarks/memory_per_round.py [--rounds 12] [--json outputs/benchmarks/memory_per_round.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from feda2v_flwr.config.paths import PROJECT_ROOT
from feda2v_flwr.launch import run_simulation

KINDS = ("server", "clients", "superlink", "superexec", "ray_system", "wandb", "other")
LEFTOVER_MARKERS = ("flower-superlink", "flower-superexec", "flwr-simulation", "raylet", "gcs_server", "ray::")
MEASURES = ("rss", "anon", "shmem")
MB = 1e6


def process_kind(cmdline: list[str]) -> str:
    """The kind of one process of the run, from its command line."""
    joined = " ".join(cmdline)
    first = cmdline[0] if cmdline else ""
    if "raylet" in first or "gcs_server" in first:  # before the worker test: raylet's arguments name worker scripts
        return "ray_system"
    if first.startswith("ray::"):  # ray::ClientAppActor..., ray::IDLE (no actor yet), ray::DashboardAgent, ...
        return "clients" if first.startswith("ray::ClientAppActor") else "ray_system"
    if "flower-superlink" in joined:
        return "superlink"
    if "flower-superexec" in joined:
        return "superexec"
    if "flwr-simulation" in joined:
        return "server"
    if "/ray/" in joined:  # Ray's helpers, and workers still starting (default_worker.py: no actor yet)
        return "ray_system"
    if "wandb" in joined:
        return "wandb"
    if Path(first).name == "flwr" or (len(cmdline) > 1 and Path(cmdline[1]).name == "flwr"):
        return "cli"
    return "other"


@dataclass
class Sampler:
    """Samples RSS per process kind of this process's descendants and follows ``metrics.jsonl``."""

    metrics_path: Path
    interval: float
    start: float = field(default_factory=time.time)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # metrics lines: t, round, phase, sample index
    seen: dict[int, dict[str, Any]] = field(default_factory=dict)  # pid -> kind, cmdline, create_time
    _stop: threading.Event = field(default_factory=threading.Event)
    _offset: int = 0

    def run(self) -> None:
        while not self._stop.is_set():
            new_lines = self._read_metrics()
            index = len(self.samples)
            self.samples.append(self._sample())
            for line in new_lines:
                self.events.append({"t": self.samples[-1]["t"], "sample": index, **line})
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()

    def _read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        with open(self.metrics_path) as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next tick
        self._offset += len(complete.encode())
        lines = [json.loads(line) for line in complete.splitlines() if line.strip()]
        return [{"round": line.get("round"), "phase": line.get("phase")} for line in lines]

    def _processes(self) -> list[psutil.Process]:
        """Descendants now, plus processes seen before that outlived their parent (re-parented)."""
        found = {p.pid: p for p in psutil.Process().children(recursive=True)}
        for pid, info in self.seen.items():
            if pid not in found:
                try:
                    process = psutil.Process(pid)
                    if process.create_time() == info["create_time"]:
                        found[pid] = process
                except psutil.NoSuchProcess:
                    pass
        return list(found.values())

    def _sample(self) -> dict[str, Any]:
        sums = {measure: dict.fromkeys((*KINDS, "cli"), 0) for measure in MEASURES}
        counts = dict.fromkeys((*KINDS, "cli"), 0)
        per_process: dict[str, dict[str, int]] = {}
        for process in self._processes():
            try:
                # read every time: a child shows its parent's command line until it execs, and
                # Ray workers retitle themselves (default_worker.py -> ray::IDLE -> ray::ClientAppActor)
                cmdline = process.cmdline()
                self.seen[process.pid] = {
                    "kind": process_kind(cmdline),
                    "cmdline": " ".join(cmdline)[:200],
                    "create_time": process.create_time(),
                }
                values = resident_memory(process)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, FileNotFoundError):
                continue
            kind = self.seen[process.pid]["kind"]
            for measure in MEASURES:
                sums[measure][kind] += values[measure]
            counts[kind] += 1
            per_process[str(process.pid)] = values
        for measure in MEASURES:
            sums[measure]["total"] = sum(sums[measure][k] for k in KINDS)
        return {"t": time.time() - self.start, **sums, "count": counts, "per_process": per_process}


def resident_memory(process: psutil.Process) -> dict[str, int]:
    """RSS and its parts (bytes): ``anon`` (private heap: tensors, arrays, Python objects),
    ``shmem`` (shared memory it has touched, e.g. Ray's object store), ``file`` (mapped files)."""
    rss = process.memory_info().rss
    status = Path(f"/proc/{process.pid}/status")
    if not status.exists():  # not Linux: RSS only
        return {"rss": rss, "anon": rss, "shmem": 0}
    fields = {}
    for line in status.read_text().splitlines():
        if line.startswith(("RssAnon:", "RssShmem:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) * 1024  # kB
    return {"rss": rss, "anon": fields.get("RssAnon", rss), "shmem": fields.get("RssShmem", 0)}


def round_ends(sampler: Sampler) -> dict[int, dict[str, Any]]:
    """Round -> the sample at its end (after ``evaluate``, else after ``round``) and the peak
    total RSS since the previous round's end."""
    marks: dict[int, dict[str, int]] = {}
    for event in sampler.events:
        if isinstance(event.get("round"), int) and event.get("phase") in ("round", "evaluate"):
            marks.setdefault(event["round"], {})[event["phase"]] = event["sample"]
    ends: dict[int, dict[str, Any]] = {}
    previous = 0
    for rnd in sorted(marks):
        if rnd < 1:
            continue
        index = marks[rnd].get("evaluate", marks[rnd].get("round"))
        window = sampler.samples[previous : index + 1] or [sampler.samples[index]]
        sample = sampler.samples[index]
        ends[rnd] = {
            "sample": index,
            "t": sample["t"],
            **{measure: sample[measure] for measure in MEASURES},
            "count": sample["count"],
            "peak_total_rss": max(s["rss"]["total"] for s in window),
        }
        previous = index + 1
    return ends


def growth(ends: dict[int, dict[str, Any]], first: int, last: int, part: str, measure: str = "rss") -> float | None:
    """Growth in % of ``measure`` of ``part`` (a kind or ``total``) from round ``first`` to ``last``."""
    if first not in ends or last not in ends:
        return None
    a, b = ends[first][measure][part], ends[last][measure][part]
    return 100.0 * (b - a) / a if a else None


def leftovers(sampler: Sampler) -> tuple[list[str], list[str]]:
    """(processes of this run still alive, any SuperLink / Ray process on the machine)."""
    ours = []
    for pid, info in sampler.seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == info["create_time"] and process.status() != psutil.STATUS_ZOMBIE:
                ours.append(f"{pid} {info['kind']}: {info['cmdline']}")
        except psutil.NoSuchProcess:
            pass
    machine = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(process.info["cmdline"] or [])
        if any(marker in cmd for marker in LEFTOVER_MARKERS):
            machine.append(f"{process.info['pid']}: {cmd[:160]}")
    return ours, machine


def markdown(ends: dict[int, dict[str, Any]]) -> str:
    """Per round: RSS (anon = its private part) per kind and in total; then the growth."""
    columns = ["round", "end (s)", "server RSS (anon)", "client workers RSS (anon)", "superlink + superexec RSS"]
    columns += ["ray system RSS", "wandb RSS", "total RSS (anon)", "peak total RSS in round"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for rnd, end in sorted(ends.items()):
        rss = {k: v / MB for k, v in end["rss"].items()}
        anon = {k: v / MB for k, v in end["anon"].items()}
        cells = [f"{rnd}", f"{end['t']:.0f}", f"{rss['server']:,.0f} ({anon['server']:,.0f})"]
        cells += [f"{rss['clients']:,.0f} ({anon['clients']:,.0f})", f"{rss['superlink'] + rss['superexec']:,.0f}"]
        cells += [f"{rss['ray_system']:,.0f}", f"{rss['wandb']:,.0f}", f"{rss['total']:,.0f} ({anon['total']:,.0f})"]
        cells.append(f"{end['peak_total_rss'] / MB:,.0f}")
        rows.append("| " + " | ".join(cells) + " |")
    last = max(ends, default=0)
    rows += ["", "| growth | server RSS (anon) | client workers RSS (anon) | total RSS (anon) |", "|---|---|---|---|"]
    for target in sorted({10, last}):
        cells = [
            f"{_percent(growth(ends, 2, target, part, 'rss'))} ({_percent(growth(ends, 2, target, part, 'anon'))})"
            for part in ("server", "clients", "total")
        ]
        rows.append(f"| round 2 -> {target} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f} %"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="federation.global_rounds (default 12)")
    parser.add_argument("--config", default="configs/default.json")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="more overrides")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", default="outputs/benchmarks/memory_per_round.json", help="samples and table")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the temporary run folder")
    parser.add_argument("--stream", action="store_true", help="stream the run's log (flwr log --stream)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (growth is measured from round 2)")

    os.chdir(PROJECT_ROOT)  # the config's relative cache dir resolves to the project's outputs/cache
    os.environ.update(FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1", HF_HUB_OFFLINE="1")
    workdir = Path(tempfile.mkdtemp(prefix="feda2v-memory-"))
    run_name = "memory-per-round"
    sampler = Sampler(metrics_path=workdir / "outputs" / run_name / "metrics.jsonl", interval=args.interval)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    overrides = "; ".join([f"federation.global_rounds={args.rounds}", *args.set])
    try:
        status, run_dir = run_simulation(
            config=args.config,
            overrides=overrides,
            run_name=run_name,
            output_dir=workdir / "outputs",
            flwr_home=workdir / "flwr-home",
            stream=args.stream,
        )
        time.sleep(3 * args.interval)  # the last evaluate line and one sample after it
    finally:
        sampler.stop()
        thread.join()
    wall = sampler.samples[-1]["t"] if sampler.samples else 0.0

    deadline = time.time() + 30  # Ray and the simulation process wind down after the SuperLink
    ours, machine = leftovers(sampler)
    while ours and time.time() < deadline:
        time.sleep(1)
        ours, machine = leftovers(sampler)

    ends = round_ends(sampler)
    table = markdown(ends)
    print(f"\nRun status: {status} after {wall:.0f} s; {len(sampler.samples)} samples every {args.interval} s")
    kinds = [info["kind"] for info in sampler.seen.values()]
    print("Processes seen:", ", ".join(f"{k} x{kinds.count(k)}" for k in (*KINDS, "cli")))
    print("\nResident memory at the end of each round (MB = 10^6 bytes; anon = RssAnon, the private part):\n")
    print(table)
    print(f"\nProcesses of this run left after it: {len(ours)}")
    for line in ours:
        print("  ", line)
    print(f"flower-superlink / flwr-simulation / raylet / ray:: processes on the machine: {len(machine)}")
    for line in machine:
        print("  ", line)

    result = {
        "status": status,
        "config": args.config,
        "overrides": overrides,
        "interval_s": args.interval,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gb": psutil.virtual_memory().total / 1e9,
            "python": sys.version.split()[0],
        },
        "rounds": {str(k): v for k, v in ends.items()},
        "growth_pct": {
            f"2->{target}": {
                measure: {part: growth(ends, 2, target, part, measure) for part in ("server", "clients", "total")}
                for measure in MEASURES
            }
            for target in sorted({10, max(ends, default=args.rounds)})
        },
        "events": sampler.events,
        "processes": {str(k): v for k, v in sampler.seen.items()},
        "samples": sampler.samples,
        "leftover_processes": ours,
        "machine_processes_after": machine,
        "table": table,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"\nSamples and table: {args.json}")
    if args.keep_outputs:
        print(f"Run folder: {run_dir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if status == "finished:completed" and not ours else 1


if __name__ == "__main__":
    sys.exit(main())
