"""grokking reproduce: every experiment end to end at the hidden smoke scale (tiny budgets), its table
read back against the run directories, its figure, reruns that reuse the runs, and the refusals."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from grokking.cli import main
from grokking.errors import InputError
from grokking.reproduce import (
    EXPERIMENTS,
    LOSS_FELL,
    PERIODIC_SHARE,
    Row,
    first_epoch_below,
    markdown,
    reproduce,
)
from grokking.rundir import first_at, read_json, read_metrics

AVAILABLE = ("nanda2023", "power2022", "gromov2023", "barak2022", "omnigrok2023")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Each available experiment once, through the command line, at the smoke scale."""
    root = tmp_path_factory.mktemp("reproduce")
    outs = {}
    for name in AVAILABLE:
        outs[name] = root / name
        assert main(["reproduce", name, "--scale", "smoke", "--out", str(outs[name]), "--threads", "1",
                     "--quiet"]) == 0
    return outs


def written(out: Path) -> dict:
    return json.loads((out / "reproduce.json").read_text())


def config_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["config"]


@pytest.mark.parametrize("name", AVAILABLE)
def test_each_experiment_writes_its_table_figure_and_json(runs, name, capsys):
    out = runs[name]
    result = written(out)
    assert result["name"] == name and result["scale"] == "smoke" and result["rows"]
    table = (out / "reproduce.md").read_text()
    assert table.startswith(f"## {name}:") and "| quantity | paper | ours | conditions that differ |" in table
    for row in result["rows"]:  # every row of the JSON is a row of the table, in order
        assert set(row) == {"quantity", "paper", "ours", "conditions"} and row["paper"]
        assert f"| {row['quantity']} |" in table
    image = imread(out / f"{name}.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_nanda_table_equals_the_run_directory(runs):
    result = written(runs["nanda2023"])
    (run_dir,) = map(Path, result["runs"])
    values = result["values"]
    records = read_metrics(run_dir)
    assert values["epoch_test_acc_99"] == first_at(records, "test_acc")
    assert values["epoch_train_acc_99"] == first_at(records, "train_acc")
    analysis = json.loads((run_dir / "analysis" / "analysis.json").read_text())
    assert values["key_frequencies"] == analysis["key_frequencies"]["used"]
    for name in ("memorisation_end", "circuit_formation_end", "cleanup_end"):
        assert values[name] == analysis["phases"][name]
    progress = analysis["progress"]
    epochs, restricted = progress["epoch"], progress["restricted_loss"]
    expected = next((e for e, v in zip(epochs, restricted) if v is not None and v < LOSS_FELL), None)
    assert values["restricted_loss_below_1"] == expected
    quantities = [r["quantity"] for r in result["rows"]]
    assert quantities == ["key frequencies", "epoch test accuracy passes 99%", "memorisation ends",
                          "circuit formation ends", "clean-up ends", "restricted loss falls before test loss"]
    rows = {r["quantity"]: r for r in result["rows"]}
    assert rows["key frequencies"]["paper"] == "14, 35, 41, 42, 52"
    assert rows["memorisation ends"]["paper"] == "1.4k" and rows["clean-up ends"]["paper"] == "14k"
    assert config_of(run_dir)["epochs"] == 60 and config_of(run_dir)["threads"] == 1


def test_power_table_equals_the_sweep_runs(runs):
    result = written(runs["power2022"])
    (sweep_dir,) = map(Path, result["runs"])
    run_dirs = sorted((sweep_dir / "runs").iterdir())
    assert len(run_dirs) == 6  # sweeps/power_fraction_mini.toml: add, divide x 3 fractions
    seen: dict[str, dict[str, int | None]] = {}
    for run_dir in run_dirs:
        cfg = config_of(run_dir)
        seen.setdefault(cfg["op"], {})[f"{cfg['frac']:g}"] = first_at(read_metrics(run_dir), "test_acc", field="step")
    ops = result["values"]["ops"]
    assert set(ops) == {"add", "divide"}
    for op, steps in seen.items():
        assert ops[op]["steps_to_99"] == steps
        reached = [float(f) for f, s in steps.items() if s is not None]
        assert ops[op]["smallest_frac"] == (min(reached) if reached else None)
        ordered = [steps[f] if steps[f] is not None else float("inf") for f in sorted(steps, key=float)]
        falling = all(a >= b for a, b in itertools.pairwise(ordered)) if reached else None
        assert ops[op]["steps_fall_with_frac"] == falling
    assert any("smallest fraction" in r["quantity"] for r in result["rows"])


def test_gromov_table_equals_the_run_directory(runs):
    result = written(runs["gromov2023"])
    (run_dir,) = map(Path, result["runs"])
    values = result["values"]
    records = read_metrics(run_dir)
    summary = read_json(run_dir / "summary.json")
    assert values["epoch_test_acc_99"] == first_at(records, "test_acc")
    assert values["final_test_acc"] == summary["final"]["test_acc"] == records[-1]["test_acc"]
    assert values["closed_form_all_acc"] == 1.0  # Gromov's weights in the same network: every pair right
    assert 0.0 <= values["periodic_neurons"] <= 1.0
    rows = {r["quantity"]: r for r in result["rows"]}
    assert rows["closed-form weights: accuracy on all pairs"]["ours"] == "100.00%"
    assert any("MSE" in r["conditions"] for r in result["rows"])  # the loss that differs is said
    cfg = config_of(run_dir)
    assert cfg["model"] == "mlp" and cfg["mlp_act"] == "quadratic" and cfg["mlp_input"] == "onehot"
    assert f"{PERIODIC_SHARE:.0%}" in "".join(rows)


@pytest.mark.parametrize("name", AVAILABLE)
def test_rerun_reuses_the_finished_runs(runs, name, capsys):
    out = runs[name]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}
    assert before
    assert main(["reproduce", name, "--scale", "smoke", "--out", str(out), "--threads", "1", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.safetensors")} == before
    result = written(out)
    assert result["trained"] == [] and result["reused"]
    assert "0 trained" in capsys.readouterr().out


def test_list_names_all_five(capsys):
    assert main(["reproduce", "--list"]) == 0
    text = capsys.readouterr().out
    for name in ("nanda2023", "power2022", "gromov2023", "barak2022", "omnigrok2023"):
        assert name in text
    assert text.count("laptop wall time") == 5
    assert set(EXPERIMENTS) == {"nanda2023", "power2022", "gromov2023", "barak2022", "omnigrok2023"}


def test_refusals_are_one_line_exit_2(capsys, tmp_path):
    assert main(["reproduce"]) == 2
    assert main(["reproduce", "nosuch"]) == 2
    assert main(["reproduce", "gromov2023", "--paper-scale", "--scale", "smoke"]) == 2
    (tmp_path / "file").write_text("x")
    assert main(["reproduce", "gromov2023", "--out", str(tmp_path / "file")]) == 2
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("grokking: error: ")


def test_helpers():
    assert first_epoch_below([0, 10, 20], [4.0, None, 0.5]) == 20
    assert first_epoch_below([0, 10], [4.0, 2.0]) is None
    table = markdown("gromov2023", [Row("a|b", "1", "2", "")])
    assert "| a\\|b | 1 | 2 |  |" in table
    assert np.isclose(LOSS_FELL, 1.0)
