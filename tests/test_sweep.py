"""The Power et al. task suite, presets, and ``grokking sweep`` (every backend, resume after a kill)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from grokking import cli as cli_module
from grokking import sweep as sweep_module
from grokking import sweep_results
from grokking.cli import main
from grokking.config import FIELDS, PRESETS, Config, ConfigError
from grokking.data import OPERATIONS, PERMUTATIONS, Operation, make_dataset, register_operation
from grokking.rundir import first_at, read_metrics
from grokking.sweep import (
    RESULT_COLUMNS,
    plan_sweep,
    plot_sweep,
    read_results,
    run_sweep,
)
from grokking.train import Trainer


# --- the S5 tasks against an independent permutation composition ------------------------------------
def all_permutations(items: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every ordering of ``items``, built recursively (not itertools), in lexicographic order."""
    if len(items) <= 1:
        return [items]
    return [(first, *rest) for i, first in enumerate(items) for rest in all_permutations(items[:i] + items[i + 1:])]


def compose(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
    """(x*y)(k) = x(y(k)): y first, then x -- the convention data.py documents."""
    return tuple(x[y[k]] for k in range(len(y)))


def inverse(x: tuple[int, ...]) -> tuple[int, ...]:
    result = {image: k for k, image in enumerate(x)}
    return tuple(result[k] for k in range(len(x)))


S5_WORDS = {
    "perm_xy": lambda x, y: compose(x, y),
    "perm_xyx1": lambda x, y: compose(compose(x, y), inverse(x)),
    "perm_xyx": lambda x, y: compose(compose(x, y), x),
}


def test_tokens_are_the_permutations_of_five_elements_in_lexicographic_order():
    expected = all_permutations((0, 1, 2, 3, 4))
    assert len(expected) == 120 and len(set(expected)) == 120
    assert list(PERMUTATIONS) == expected
    assert PERMUTATIONS[0] == (0, 1, 2, 3, 4)  # token 0 is the identity


@pytest.mark.parametrize("op", sorted(S5_WORDS))
def test_s5_table_matches_an_independent_composition(op):
    index = {perm: token for token, perm in enumerate(all_permutations((0, 1, 2, 3, 4)))}
    perms = list(index)
    table, valid = OPERATIONS[op].table(97, 0)  # p is ignored by the S5 tasks
    assert table.shape == (120, 120) and valid.all()
    rows = table.tolist()
    word = S5_WORDS[op]
    for x_token, x in enumerate(perms):
        for y_token, y in enumerate(perms):
            assert rows[x_token][y_token] == index[word(x, y)], (op, x, y)
    # and what the dataset (the model's view) holds: tokens a b =, labels the table
    data = make_dataset(op, 113, 0.5, 0)
    labels = dict(zip(map(tuple, data.tokens[:, :2].tolist()), data.labels.tolist()))
    assert len(labels) == 120 * 120
    assert all(labels[a, b] == rows[a][b] for a, b in [(0, 0), (5, 77), (119, 1), (64, 64), (33, 100)])


def test_s5_group_laws_whatever_the_convention():
    xy, conj = OPERATIONS["perm_xy"].table(0, 0)[0], OPERATIONS["perm_xyx1"].table(0, 0)[0]
    identity = 0
    assert (xy[identity] == np.arange(120)).all() and (xy[:, identity] == np.arange(120)).all()
    for row in range(120):  # a group table is a Latin square
        assert sorted(xy[row].tolist()) == list(range(120)) and sorted(xy[:, row].tolist()) == list(range(120))
    assert (conj[identity] == np.arange(120)).all()  # e y e^-1 = y
    assert (conj[:, identity] == identity).all()      # x e x^-1 = e


@pytest.mark.parametrize("op", sorted(S5_WORDS))
def test_s5_vocabulary_has_120_permutations_and_equals_is_token_120(op):
    cfg = Config(op=op)
    assert cfg.n_classes == 120 and cfg.d_vocab == 121
    data = make_dataset(op, cfg.p, 0.3, 0)
    assert data.eq_token == 120 and data.d_vocab == 121
    assert (data.tokens[:, 2] == 120).all() and int(data.tokens[:, :2].max()) == 119
    assert int(data.labels.max()) == 119 and int(data.labels.min()) == 0


@pytest.fixture
def user_operation(tmp_path, monkeypatch):
    """A module that registers an operation, importable from tmp_path; removed afterwards."""
    module = tmp_path / "my_grok_ops.py"
    module.write_text(
        "import numpy as np\n"
        "from grokking.data import Operation, register_operation\n"
        "def table(p, seed):\n"
        "    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing='ij')\n"
        "    return (2 * a + 3 * b + 1) % p, np.ones((p, p), dtype=bool)\n"
        "register_operation(Operation('affine_test', '2a + 3b + 1', table))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_grok_ops", "affine_test"
    OPERATIONS.pop("affine_test", None)
    sys.modules.pop("my_grok_ops", None)


def test_a_user_registered_table_trains(tmp_path):
    def table(p, seed):
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        return (a * a - b) % p, np.ones((p, p), dtype=bool)

    register_operation(Operation("square_minus_test", "a^2 - b", table))
    try:
        with pytest.raises(ValueError):
            register_operation(Operation("square_minus_test", "again", table))
        cfg = Config(op="square_minus_test", p=13, d_model=32, d_mlp=64, epochs=30, eval_every=10,
                     checkpoint_every=0, checkpoint_log=0, report=False, lr=1e-2)
        data = make_dataset(cfg.op, cfg.p, cfg.frac, cfg.seed)
        assert data.table()[5, 3].item() == (25 - 3) % 13
        summary = Trainer(cfg, tmp_path / "run", progress=False).run()
        assert summary["status"] == "completed" and summary["final"]["train_acc"] > 0.5
    finally:
        OPERATIONS.pop("square_minus_test", None)


def test_sweep_import_flag_makes_a_user_operation_sweepable(tmp_path, user_operation, capsys):
    module, op = user_operation
    flags = ["--op", op, *TINY_FLAGS, "--grid", "seed=0,1", "--quiet"]
    assert main(["sweep", "--out", str(tmp_path / "without"), *flags]) == 2  # unknown op without the import
    assert "op" in capsys.readouterr().err and not (tmp_path / "without").exists()
    assert main(["sweep", "--out", str(tmp_path / "with"), "--import", module, *flags]) == 0
    rows = read_results(tmp_path / "with")
    assert [r["op"] for r in rows] == [op, op] and {r["status"] for r in rows} == {"completed"}


# --- presets ------------------------------------------------------------------------------------------
def test_power_preset_trains_and_flags_override_it(tmp_path, capsys):
    out = tmp_path / "power"
    code = main(["train", "--preset", "power", "--op", "x2y2", "--max-steps", "3", "--eval-every", "1",
                 "--out", str(out), "--quiet", "--d-model", "32", "--d-mlp", "64", "--frac", "0.3",
                 "--checkpoint-log", "0", "--no-report"])
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    for name, value in PRESETS["power"].items():  # the preset, where no flag said otherwise
        if name not in ("frac", "max_steps", "eval_every"):
            assert cfg[name] == value, name
    assert cfg["n_layers"] == 2 and cfg["p"] == 97 and cfg["batch_size"] == 512 and cfg["split"] == "random"
    assert cfg["op"] == "x2y2" and cfg["frac"] == 0.3 and cfg["max_steps"] == 3 and cfg["eval_every"] == 1
    assert cfg["d_model"] == 32 and cfg["d_mlp"] == 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 3
    assert [r["step"] for r in read_metrics(out)][-1] == 3


def toml_value(value) -> str:
    """How docs/sweeps.md spells a preset value: as in a TOML file (``none`` for None)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:_}"
    return repr(value)


def test_every_preset_is_documented_with_its_values():
    doc = (REPO / "docs" / "sweeps.md").read_text()
    for name, values in PRESETS.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"docs/sweeps.md has no row for preset {name!r}"
        for field_name, value in values.items():
            assert f"`{field_name} = {toml_value(value)}`" in row, (name, field_name, toml_value(value))


# --- a tiny sweep, run once for the module ----------------------------------------------------------------
TINY_FIXED = {"p": 11, "d_model": 16, "n_heads": 4, "d_mlp": 32, "epochs": 80, "eval_every": 5,
              "checkpoint_every": 0, "checkpoint_log": 0, "lr": 1e-2, "report": False, "device": "cpu"}
TINY_FLAGS = [arg for name, value in TINY_FIXED.items() for arg in
              ([f"--{'no-' if not value else ''}{name}"] if isinstance(value, bool)
               else [f"--{name.replace('_', '-')}", str(value)])]
TINY_GRID = {"frac": [0.4, 0.7], "seed": [0, 1]}
GRID_FLAGS = ["--grid", "frac=0.4,0.7", "--grid", "seed=0,1"]
COMPARED = ("final_train_loss", "final_test_loss", "final_train_acc", "final_test_acc")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "tiny"
    assert main(["sweep", "--out", str(out), *GRID_FLAGS, *TINY_FLAGS, "--quiet"]) == 0
    return out


def assert_same_results(rows_a, rows_b, tolerance=1e-6):
    assert [r["name"] for r in rows_a] == [r["name"] for r in rows_b]
    for a, b in zip(rows_a, rows_b):
        assert a["status"] == b["status"] and a["config_key"] == b["config_key"] and a["run_dir"] == b["run_dir"]
        for column in ("epochs_run", "steps", "step_train_acc_99", "step_test_acc_99"):
            assert a[column] == b[column], (a["name"], column)
        for column in COMPARED:
            assert abs(a[column] - b[column]) <= tolerance, (a["name"], column, a[column], b[column])
        assert {k: a[k] for k in FIELDS} == {k: b[k] for k in FIELDS}


def test_tiny_sweep_writes_one_row_per_run_and_the_figures(tiny_sweep):
    with open(tiny_sweep / "results.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == RESULT_COLUMNS and set(FIELDS) <= set(header)
    rows = read_results(tiny_sweep)
    assert [r["name"] for r in rows] == ["frac=0.4_seed=0", "frac=0.4_seed=1", "frac=0.7_seed=0", "frac=0.7_seed=1"]
    for row in rows:
        cfg = Config(**{**TINY_FIXED, "frac": row["frac"], "seed": row["seed"]})
        assert row["run_dir"] == f"runs/{row['name']}_{cfg.key()}" and row["config_key"] == cfg.key()
        assert {k: row[k] for k in FIELDS} == cfg.to_dict()
        assert row["status"] == "completed" and row["epochs_run"] == 80 and row["steps"] == 80
        records = read_metrics(tiny_sweep / row["run_dir"])
        assert row["final_test_loss"] == records[-1]["test_loss"] and row["final_train_acc"] == records[-1]["train_acc"]
        assert row["step_train_acc_99"] == first_at(records, "train_acc", field="step")
        assert row["step_test_acc_99"] == first_at(records, "test_acc", field="step")
        assert not (tiny_sweep / row["run_dir"] / "report.html").exists()  # report=false unless asked
    assert any(r["step_train_acc_99"] is not None for r in rows)  # lr 1e-2 memorises p=11 within 80 epochs
    for name in ("fraction.png", "heatmap_frac_seed.png"):
        assert (tiny_sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((tiny_sweep / "sweep.json").read_text())
    assert manifest["grid"] == TINY_GRID and manifest["fixed"]["p"] == 11


def test_first_step_at_reads_the_step_of_the_first_evaluation_above_the_threshold():
    records = [{"step": 0, "test_acc": 0.1}, {"step": 50, "test_acc": 0.995}, {"step": 100, "test_acc": 0.98}]
    assert first_at(records, "test_acc", field="step") == 50
    assert first_at(records, "test_acc", 0.999, field="step") is None


def test_a_second_invocation_skips_every_finished_run(tiny_sweep, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in tiny_sweep.glob("runs/*/summary.json")}
    before = read_results(tiny_sweep)
    assert main(["sweep", "--out", str(tiny_sweep), *GRID_FLAGS, *TINY_FLAGS]) == 0
    assert "0 to train" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in tiny_sweep.glob("runs/*/summary.json")} == stamps
    assert read_results(tiny_sweep) == before


def test_plot_sweep_redraws_the_figures(tiny_sweep):
    for name in ("fraction.png", "heatmap_frac_seed.png"):
        (tiny_sweep / name).unlink()
    written = plot_sweep(tiny_sweep, heatmap_fields=("seed", "frac"))
    assert [p.name for p in written] == ["fraction.png", "heatmap_seed_frac.png"]
    assert all(p.stat().st_size > 1000 for p in written)
    assert [p.name for p in plot_sweep(tiny_sweep)] == ["fraction.png", "heatmap_frac_seed.png"]


def test_grokking_plot_of_a_sweep_directory_draws_the_sweep_figures(tiny_sweep, capsys):
    (tiny_sweep / "fraction.png").unlink()
    assert main(["plot", str(tiny_sweep)]) == 0
    assert (tiny_sweep / "fraction.png").exists() and "fraction.png" in capsys.readouterr().out


def test_process_backend_gives_the_sequential_table(tiny_sweep, tmp_path):
    plan = plan_sweep(tmp_path / "process", TINY_FIXED, TINY_GRID)
    rows = run_sweep(plan, "process", workers=2, log=lambda msg: None)
    assert_same_results(rows, read_results(tiny_sweep))
    assert_same_results(read_results(tmp_path / "process"), read_results(tiny_sweep))


def test_batched_backend_gives_the_sequential_table(tiny_sweep, tmp_path):
    plan = plan_sweep(tmp_path / "batched", TINY_FIXED, TINY_GRID)
    run_sweep(plan, "batched", log=lambda msg: None, plot=False)
    # one batched model sums in another order (float32): losses of ~15 agree to ~1e-7 relative
    assert_same_results(read_results(tmp_path / "batched"), read_results(tiny_sweep), tolerance=1e-5)


def test_ray_backend_gives_the_sequential_table(tiny_sweep, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        plan = plan_sweep(tmp_path / "ray", TINY_FIXED, TINY_GRID)
        run_sweep(plan, "ray", log=lambda msg: None, plot=False)
    finally:
        ray.shutdown()
    assert_same_results(read_results(tmp_path / "ray"), read_results(tiny_sweep))


def test_slurm_backend_with_the_local_executor_gives_the_sequential_table(tiny_sweep, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "slurm"
    assert main(["sweep", "--out", str(out), *GRID_FLAGS, *TINY_FLAGS, "--backend", "slurm", "--slurm-local",
                 "--time", "10", "--quiet"]) == 0
    assert_same_results(read_results(out), read_results(tiny_sweep))
    assert any((out / "slurm_logs").iterdir())


def test_missing_engines_are_one_line_errors_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setitem(sys.modules, "submitit", None)
    for backend, extra in (("ray", "grokking-lab[ray]"), ("slurm", "grokking-lab[slurm]")):  # the distribution's name
        assert main(["sweep", "--out", str(tmp_path / backend), *GRID_FLAGS, *TINY_FLAGS, "--backend", backend]) == 2
        err = capsys.readouterr().err
        assert extra in err and err.count("\n") == 1
        assert not (tmp_path / backend).exists()


# --- resume after SIGKILL --------------------------------------------------------------------------------------
def test_a_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, capsys):
    out = tmp_path / "killed"
    flags = [*TINY_FLAGS, "--epochs", "400", "--checkpoint-every", "50", "--grid", "frac=0.4,0.7", "--grid", "seed=0,1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "grokking.cli", "sweep", "--out", str(out), *flags, "--quiet"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # kill once a run has finished and another is part-way (it has a checkpoint, no summary)
        while not (list(out.glob("runs/*/summary.json")) and any(
                (d / "checkpoints" / "last.safetensors").exists() and not (d / "summary.json").exists()
                for d in out.glob("runs/*/"))):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the first run did not finish in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    finished = {p.parent: (p.stat().st_mtime_ns, (p.parent / "metrics.jsonl").read_bytes())
                for p in out.glob("runs/*/summary.json")}
    assert 1 <= len(finished) < 4, "the kill came too late to test anything"
    table = read_results(out)
    # the table is whole: every run has a row (it may lag by the run that ended just before the kill)
    assert len(table) == 4 and sum(r["status"] == "pending" for r in table) >= 4 - len(finished)

    cut_short = [d for d in out.glob("runs/*/")
                 if d not in finished and (d / "checkpoints" / "last.safetensors").exists()]
    capsys.readouterr()
    assert main(["sweep", "--out", str(out), *flags]) == 0
    log = capsys.readouterr().err
    assert f"{len(finished)} finished before, {4 - len(finished)} to train" in log
    assert cut_short and log.count("(resumed;") == len(cut_short)  # continued from its checkpoint, not restarted
    for run_dir, (mtime, metrics) in finished.items():  # not trained again
        assert (run_dir / "summary.json").stat().st_mtime_ns == mtime
        assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    rows = read_results(out)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    # and the table is the one an uninterrupted sweep gives (the interrupted run continued exactly)
    fresh = tmp_path / "fresh"
    assert main(["sweep", "--out", str(fresh), *flags, "--quiet"]) == 0
    assert_same_results(rows, read_results(fresh))


def test_an_interrupted_run_continues_from_its_checkpoint(tmp_path):
    plan = plan_sweep(tmp_path / "s", {**TINY_FIXED, "epochs": 40, "checkpoint_every": 10}, {"seed": [0]})
    point = plan.points[0]
    trainer = Trainer(Config(**point.config).replace(epochs=20), Path(point.run_dir), progress=False)
    trainer.run()  # stands in for a run stopped at epoch 20: rewrite its state as the 40-epoch run's
    config_file = Path(point.run_dir) / "config.json"
    meta = json.loads(config_file.read_text())
    meta["config"] = point.config
    config_file.write_text(json.dumps(meta))
    summary_file = Path(point.run_dir) / "summary.json"
    summary_file.write_text(json.dumps({**json.loads(summary_file.read_text()), "status": "interrupted"}))
    outcome = sweep_module.run_point(point)
    assert outcome["action"] == "resumed" and outcome["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(point.run_dir)] == list(range(0, 41, 5))


# --- failures, validation, sweep files ----------------------------------------------------------------------
def test_failed_and_crashed_runs_are_rows_and_only_crashes_are_retried(tmp_path, monkeypatch, capsys):
    import grokking.rungroup as engine_module  # every run's evaluation goes through rungroup.evaluate_runs

    real_evaluate = engine_module.evaluate_runs

    def faulty_evaluate(model, data, cfg, logits_fn):
        if cfg.seed == 2:
            raise RuntimeError("simulated crash")
        figures = real_evaluate(model, data, cfg, logits_fn)
        if cfg.seed == 1:
            figures = figures.clone()
            figures[:, engine_module.FIGURE_KEYS.index("train_loss")] = float("nan")
        return figures

    monkeypatch.setattr(engine_module, "evaluate_runs", faulty_evaluate)
    args = ["sweep", "--out", str(tmp_path / "s"), *TINY_FLAGS, "--grid", "seed=0,1,2", "--quiet"]
    assert main(args) == 1  # a failed run: exit status 1, the table complete
    rows = {r["seed"]: r for r in read_results(tmp_path / "s")}
    assert rows[0]["status"] == "completed"
    assert rows[1]["status"] == "failed" and "non-finite" in rows[1]["error"]
    assert rows[2]["status"] == "failed" and "RuntimeError: simulated crash" in rows[2]["error"]
    monkeypatch.setattr(engine_module, "evaluate_runs", real_evaluate)
    assert main(args) == 1
    rows = {r["seed"]: r for r in read_results(tmp_path / "s")}
    assert rows[1]["status"] == "failed"     # a numerical fault is a result: not trained again
    assert rows[2]["status"] == "completed"  # a crash is retried
    capsys.readouterr()


@pytest.mark.parametrize("args, field", [
    (["--grid", "frac=0.3,1.5"], "frac"),
    (["--grid", "bogus=1,2"], "bogus"),
    (["--grid", "frac="], "--grid"),
    (["--grid", "seed=0,,1"], "seed"),
    (["--grid", "seed=0,1", "--grid", "seed=2"], "seed"),
    (["--grid", "seed=0,1", "--seed", "3"], "seed"),
    (["--grid", "op=add,nope"], "op"),
    (["--grid", "seed=0,1", "--d-model", "30"], "d_model"),
    (["--grid", "n_layers=1,2", "--backend", "batched"], "n_layers"),
    (["--grid", "seed=0,1", "--workers", "0"], "--workers"),
    (["--grid", "seed=0,1", "--heatmap", "seed"], "--heatmap"),
])
def test_a_bad_point_is_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, args, field):
    out = tmp_path / "out"
    assert main(["sweep", "--out", str(out), *TINY_FLAGS, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grokking: error:") and err.count("\n") == 1 and field in err
    assert not out.exists()


def test_sweep_file_fixed_grid_runs_and_flag_precedence(tmp_path, capsys):
    sweep_file = tmp_path / "s.toml"
    sweep_file.write_text(
        'preset = "fast"\n[fixed]\np = 11\nd_model = 16\nd_mlp = 32\nepochs = 7\n'
        '[grid]\nop = ["add", "subtract"]\nfrac = [0.3, 0.5]\n'
        '[[runs]]\nop = "multiply"\nfrac = 0.6\nseed = 4\n')
    plan = cli_module.plan_from_args(_sweep_args(["--out", str(tmp_path / "o"), "--sweep-file", str(sweep_file)]))
    assert [p.name for p in plan.points] == ["op=add_frac=0.3", "op=add_frac=0.5", "op=subtract_frac=0.3",
                                             "op=subtract_frac=0.5", "op=multiply_frac=0.6_seed=4"]
    cfg = plan.points[0].config
    assert cfg["lr"] == PRESETS["fast"]["lr"] and cfg["epochs"] == 7 and cfg["p"] == 11 and cfg["report"] is False
    # a flag fixes a field the file sweeps (the axis goes); --grid replaces the file's axis; flags beat [fixed]
    plan = cli_module.plan_from_args(_sweep_args(["--out", str(tmp_path / "o"), "--sweep-file", str(sweep_file),
                                                    "--op", "add", "--grid", "frac=0.2", "--epochs", "9"]))
    assert [p.name for p in plan.points] == ["frac=0.2", "frac=0.6_seed=4"]
    assert {p.config["op"] for p in plan.points} == {"add"} and {p.config["epochs"] for p in plan.points} == {9}
    sweep_file.write_text('[fixed]\np = 11\n[grid]\nlearning_rate = [1, 2]\n')
    assert main(["sweep", "--out", str(tmp_path / "o"), "--sweep-file", str(sweep_file)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    sweep_file.write_text('[fixed]\np = 11\n[gird]\nseed = [1, 2]\n')
    assert main(["sweep", "--out", str(tmp_path / "o"), "--sweep-file", str(sweep_file)]) == 2
    assert "gird" in capsys.readouterr().err and not (tmp_path / "o").exists()


def _sweep_args(argv):
    from grokking.cli import build_parser

    return build_parser().parse_args(["sweep", *argv])


@pytest.mark.parametrize("name, n_runs", [("power_fraction.toml", 28), ("power_fraction_mini.toml", 6)])
def test_the_shipped_sweep_files_plan(tmp_path, capsys, name, n_runs):
    assert main(["sweep", "--sweep-file", str(REPO / "sweeps" / name), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == n_runs and all(line.startswith("new ") for line in lines)
    assert not (tmp_path / "o").exists()
    plan = cli_module.plan_from_args(_sweep_args(["--sweep-file", str(REPO / "sweeps" / name), "--out", "x"]))
    assert {p.config["op"] for p in plan.points} >= {"add", "divide"}
    assert len({p.config["frac"] for p in plan.points}) >= 3
    assert all(p.config["stop_at_test_acc"] == 0.99 for p in plan.points)
    if name == "power_fraction.toml":
        assert {p.config["op"] for p in plan.points} == {"add", "divide", "x2y2", "x3xy"}
        assert {p.config["p"] for p in plan.points} == {97} and sum(0.2 <= f <= 0.8 for f in
                                                                    {p.config["frac"] for p in plan.points}) >= 5


def test_a_sweep_directory_in_use_is_refused(tmp_path, capsys):
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".sweep.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert main(["sweep", "--out", str(out), *TINY_FLAGS, "--quiet"]) == 2
    assert "in use" in capsys.readouterr().err and not (out / "results.csv").exists()


def test_a_run_lock_is_refused_while_held_and_freed_when_its_holder_is_killed(tmp_path):
    lock = tmp_path / ".run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom grokking.sweep import exclusive\n"
                               "with exclusive(Path(sys.argv[1])) as mine:\n"
                               "    print(mine, flush=True)\n    time.sleep(120)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        with sweep_module.exclusive(lock) as mine:
            assert mine is False
        assert sweep_module.lock_holder(lock) == holder.pid
        holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel alone frees the lock
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    with sweep_module.exclusive(lock) as mine:
        assert mine is True and sweep_module.lock_holder(lock) == os.getpid()
    assert sweep_module.lock_holder(lock) is None


def test_grid_flags_are_config_errors_naming_the_flag_and_its_form():
    assert sweep_module.parse_grid_flags(["frac=0.3, 0.5", "seed=0"]) == {"frac": ["0.3", "0.5"], "seed": ["0"]}
    for entries in (["frac"], ["frac="], ["bogus=1"], ["seed=0,,1"], ["seed=0", "seed=1"]):
        with pytest.raises(ConfigError) as caught:
            sweep_module.parse_grid_flags(entries)
        assert caught.value.field == "grid" and "--grid" in str(caught.value) and "\n" not in str(caught.value)


def test_fraction_figure_marks_runs_that_never_got_there(tmp_path, monkeypatch):
    rows = []
    for op, steps in (("add", {0.3: None, 0.5: 400, 0.8: 200}), ("divide", {0.3: None, 0.5: None, 0.8: 300})):
        for frac, step in steps.items():
            for seed in (0, 1):
                rows.append({**Config(op=op, frac=frac, seed=seed).to_dict(), "name": f"{op}{frac}{seed}",
                             "status": "stopped_early" if step else "completed", "step_test_acc_99": step,
                             "epoch_test_acc_99": step, "steps": 1000, "epochs_run": 1000,
                             "final_test_acc": 1.0 if step else 0.1})
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    captured = {}
    original = sweep_results.save_figure

    def keep_figure(fig, path):
        captured["fig"] = fig
        return original(fig, path)

    monkeypatch.setattr(sweep_results, "save_figure", keep_figure)
    sweep_module.plot_fraction(rows, tmp_path / "f.png")
    ax = captured["fig"].axes[0]
    hollow = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())
              and c.get_facecolors().size == 0]
    tops = {round(float(y)) for c in hollow for _, y in c.get_offsets()}
    assert len(tops) == 1 and tops.pop() > 1000  # above the budget, at the top edge
    assert sum(len(c.get_offsets()) for c in hollow) == 3  # add@0.3, divide@0.3, divide@0.5
    assert any(">budget" in t.get_text() for t in ax.texts)
    plt.close("all")
    assert (tmp_path / "f.png").stat().st_size > 1000
