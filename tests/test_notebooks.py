"""notebooks/: built from notebooks/build.py, committed with the outputs of a full run (their
figures render on GitHub), and each runs top to bottom at the small budget (GROKKING_QUICK=1)
within 90 s, its figures inline as PNGs. A failing cell fails here, so it fails CI."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs the 'test' extra: pip install 'grokking-lab[test]'")
nbclient = pytest.importorskip("nbclient", reason="needs the 'test' extra: pip install 'grokking-lab[test]'")
pytest.importorskip("ipykernel", reason="needs the 'test' extra: pip install 'grokking-lab[test]'")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
QUICK_SECONDS = 90  # the budget of one notebook at GROKKING_QUICK=1 on two cores
# figures each notebook shows (image/png outputs), at either budget
FIGURES = {"quickstart": 3, "progress_measures": 6, "sweeps_and_acceleration": 2}


def load_build() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build()


def pngs(nb) -> int:
    return sum("image/png" in output.get("data", {}) for c in nb.cells if c.cell_type == "code" for output in c.outputs)


def errors(nb) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if o.output_type == "error"]


def test_the_notebooks_are_the_ones_build_py_writes():
    assert set(build.NOTEBOOKS) == set(FIGURES) == {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    for name in build.NOTEBOOKS:
        committed, fresh = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), build.notebook(name)
        nbformat.validate(committed)
        assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in fresh.cells], \
            f"{name}.ipynb differs from notebooks/build.py: run python notebooks/build.py --execute"


@pytest.mark.parametrize("name", list(FIGURES))
def test_committed_notebook_shows_a_full_run(name):
    """GitHub renders the committed outputs: a full-budget run, with its figures, of modest size."""
    path = NOTEBOOKS / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "budget: full" in text, "committed outputs come from a run at the full budget"
    assert not errors(nb)
    assert all(c.outputs or c.execution_count for c in nb.cells[2:] if c.cell_type == "code"), "a cell never ran"
    assert pngs(nb) >= FIGURES[name]
    assert path.stat().st_size < 1_500_000, "keep the figures at modest dpi"
    first = nb.cells[0].source
    assert "colab.research.google.com/assets/colab-badge.svg" in first and f"notebooks/{name}.ipynb" in first
    if name == "quickstart":  # the TransformerLens 4 export ran one of TransformerLens's analyses
        assert "TransformerBridge from transformer-lens 4." in text and "round trip identical: True" in text
        assert "parts add up to the correct logit" in text


def test_every_notebook_installs_only_where_needed_and_reads_the_one_budget_switch():
    for name in build.NOTEBOOKS:
        nb = build.notebook(name)
        assert nb.cells[1].source.startswith("# Install") and "find_spec(\"grokking\") is None" in nb.cells[1].source
        assert 'os.environ.get("GROKKING_QUICK") == "1"' in nb.cells[2].source
        sources = "\n".join(c.source for c in nb.cells)
        assert sources.count("os.environ") == 1, "GROKKING_QUICK is the one variable a notebook reads"


def run_install_cell(source: str, have: set[str]) -> list[list[str]]:
    """Run an install cell where only the modules in ``have`` are importable; return the pip commands."""
    calls: list[list[str]] = []
    real_find_spec = importlib.util.find_spec
    fake_util = types.SimpleNamespace(find_spec=lambda name, *a: real_find_spec(name) if name in have else None)
    fake_metadata = types.SimpleNamespace(version=lambda name: "2.13.0+cu121")
    fake_subprocess = types.SimpleNamespace(run=lambda command, check: calls.append(command))
    code = source.replace("import importlib.metadata, importlib.util, subprocess, sys, tempfile", "import sys, tempfile")
    exec(code, {"importlib": types.SimpleNamespace(util=fake_util, metadata=fake_metadata,
                                                   invalidate_caches=lambda: None),
                "subprocess": fake_subprocess})
    return calls


def test_install_cell_installs_the_distribution_and_never_replaces_torch():
    source = build.notebook("quickstart").cells[1].source
    assert run_install_cell(source, have={"grokking", "torch"}) == []  # CI, a checkout: nothing
    colab = run_install_cell(source, have={"torch"})  # Colab: torch (CUDA) present, grokking not
    assert len(colab) == 1 and colab[0][-1] == f"grokking-lab[interop] @ git+{build.repository()}.git"
    pin = Path(colab[0][colab[0].index("-c") + 1])
    assert pin.read_text() == "torch==2.13.0\n"  # constrained to the torch already there
    bare = run_install_cell(source, have=set())  # no torch at all: the CPU build first, as scripts/setup.sh
    assert len(bare) == 2 and "torch==2.13.0" in bare[0] and bare[0][-1].endswith("/whl/cpu")
    assert build.notebook("progress_measures").cells[1].source.count("grokking-lab @ git+") == 1


@pytest.mark.parametrize("name", list(FIGURES))
def test_notebook_runs_at_the_quick_budget(name, tmp_path):
    nb = build.notebook(name)
    # One OpenMP thread, as tests/conftest.py gives every test: the quick runs are tiny, and two threads
    # spin-waiting beside another busy process run several times slower (grokking/threads.py).
    env = {**os.environ, "GROKKING_QUICK": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=QUICK_SECONDS, kernel_name="python3", record_timing=False,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)  # raises CellExecutionError, naming the cell, if any cell fails
    seconds = time.perf_counter() - start
    print(f"{name}: {seconds:.1f} s at GROKKING_QUICK=1")
    assert not errors(nb)
    assert nb.cells[1].outputs == []  # the install cell saw grokking importable and did nothing
    assert "budget: quick" in "".join(o.get("text", "") for o in nb.cells[2].outputs)
    assert pngs(nb) >= FIGURES[name]
    assert seconds < QUICK_SECONDS, f"{name} took {seconds:.0f} s at GROKKING_QUICK=1"
    assert not (REPO / "notebooks" / "runs").exists()  # runs went to the working folder, not the checkout
    assert (tmp_path / "runs").is_dir()


def test_build_script_runs_as_documented(tmp_path):
    """`python notebooks/build.py --relink` rewrites only the first two cells and keeps outputs."""
    copy = tmp_path / "quickstart.ipynb"
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    nb.cells[0].source = "stale"
    build.relink(nb, "quickstart")
    assert nb.cells[0].source == build.notebook("quickstart").cells[0].source
    nbformat.write(nb, copy)
    assert pngs(nbformat.read(copy, as_version=4)) >= FIGURES["quickstart"]
    done = subprocess.run([sys.executable, str(NOTEBOOKS / "build.py"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--execute" in done.stdout
    assert json.loads(copy.read_text())["metadata"]["kernelspec"]["name"] == "python3"
