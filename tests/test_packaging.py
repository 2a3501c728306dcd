"""The distribution: its metadata (default suite) and, slow, a wheel built from this tree that
installs into a fresh virtual environment and runs ``grokking`` from outside the repository."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DISTRIBUTION = "grokking-lab"


def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def test_distribution_name_and_python_requirement_are_true():
    project = pyproject()["project"]
    assert project["name"] == DISTRIBUTION  # "grokking" on PyPI is an unrelated project
    # the code uses tomllib (3.11) and `python -P` (3.11): the requirement says so, and this interpreter meets it
    assert project["requires-python"] == ">=3.11" and sys.version_info >= (3, 11)
    assert "tomllib" in (REPO / "grokking" / "config.py").read_text()
    extras = project["optional-dependencies"]
    assert any(re.fullmatch(r"transformer-lens>=3\.9,<5", r) for r in extras["interop"])


def test_install_hints_name_the_distribution():
    """Every `pip install` hint in the package and its docs installs grokking-lab, never PyPI's grokking."""
    wrong = []
    for path in [REPO / "README.md", *(REPO / "grokking").glob("*.py"), *(REPO / "docs").glob("*.md"),
                 *(REPO / "scripts").glob("*.sh"), *(REPO / "notebooks").glob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"pip install[^\n]*'grokking\[|\bgrokking\[(monitor|interop|ray|slurm|test)", line):
                wrong.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not wrong, "\n".join(wrong)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"{' '.join(map(str, command))} -> {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr, seconds


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    """Build the wheel (from a copy of the tree, so the checkout gains no build/ folder), install
    it with torch into a new venv that sees nothing of this one, then train and bench from a
    folder outside the repository: the seed loop the bench times ships in the wheel."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "grokking", source / "grokking", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    timings: dict[str, float] = {}
    # --no-isolation: this environment's setuptools, so the build needs no index
    _, timings["build"] = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
                               str(tmp_path / "dist"), str(source)], tmp_path, env)
    [wheel] = (tmp_path / "dist").glob("grokking_lab-*-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"grokking/seed_loop.py", "grokking/report.js", "grokking/report.css", "grokking/cli.py"} <= names
    assert not any(n.startswith(("tests/", "notebooks/")) for n in names)

    venv = tmp_path / "venv"
    _, timings["venv"] = run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python, grokking = venv / "bin" / "python", venv / "bin" / "grokking"
    pin = tmp_path / "constraints.txt"
    pin.write_text(f"torch=={torch.__version__.split('+')[0]}\n")
    # torch first, as scripts/setup.sh does (pip's configured index; the CPU build where it offers one)
    _, timings["install torch"] = run([str(python), "-m", "pip", "install", "--quiet", "-c", str(pin),
                                       f"torch=={torch.__version__.split('+')[0]}"], tmp_path, env)
    _, timings["install wheel"] = run([str(python), "-m", "pip", "install", "--quiet", "-c", str(pin), str(wheel)],
                                      tmp_path, env)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where, _ = run([str(python), "-c", "import grokking; print(grokking.__file__)"], outside, env)
    assert str(venv) in where and str(REPO) not in where  # the wheel's copy, not this checkout

    version, _ = run([str(grokking), "--version"], outside, env)
    assert version.strip() == f"grokking {pyproject()['project']['version']}"
    out, timings["train --preset fast --epochs 30"] = run(
        [str(grokking), "train", "--preset", "fast", "--out", "run", "--epochs", "30", "--quiet"], outside, env)
    assert (outside / "run" / "summary.json").is_file() and (outside / "run" / "curves.png").is_file()
    out, timings["bench --reps 1 --timed-epochs 5"] = run(
        [str(grokking), "bench", "--reps", "1", "--timed-epochs", "5", "--threads", "1"], outside, env)
    assert re.search(r"seed loop\s+[0-9.]+ ms/epoch\s+\(grokking\.seed_loop, cpu\)", out), out
    assert re.search(r"speed-up vs seed\s+[0-9.]+x", out), out
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
