"""The ablation runner (experiments/ablation.py) and the in-process federation it drives."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from feda2v_flwr.client_app import STATE_KEY
from feda2v_flwr.config import load_config
from feda2v_flwr.inprocess import run_in_process

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "experiments"))
import ablation  # noqa: E402


def test_in_process_run_goes_through_flowers_rounds_and_keeps_node_state(tmp_path, cache_dir):
    config = tiny_config(
        data={"cache_dir": str(cache_dir)},
        feda2v={"adapter_aggregation_mode": "none", "clip_adapter_learning_rate": 1e-2},
        federation={"local_epochs": 3},
    )
    run = run_in_process(config, tmp_path / "run")
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phases = [m["phase"] for m in metrics]
    assert phases.count("fit") == 2 and phases.count("evaluate") == 2
    # standalone: round 2 goes on from each node's own round-1 adapters (kept in its node state),
    # so it starts below where round 1 started
    fits = [m["clients"] for m in metrics if m["phase"] == "fit"]
    for node in fits[0]:
        assert fits[1][node]["train_loss_clip"] < 0.5 * fits[0][node]["train_loss_clip"], node  # lost state: ~0.8x
    assert [r for r, _ in run.history.losses_distributed] == [1, 2]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["round"] == 2 and 0 <= summary["evaluation"]["test_retrieval_top1"] <= 1
    # standalone nodes keep their own adapters between rounds, as the simulation's node state does
    assert all(STATE_KEY in client.state for client in run.clients.values())


def test_closed_form_heads_from_the_uploads_equal_heads_from_the_training_clips(tmp_path, cache_dir):
    import torch

    from feda2v_flwr.evaluation.closed_form import HEADS, ClassStatistics, head_metrics, nearest_class_mean
    from feda2v_flwr.models.sequence import pool_tokens

    config = tiny_config(data={"cache_dir": str(cache_dir)}, feda2v={"use_generator": False})
    run = run_in_process(config, tmp_path / "run")
    scores = ablation.closed_form_heads(run)
    assert set(scores) == set(HEADS) and all(0 <= s["retrieval_top1"] <= 1 for s in scores.values())
    # the same head from the training clips themselves (what a centralised server would hold)
    tasks = [run.task(pid) for pid in sorted(run.clients)]
    length = next(iter(run.strategy.recipe.trainer.last_summaries.values())).client_audio_means[0].shape[0]
    train = [task.split("train") for task in tasks]
    rows = torch.cat([pool_tokens(e.float(), length).flatten(1) for e, _ in train])
    labels = torch.cat([y for _, y in train])
    classes = sorted(labels.unique().tolist())
    means = torch.stack([rows[labels == c].mean(0) for c in classes])
    variances = torch.stack([rows[labels == c].var(0, unbiased=False) for c in classes])
    counts = torch.tensor([float((labels == c).sum()) for c in classes])
    direct = ClassStatistics(means, variances, counts)
    test = [task.split("test") for task in tasks]
    test_rows = pool_tokens(torch.cat([e for e, _ in test]).float(), length).flatten(1)
    test_labels = torch.cat([y for _, y in test])
    predicted = torch.tensor(classes)[nearest_class_mean(direct, test_rows)]
    assert head_metrics(predicted, test_labels, tasks[0].target_tensors) == pytest.approx(scores["ncm-cosine"])


def test_grid_covers_every_method_setting_and_length():
    cells = ablation.grid([0, 1, 2], ["methods", "noniid", "length"], full_length=79)
    methods = {c.method for c in cells if c.table == "methods"}
    assert methods == set(ablation.METHODS) >= {"none", "avg", "avg+vae", "kd", "avg+vae-uncond", "avg+gan"}
    assert {c.setting for c in cells if c.table == "noniid"} == set(ablation.SETTINGS) - {ablation.MAIN_SETTING}
    assert {c.setting for c in cells if c.table == "length"} == {"L=4", "L=16", "L=64", "full"}
    assert len({c.key for c in cells}) == len(cells)  # every cell has its own result file
    assert all(len([c for c in cells if c.seed == s]) == len(cells) // 3 for s in (0, 1, 2))
    full = next(c for c in cells if c.table == "length" and c.setting == "full")
    assert "statistics_sequence_length=null" in full.overrides
    assert "generator_output_sequence_length=79" in full.overrides


@pytest.mark.parametrize("config_file", ["configs/default.json", "configs/esc50_ablation.json"])
def test_every_cell_is_a_valid_config(config_file):
    for cell in ablation.grid([0], ["methods", "noniid", "length"], full_length=1214):
        load_config(config_file, f"{cell.overrides}; training.seed=1; data.partition_seed=1")


def test_the_plateau_is_the_first_round_within_a_hundredth_of_the_best_val_score():
    curve = [[1, 0.3], [2, 0.6], [3, 0.795], [4, 0.8], [5, 0.79], [6, None]]
    assert ablation.plateau_round(curve) == 3
    assert ablation.plateau_round([[1, None]]) is None


def test_server_steps_get_equal_fine_tuning_steps_and_unequal_ones_are_not_compared():
    cells = ablation.grid([0], ["methods"], full_length=79)
    matched = {c.method for c in cells if ablation.MATCHED_COMPUTE in c.overrides}
    assert matched == {
        *("avg+ft", "avg+vae", "avg+vae-uncond", "avg+gan", "avg+gaussian", "avg+gmm", "avg+vae-gmm", "avg+vae-teach"),
        *("avg+clientvae", "kd"),
    }
    assert not any(ablation.MATCHED_COMPUTE in c.overrides for c in ablation.grid([0], ["methods"], 79, matched=False))
    summary = {
        ("methods", ablation.MAIN_SETTING, "avg+vae"): {
            "per_seed_top1": {0: 0.7, 1: 0.8, 2: 0.5},
            "finetune_steps": (80.0, 0.0),
        },
        ("methods", ablation.MAIN_SETTING, "avg+ft"): {
            "per_seed_top1": {0: 0.6, 1: 0.7, 2: 0.6},
            "finetune_steps": (20.0, 0.0),
        },
        ("methods", ablation.MAIN_SETTING, "avg"): {
            "per_seed_top1": {0: 0.5, 1: 0.6, 2: 0.5},
            "finetune_steps": (0, 0),
        },
    }
    lines = "\n".join(ablation.findings(summary))
    assert "`avg+vae` vs `avg+ft` not compared: unequal fine-tuning steps per round (80 vs 20)" in lines
    assert "`avg+vae` − `avg` = +0.133" in lines  # a server step against none: that is the question
    assert "`avg+vae` − `avg+ft` = +0.033" in "\n".join(ablation.findings(summary, allow_unmatched=True))


def test_fedprox_is_compared_at_the_mu_with_the_best_validation_score_not_the_best_test_score():
    main = ablation.MAIN_SETTING
    summary = {
        ("methods", main, "avg"): {"per_seed_top1": {0: 0.5, 1: 0.6, 2: 0.55}, "val_top1": (0.6, 0.0)},
        ("methods", main, "avg+prox-0.001"): {"per_seed_top1": {0: 0.9, 1: 0.9, 2: 0.9}, "val_top1": (0.70, 0.0)},
        ("methods", main, "avg+prox-0.01"): {"per_seed_top1": {0: 0.6, 1: 0.6, 2: 0.6}, "val_top1": (0.75, 0.0)},
        ("methods", main, "avg+prox-0.1"): {"per_seed_top1": {0: 0.5, 1: 0.5, 2: 0.5}, "val_top1": (np.nan, 0.0)},
    }
    assert ablation.tuned(summary, "methods", main, "avg+prox") == "avg+prox-0.01"
    assert ablation.tuned(summary, "methods", main, "avg+gmm") is None
    lines = "\n".join(ablation.findings(summary))
    assert "`avg+prox-0.01` − `avg` = +0.050" in lines and "avg+prox-0.001` −" not in lines
    assert {f"avg+prox-{mu:g}" for mu in ablation.PROX_MUS} <= set(ablation.METHODS)


def test_the_document_names_the_commit_and_only_code_changes_count_as_uncommitted(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True)

    git("init", "-q")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "RESULTS.md").write_text("a\n")
    (tmp_path / "code.py").write_text("a = 1\n")
    git("add", "-A")
    git("commit", "-qm", "first")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True)
    assert ablation.code_version(tmp_path) == f"commit `{commit.stdout.strip()}`"
    (tmp_path / "docs" / "RESULTS.md").write_text("b\n")  # the runner's own output
    assert ablation.code_version(tmp_path) == f"commit `{commit.stdout.strip()}`"
    (tmp_path / "code.py").write_text("a = 2\n")
    assert ablation.code_version(tmp_path).endswith("with uncommitted changes")


def test_each_testbed_has_its_own_block_in_the_document(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\nIntro.\n")
    for testbed, body in (("default", "A"), ("sonic_pi_aisfx", "B"), ("default", "C")):
        start, end = ablation.markers(testbed)
        ablation.write_document(out, f"{start}\n{body}\n{end}", testbed)
    text = out.read_text()
    assert text.startswith("# Results\n\nIntro.\n")
    assert "\nA\n" not in text and text.index("\nC\n") < text.index("\nB\n")  # replaced in place, B kept
    cells = ablation.grid([0, 1], ["methods", "noniid"], 79, methods=["avg", "avg+vae"])
    assert {c.method for c in cells if c.table == "methods"} == {"avg", "avg+vae"}
    # the label-skew table's main setting takes from the methods table only what it ran
    assert {c.method for c in cells if c.table == "noniid" and c.setting == ablation.MAIN_SETTING} == {"none", "avg+ft"}


def test_paired_findings_need_three_seeds_and_follow_the_numbers():
    summary = {
        ("methods", ablation.MAIN_SETTING, "avg"): {"per_seed_top1": {0: 0.5, 1: 0.6, 2: 0.55}},
        ("methods", ablation.MAIN_SETTING, "avg+vae"): {"per_seed_top1": {0: 0.7, 1: 0.8, 2: 0.5}},
        ("methods", ablation.MAIN_SETTING, "avg+ft"): {"per_seed_top1": {0: 0.6, 1: 0.7}},
        ("methods", ablation.MAIN_SETTING, "kd"): {"per_seed_top1": {0: 0.7, 1: 0.7, 2: 0.4}},  # a tie, two losses
    }
    mean, std, wins, losses, n = ablation.paired(summary, "methods", ablation.MAIN_SETTING, "avg+vae", "avg")
    assert (round(mean, 4), wins, losses, n) == (round((0.2 + 0.2 - 0.05) / 3, 4), 2, 1, 3)
    lines = "\n".join(ablation.findings(summary))
    # diffs 0.2, 0.2, -0.05: sd 0.1443, 95 % CI +-4.303 * 0.1443 / sqrt(3) = 0.359
    assert "`avg+vae` − `avg` = +0.117 ± 0.359 top-1 (95 % CI)" in lines
    assert lines.count("`avg+vae` − `avg` =") == 1  # not again as the label-skew table's main setting
    assert "**no difference larger than 0.475 either way**" in lines
    assert "2 seed(s): too few to tell" in lines  # avg+vae vs avg+ft share two seeds only
    kd = next(line for line in lines.splitlines() if "`kd` −" in line)
    # diffs 0, -0.1, -0.1: a tie is no loss; detectable: (4.303 + 1.061) * 0.0577 / sqrt(3) = 0.179
    assert "higher in 0, lower in 2 of 3 seeds; detectable at 80 % power: 0.179" in kd
    assert "no difference larger than 0.210 either way" in kd
    clear = {
        ("methods", ablation.MAIN_SETTING, "avg"): {"per_seed_top1": dict(enumerate([0.5, 0.52, 0.49, 0.51, 0.5]))},
        ("methods", ablation.MAIN_SETTING, "avg+vae"): {"per_seed_top1": dict(enumerate([0.6, 0.63, 0.6, 0.6, 0.62]))},
    }
    assert "**higher (the 95 % CI excludes 0)**" in "\n".join(ablation.findings(clear))
    # diffs -0.10, -0.11, -0.11, -0.09, -0.12: sd 0.0114; (2.776 + 0.941) * 0.0114 / sqrt(5) = 0.019
    assert "median 0.019 over the rows" in ablation.mde_line(clear, "methods", ablation.MAIN_SETTING, ["avg"])


def test_the_label_skew_table_has_a_row_per_setting_run_and_takes_the_main_one_from_the_methods_table():
    summary = {("noniid", s, m): {"top1": (0.5, 0.01)} for s in ablation.SETTINGS for m in ablation.NON_IID_METHODS}
    for method in ablation.NON_IID_METHODS:
        del summary[("noniid", ablation.MAIN_SETTING, method)]  # those cells are the methods table's
        summary[("methods", ablation.MAIN_SETTING, method)] = {"top1": (0.9, 0.02)}
    del summary[("noniid", "Dirichlet 1.0", "avg")]
    lines = ablation.noniid_table(summary)
    assert len(lines) == 2 + len(ablation.SETTINGS)
    assert f"| {ablation.MAIN_SETTING} | " + " | ".join(["0.900 ± 0.020"] * 4) + " |" in lines
    assert "| Dirichlet 1.0 | 0.500 ± 0.010 | – | 0.500 ± 0.010 | 0.500 ± 0.010 |" in lines  # none, avg, ...


@pytest.mark.slow
def test_runner_writes_every_methods_row_on_a_tiny_setting(tmp_path):
    """The methods and sequence-length tables end to end (the label-skew table's cells are the
    same federations under other partitionings: its rendering is tested above)."""
    out = tmp_path / "RESULTS.md"
    start, end = ablation.markers("default")
    out.write_text(f"# Results\n\nHand-written intro.\n\n{start}\nold\n{end}\n\nKept.\n")
    command = [
        sys.executable,
        str(PROJECT / "experiments" / "ablation.py"),
        "--quick",
        "--tables",
        "methods",
        "length",
        "--seeds",
        "0",
        "--workers",
        "2",
        "--output-dir",
        str(tmp_path / "ablation"),
        "--out",
        str(out),
        "--overrides",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Results\n\nHand-written intro.") and text.rstrip().endswith("Kept.")
    assert "\nold\n" not in text
    for method in [*ablation.DEFAULT_METHODS, *ablation.HEADS]:
        assert f"| `{method}` |" in text, method
    assert "FedA2V against `ncm-cosine` on the same uploads" in text
    for length in ("L=4", "L=16", "L=64", "full"):
        assert f"| {length} |" in text, length
    assert (tmp_path / "results" / "default" / "methods.png").stat().st_size > 1000
    cells = list((tmp_path / "ablation" / "cells").glob("*.json"))
    assert len(cells) == len(ablation.grid([0], ["methods", "length"], 79, methods=ablation.DEFAULT_METHODS))
    vae = json.loads((tmp_path / "ablation" / "cells" / "methods-2_classes_node-avg+vae-seed0.json").read_text())
    assert vae["memorisation"]["dcr_ratio"] > 0 and vae["validation"]["similarity"] is not None
    assert vae["upload"]["statistics"] > 0
    fine_tuned = json.loads((tmp_path / "ablation" / "cells" / "methods-2_classes_node-avg+ft-seed0.json").read_text())
    assert set(fine_tuned["closed_form"]) == set(ablation.HEADS) and vae["closed_form"] is None
    assert fine_tuned["finetune_steps"] == vae["finetune_steps"] == ablation.FINETUNE_STEPS
    converged = json.loads((tmp_path / "ablation" / "cells" / "methods-2_classes_node-avg-long-seed0.json").read_text())
    assert converged["client_epochs"] == 4 and len(converged["val_curve"]) == 4  # 30 rounds without --quick
    # a second invocation finds every cell done and only rewrites the document
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"{len(cells)} cells already done" in again.stdout
