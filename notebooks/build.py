"""Write, execute and relink the notebooks in this folder; their cells are written here, once.

    python notebooks/build.py                      # write the three .ipynb files, without outputs
    python notebooks/build.py --execute            # ... and run them at the full budget, keeping outputs
    GROKKING_QUICK=1 python notebooks/build.py --execute   # the small budget CI runs
    python notebooks/build.py --relink             # only the Colab badge and install cell, outputs kept

Every notebook opens with a Colab badge and an install cell that does nothing where ``grokking``
is importable (a checkout, CI) and otherwise installs the ``grokking-lab`` distribution from the
repository named in pyproject.toml (``[project.urls] Repository``), with a CPU build of torch
first where none is present (as scripts/setup.sh does) and the torch already present (Colab's)
never replaced. Every notebook reads the one budget switch ``GROKKING_QUICK=1``.

``--execute`` runs each notebook with nbclient in ``--workdir`` (default: a fresh temporary
folder, so run directories stay out of the repository); where that folder has no
``runs/canonical``, ``--canonical RUN`` links one in for progress_measures.ipynb to load.
tests/test_notebooks.py checks that the committed notebooks hold exactly these cells.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
import tomllib
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUICK_VARIABLE = "GROKKING_QUICK"
DISTRIBUTION = "grokking-lab"
TORCH = "2.13.0"  # scripts/setup.sh's CPU build
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def repository() -> str:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")


def badge(name: str, title: str, summary: str) -> str:
    slug = repository().removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{name}.ipynb"
    return (f"# {title}\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})\n\n"
            f"{summary}\n\n*Budget:* set `{QUICK_VARIABLE}=1` in the environment for the small budget CI runs "
            "(the same cells, smaller runs).")


def install_cell(extras: str) -> str:
    requirement = f"{DISTRIBUTION}{f'[{extras}]' if extras else ''} @ git+{repository()}.git"
    return textwrap.dedent(f'''\
        # Install (Colab, or any Jupyter without the package); nothing happens where `grokking` is importable.
        import importlib.metadata, importlib.util, subprocess, sys, tempfile

        PACKAGE = "{requirement}"
        # or a wheel: PACKAGE = "{DISTRIBUTION}{f'[{extras}]' if extras else ''} @ file:///content/grokking_lab-0.1.0-py3-none-any.whl"
        if importlib.util.find_spec("grokking") is None:
            pip = [sys.executable, "-m", "pip", "install", "--quiet"]
            if importlib.util.find_spec("torch") is None:  # no torch at all: the CPU build, not gigabytes of CUDA
                subprocess.run(pip + ["torch=={TORCH}", "--index-url", "https://download.pytorch.org/whl/cpu"], check=True)
            # never replace the torch already here (Colab's CUDA build): constrain pip to it
            pin = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
            pin.write("torch==" + importlib.metadata.version("torch").split("+")[0] + "\\n")
            pin.close()
            subprocess.run(pip + ["-c", pin.name, PACKAGE], check=True)
            importlib.invalidate_caches()''')


SETUP = '''\
import os
from pathlib import Path

QUICK = os.environ.get("GROKKING_QUICK") == "1"  # the small budget CI runs: the same cells, smaller runs
print("budget:", "quick (GROKKING_QUICK=1)" if QUICK else "full")

# The package's figures are plain matplotlib Figures (it never touches pyplot or the backend);
# with the inline backend on, display(fig) shows one as a PNG in any Jupyter front end.
%matplotlib inline
import matplotlib
from IPython.display import display

matplotlib.rcParams["figure.dpi"] = 72  # modest PNGs: these notebooks are committed with their outputs
'''

# --- quickstart -----------------------------------------------------------------------------------------
QUICKSTART = [
    ("markdown", badge("quickstart", "Quickstart: grokking in seconds",
                       "Train the seed notebook's transformer on `(a + b) mod 113` with the `fast` preset until it "
                       "generalises, look at the Fourier features it learned, then hand the model to TransformerLens "
                       "and run one of TransformerLens's own analyses on it.")),
    ("code", install_cell("interop")),
    ("code", SETUP + '''
import torch
from grokking import Config, analysis, figures
from grokking.checkpoint import load_model
from grokking.config import preset
from grokking.train import read_metrics, train
'''),
    ("markdown", '''\
## 1. Train

`Config(**preset("fast"))` is `grokking train --preset fast`: the seed's model and data (30% of the
113² pairs for training), AdamW with the learning rate raised 20x (2e-2, decayed along a cosine to 0
at epoch 300), the weight decay tripled (3) and the gradient norm clipped to 0.5. It memorises the
training set within about a hundred epochs and generalises a few dozen epochs later, where the seed's
recipe takes about 10,000 (the canonical run: 99% test accuracy at epoch 10,100-11,350, by thread
count, which moves round-off). The run ends once
test accuracy has stayed at or above 99% for 50 epochs (`stop_at_test_acc=0.99`, `stop_hold=50`).'''),
    ("code", '''\
cfg = Config(**preset("fast"))
if QUICK:
    cfg = cfg.replace(p=23, epochs=40, report=False)
RUN = Path("runs/quickstart")
summary = train(cfg, RUN, overwrite=True, progress=False)
{key: summary[key] for key in ("status", "epochs_run", "epoch_train_acc_99", "epoch_test_acc_99", "seconds")}'''),
    ("code", '''\
records = read_metrics(RUN)  # one record per evaluation, as in RUN/metrics.jsonl
display(figures.curves_figure(records, figures.run_title(cfg.to_dict())))'''),
    ("markdown", '''\
## 2. What it learned: a few key frequencies

Nanda et al. (2023) found that such a model computes `a + b mod p` with waves `cos(wk(a+b))` at a handful
of *key frequencies* k: the embedding and the neuron-logit map are sparse in the Fourier basis.
`analysis.key_frequencies` finds them (largest gap in the sorted squared norms).'''),
    ("code", '''\
model = load_model(RUN).model
keys = analysis.key_frequencies(model)  # of the neuron-logit map, which builds the logits
print(f"key frequencies {keys.freqs}: {keys.explained:.1%} of the neuron-logit map's squared norm")
display(analysis.plot_fourier_spectra(analysis.embedding_fourier_norms(model),
                                      analysis.neuron_logit_fourier_norms(model), keys.freqs))'''),
    ("markdown", '''\
## 3. The same model in TransformerLens

`grokking.interop.to_transformer_lens` exports the model with the same weights: a `TransformerBridge`
under TransformerLens 4 (a `HookedTransformer` under 3.x). Its logits equal ours on every input to
float32 round-off, and `run_with_cache` returns TransformerLens's `ActivationCache`.'''),
    ("code", '''\
import importlib.metadata
from grokking.interop import from_transformer_lens, to_transformer_lens

tl_model = to_transformer_lens(model)
print(type(tl_model).__name__, "from transformer-lens", importlib.metadata.version("transformer-lens"))
tokens = analysis.grid_tokens(cfg.p)  # all p² inputs "a b ="
with torch.no_grad():
    logits, cache = tl_model.run_with_cache(tokens)
    print("largest |logit difference| from ours over all p² inputs:", (logits - model(tokens)).abs().max().item())'''),
    ("markdown", '''\
TransformerLens's own direct logit attribution: `cache.decompose_resid` splits the final residual
stream into the embedding, the position embedding, the attention output and the MLP output, and
`cache.logit_attrs` projects each onto the unembedding direction of the right answer `(a + b) mod p`.
Without a final LayerNorm (the seed has none) the parts add up to the logit exactly.'''),
    ("code", '''\
answers = (tokens[:, 0] + tokens[:, 1]) % cfg.p
with torch.no_grad():
    resid, labels = cache.decompose_resid(layer=-1, pos_slice=-1, return_labels=True)
    attributions = cache.logit_attrs(resid, tokens=answers, pos_slice=-1)  # [component, p²]
    correct_logit = logits[:, -1].gather(-1, answers[:, None]).squeeze(-1)
print("parts add up to the correct logit, to", (attributions.sum(0) - correct_logit).abs().max().item())

fig = figures.new_figure((11, 3.6), layout="constrained")
ax_bar, ax_map = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
means, spread = attributions.mean(1).numpy(), attributions.std(1).numpy()
ax_bar.bar(labels, means, yerr=spread, color=["C0", "C1", "C2", "C3"][: len(labels)])
ax_bar.set_ylabel("direct attribution to the right answer's logit")
ax_bar.set_title("decompose_resid + logit_attrs (mean ± std over inputs)", fontsize=9)
mlp = attributions[labels.index("0_mlp_out")].reshape(cfg.p, cfg.p).numpy()
image = ax_map.imshow(mlp, cmap="viridis", interpolation="nearest")
fig.colorbar(image, ax=ax_map, fraction=0.046)
ax_map.set_xlabel("b")
ax_map.set_ylabel("a")
ax_map.set_title("the MLP's attribution for each (a, b)", fontsize=9)
display(fig)'''),
    ("code", '''\
back = from_transformer_lens(tl_model, base=cfg)  # and back: the same weights, bit for bit
print("round trip identical:", all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items()))'''),
]

# --- progress measures ------------------------------------------------------------------------------------
PROGRESS = [
    ("markdown", badge("progress_measures", "Progress measures and the phases of grokking",
                       "The canonical run (add mod 113, 30% training data, the seed's recipe) and the progress "
                       "measures of Nanda et al. (2023): restricted and excluded loss, the Gini coefficients of "
                       "the Fourier spectra and the sum of squared weights, which split training into memorisation, "
                       "circuit formation and clean-up. Then the final model's attention and neurons.")),
    ("code", install_cell("")),
    ("code", SETUP + '''
from grokking import Config, analysis, figures
from grokking.checkpoint import load_model
from grokking.train import read_metrics, train
'''),
    ("markdown", '''\
## The run

A run directory made by `./scripts/grok.sh` (or `grokking train --out runs/canonical`) is loaded where
one is found (`runs/canonical`, or `../runs/canonical` from a checkout's `notebooks/`); otherwise the
canonical run is trained here: 20,000 epochs, 10 to 25 minutes on two CPU cores, far less on a GPU.
It keeps weight snapshots every 500 epochs and 20 more log-spaced over the first epochs.'''),
    ("code", '''\
found = [run for run in (Path("runs/canonical"), Path("../runs/canonical")) if (run / "summary.json").is_file()]
if QUICK:  # a small run with the same kinds of snapshots: add mod 23, the fast recipe
    RUN, cfg = Path("runs/progress_quick"), Config().replace(p=23, frac=0.5, lr=2e-2, weight_decay=2.0, epochs=150,
                                                            eval_every=10, checkpoint_every=50, checkpoint_log=4,
                                                            report=False)
    train(cfg, RUN, overwrite=True, progress=False)
elif found:
    RUN = found[0]
    print("loaded", RUN)
else:
    RUN = Path("runs/canonical")
    train(Config(), RUN, overwrite=True, progress=False)
loaded = load_model(RUN)
model, cfg = loaded.model, loaded.cfg
records = read_metrics(RUN)
print(figures.run_title(cfg.to_dict()), "|", len(records), "evaluations,",
      len(list((RUN / "checkpoints").glob("epoch_*.safetensors"))), "snapshots")
display(figures.curves_figure(records, figures.run_title(cfg.to_dict())))'''),
    ("markdown", '''\
## Progress measures and phases

Measured on every snapshot against the *final* model's key frequencies:

- **restricted loss**: the loss of the logits kept to the key-frequency directions: it falls when the
  Fourier circuit forms, well before the test loss does;
- **excluded loss**: the training loss with those directions removed: it rises as the model stops
  relying on memorisation;
- **Gini coefficients** of the embedding's and the neuron-logit map's Fourier norms: sparsity;
- **sum of squared weights**: weight decay cleaning up the memorising solution.

`phase_boundaries` reads the three phases as `grokking analyze` does: memorisation ends where the
train loss has stopped falling and the excluded loss turns upward (the paper's reading, from the
snapshots), circuit formation when test accuracy reaches 50% and clean-up when the weights settle
(both from the denser metrics). `memorisation_end_acc` is the simpler rule, train accuracy at 99%.'''),
    ("code", '''\
measures = analysis.progress_measures(RUN)
dense = analysis.metrics_series(records)
phases = analysis.phase_boundaries(measures, dense)
print("key frequencies", measures["key_freqs"].tolist(), "| phases end at", phases)
display(analysis.plot_progress(measures, phases, records))'''),
    ("markdown", "## The final model: attention and neurons"),
    ("code", '''\
display(analysis.plot_attention(analysis.attention_to_inputs(model)))'''),
    ("code", '''\
neurons = analysis.neuron_frequencies(model)
clusters = analysis.neuron_clusters(neurons)
print({freq: len(members) for freq, members in clusters.items()})
display(analysis.plot_neuron_clusters(neurons.freq, neurons.frac_explained, clusters,
                                      analysis.NEURON_CLUSTER_THRESHOLD))'''),
    ("markdown", '''\
Each neuron of a cluster is a wave over `(a, b)` at its frequency: below, the activations at `=` of the
neuron each of the largest clusters explains best.'''),
    ("code", '''\
activations = analysis.neuron_activations(model).numpy()  # [a, b, neuron]
largest = [k for k in sorted(clusters, key=lambda k: -len(clusters[k])) if k != "unclustered"][:4]
fig = figures.new_figure((2.6 * max(len(largest), 1), 2.6), layout="constrained")
for i, freq in enumerate(largest):
    best = max(clusters[freq], key=lambda n: neurons.frac_explained[n])
    ax = fig.add_subplot(1, len(largest), i + 1)
    ax.imshow(activations[:, :, best], cmap="viridis", interpolation="nearest")
    ax.set_title(f"neuron {best}: frequency {freq}", fontsize=8)
    ax.set_xlabel("b", fontsize=7)
    ax.set_ylabel("a", fontsize=7)
display(fig)'''),
    ("code", '''\
ab_norms, c_norms = analysis.logits_fourier_norms(analysis.grid_logits(model))
display(analysis.plot_logits_fourier(ab_norms, c_norms, measures["key_freqs"].tolist()))'''),
]

# --- sweeps and acceleration ------------------------------------------------------------------------------
SWEEPS = [
    ("markdown", badge("sweeps_and_acceleration", "Sweeps and acceleration",
                       "A small Power et al. (2022)-style sweep: steps to 99% test accuracy against the training "
                       "fraction, over seeds. Then one acceleration comparison on the canonical task: the seed's "
                       "recipe, the first `fast` recipe (`fast_unclipped`) and StableMax (Prieto et al. 2025).")),
    ("code", install_cell("")),
    ("code", SETUP + '''
from grokking import Config, figures, sweep_figures
from grokking.config import preset
from grokking.sweep import plan_sweep, run_sweep, summarize_groups
from grokking.train import read_metrics
'''),
    ("markdown", '''\
## Steps to generalise against the training fraction

`plan_sweep` validates every point before anything runs; `run_sweep` trains each into its own run
directory (`DIR/runs/NAME_KEY`), skips finished ones when run again, and writes `results.csv`. Here:
add mod 97 with the `fast_unclipped` recipe (a constant learning rate, unlike `fast`, whose rate
decays to 0 by epoch 300), each run stopped at 99% test accuracy (`grokking sweep` does the
same from the command line, on a process pool, Ray or Slurm).'''),
    ("code", '''\
fixed = {**preset("fast_unclipped"), "p": 97, "epochs": 1000, "stop_at_test_acc": 0.99, "checkpoint_every": 0,
         "checkpoint_log": 0, "report": False}
grid = {"frac": [0.25, 0.35, 0.5, 0.7], "seed": [0, 1]}
if QUICK:
    fixed.update(p=23, epochs=30)
    grid = {"frac": [0.5, 0.8], "seed": [0]}
plan = plan_sweep("runs/fraction_sweep", fixed=fixed, grid=grid)
rows = run_sweep(plan, backend="sequential", plot=False, log=lambda line: None)
for row in rows:
    print(f"frac {row['frac']:.2f} seed {row['seed']}: {row['status']}, 99% test accuracy at step "
          f"{row['step_test_acc_99']} ({row['seconds']:.0f} s)")
display(sweep_figures.fraction_figure(rows))'''),
    ("markdown", '''\
Where the recipe is stable, the steps needed fall as the training fraction grows, as in Power et al.'s
Figure 1. It is not stable everywhere: in the committed run one seed at 50% and one at 70% never
reached 99% within 1,000 epochs, nor even fit their training sets (train accuracy peaked at 0.97 and
0.95, then fell back to 0.46 and 0.15), and the 70% seed that grokked needed more steps than at 50%.
At learning rate 2e-2, full-batch steps on the larger training sets overshoot, the edge of stability
the quickstart shows; which seeds fall over moves with float32 round-off (an earlier committed run lost
both seeds at 70% and one at 25%). The README's fraction figure uses learning rate 1e-2.'''),
    ("markdown", '''\
## One acceleration comparison

The canonical task (add mod 113, 30% training data) with three recipes, the same seeds and the same
budget, each stopped at 99% test accuracy: the seed's (AdamW lr 1e-3, weight decay 1), the first `fast`
recipe (`--preset fast_unclipped`: lr 2e-2, weight decay 2) and StableMax cross-entropy at lr 2e-2 with the seed's weight decay.
docs/acceleration.md has the full comparison (more methods, tasks and seeds).'''),
    ("code", '''\
budget = {"epochs": 1000, "eval_every": 10, "stop_at_test_acc": 0.99, "checkpoint_every": 0, "checkpoint_log": 0,
          "report": False}
recipes = [{"lr": 1e-3, "weight_decay": 1.0}, {"lr": 2e-2, "weight_decay": 2.0}, {"lr": 2e-2, "loss": "stablemax"}]
names = ["seed recipe", "fast_unclipped", "StableMax, lr 2e-2"]
seeds = [0, 1]
if QUICK:
    budget.update(p=23, epochs=30)
    seeds = [0]
plan = plan_sweep("runs/acceleration", fixed=budget, runs=[{**recipe, "seed": seed} for recipe in recipes for seed in seeds])
rows = run_sweep(plan, backend="sequential", plot=False, log=lambda line: None)
by_recipe = {name: rows[i * len(seeds):(i + 1) * len(seeds)] for i, name in enumerate(names)}
for name, runs in by_recipe.items():
    reached = [r["epoch_test_acc_99"] for r in runs]
    print(f"{name:20s} epochs to 99% test accuracy: {reached} (budget {budget['epochs']})")'''),
    ("code", '''\
fig = figures.new_figure((11, 3.8), layout="constrained")
ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
for i, (name, runs) in enumerate(by_recipe.items()):
    for j, row in enumerate(runs):
        records = read_metrics(plan.out / row["run_dir"])
        epochs = [r["epoch"] for r in records]
        label = name if j == 0 else None
        ax_acc.plot(epochs, [r["test_acc"] for r in records], color=f"C{i}", alpha=0.8, label=label)
        ax_loss.plot(epochs, [r["test_loss"] for r in records], color=f"C{i}", alpha=0.8, label=label)
for ax, what in ((ax_acc, "test accuracy"), (ax_loss, "test loss")):
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(what)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
ax_loss.set_yscale("log")
fig.suptitle("add mod 113, 30% train: three recipes, stopped at 99% test accuracy", fontsize=10)
display(fig)'''),
]

NOTEBOOKS = {"quickstart": QUICKSTART, "progress_measures": PROGRESS, "sweeps_and_acceleration": SWEEPS}


def cell(kind: str, source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)


def notebook(name: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[cell(kind, source.rstrip("\n")) for kind, source in NOTEBOOKS[name]])
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"},
                   "colab": {"provenance": []}}
    return nb


def path_of(name: str) -> Path:
    return HERE / f"{name}.ipynb"


def execute(nb: nbformat.NotebookNode, workdir: Path, env: dict[str, str] | None = None,
            timeout: int = 3600) -> float:
    """Run ``nb`` in place (outputs written into it) with cwd ``workdir``; return the seconds it took."""
    from nbclient import NotebookClient  # the test extra; only --execute needs it

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute(env=env or dict(os.environ))
    return time.perf_counter() - start


def relink(nb: nbformat.NotebookNode, name: str) -> None:
    """Rewrite the badge and install cells from pyproject.toml, keeping every output."""
    fresh = notebook(name)
    for index in (0, 1):
        nb.cells[index].source = fresh.cells[index].source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=list(NOTEBOOKS), help="notebooks (default: all)")
    parser.add_argument("--execute", action="store_true", help="run them (GROKKING_QUICK=1: the small budget)")
    parser.add_argument("--relink", action="store_true", help="only rewrite the badge and install cells")
    parser.add_argument("--workdir", type=Path, help="where they run (default: a temporary folder)")
    parser.add_argument("--canonical", type=Path, help="a run directory to link in as runs/canonical")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="grokking-notebooks-"))
    if args.canonical and not (workdir / "runs" / "canonical").exists():
        (workdir / "runs").mkdir(parents=True, exist_ok=True)
        (workdir / "runs" / "canonical").symlink_to(args.canonical.resolve())
    for name in args.names:
        if args.relink:
            nb = nbformat.read(path_of(name), as_version=4)
            relink(nb, name)
        else:
            nb = notebook(name)
            if args.execute:
                seconds = execute(nb, workdir)
                print(f"{name}: {seconds:.0f} s in {workdir}", file=sys.stderr)
        nbformat.validate(nb)
        nbformat.write(nb, path_of(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
