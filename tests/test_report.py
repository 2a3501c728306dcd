"""HTML reports: content, self-containment, the CLI, and rendering in headless Chromium."""
from __future__ import annotations

import csv
import importlib.resources
import io
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from grokking import analysis
from grokking.cli import main
from grokking.config import Config
from grokking.errors import InputError
from grokking.report import ASSETS, MAX_POINTS, ReportError, downsample_indices, write_report
from grokking.rundir import read_metrics
from grokking.train import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH "
                                    "(CI installs it: apt-get install -y chromium)")


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real run; ``report`` is on by default, so training itself writes report.html."""
    out = tmp_path_factory.mktemp("report") / "run"
    train(Config().replace(p=13, d_model=32, d_mlp=64, epochs=60, eval_every=5, checkpoint_every=0,
                           checkpoint_log=0), out, progress=False)
    return out


@pytest.fixture(scope="module")
def analysed_run(tiny_run, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny run with ``grokking analyze``'s figures and analysis.json."""
    run = shutil.copytree(tiny_run, tmp_path_factory.mktemp("analysed") / "run")
    return run, analysis.analyze(run)


def grokking_curve(n_records: int, eval_every: int = 10, spike_at: int = 3000) -> list[dict]:
    """Metrics shaped like a grokking run: train fits by epoch ~1000, test at ~30000, one loss spike."""
    records = []
    for i in range(n_records):
        epoch = i * eval_every
        train_acc = min(1.0, epoch / 1000)
        test_acc = 1 / (1 + math.exp(-(epoch - 30000) / 1500))
        train_loss = 4.7 * math.exp(-epoch / 300) + 1e-7
        test_loss = 4.7 + 20 * train_acc * (1 - test_acc) + 1e-6
        if i == spike_at:
            train_loss = 50.0  # a slingshot: must survive downsampling
        records.append({"epoch": epoch, "step": epoch, "train_loss": train_loss, "test_loss": test_loss,
                        "all_loss": test_loss, "train_acc": train_acc, "test_acc": test_acc, "all_acc": test_acc,
                        "weight_norm": 40 + 10 * train_acc - 15 * test_acc, "lr": 1e-3, "seconds": epoch * 0.01})
    return records


def write_run_dir(out: Path, records: list[dict]) -> Path:
    """A run directory as training leaves it, without training (for long synthetic runs)."""
    cfg = Config().replace(epochs=records[-1]["epoch"], eval_every=records[1]["epoch"] - records[0]["epoch"])
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "config_key": cfg.key(),
                                                 "device": "cpu", "training_path": "fast"}))
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train99 = next((r["epoch"] for r in records if r["train_acc"] >= 0.99), None)
    test99 = next((r["epoch"] for r in records if r["test_acc"] >= 0.99), None)
    (out / "summary.json").write_text(json.dumps({
        "status": "completed", "epoch_train_acc_99": train99, "epoch_test_acc_99": test99,
        "grokking_delay": None if train99 is None or test99 is None else test99 - train99, "final": {k: records[-1][k] for k in ("epoch", "train_loss", "test_loss",
                                                                                  "train_acc", "test_acc")},
        "epochs_run": records[-1]["epoch"], "steps": records[-1]["epoch"], "seconds": 123.4}))
    return out


def png_bytes(color: tuple[int, int, int], size=(120, 80)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    (sweep / "runs" / "lr0.001").mkdir(parents=True)
    (sweep / "runs" / "lr0.001" / "report.html").write_text("<html></html>")
    (sweep / "runs" / "lr0.01").mkdir()
    # as grokking.sweep writes it: summary columns, then every config field (most the same in every run)
    rows = [("lr0.001", "0.98", "12000", "", "runs/lr0.001", "13", "0.001"),
            ("lr0.01", "1.0", "900", "", "runs/lr0.01", "13", "0.01"),
            ("lr0.1", "0.05", "", "", "runs/lr0.1", "13", "0.1"),
            ("lr0.003", "nan", "4000", "", "runs/lr0.003", "13", "0.003")]
    with open(sweep / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "final_test_acc", "epoch_test_acc_99", "error", "run_dir", "p", "lr"])
        writer.writerows(rows)
    (sweep / "test_acc_vs_lr.png").write_bytes(png_bytes((200, 30, 30)))
    (sweep / "sweep.toml").write_text('[grid]\nlr = [0.001, 0.003, 0.01, 0.1]\n')
    return sweep


# --- helpers -------------------------------------------------------------------------------------------
def report_data(html_text: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html_text, re.DOTALL)
    return json.loads(match.group(1))


class StatusAndRows(HTMLParser):
    """The #report-status attributes and the rows (cell titles) of the results table of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self.headers: dict[str, str] = {}
        self.in_body = self.in_results = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id") == "report-status":
            self.status = attrs
        elif tag == "table":
            self.in_results = attrs.get("id") == "results"
        elif tag == "tbody" and self.in_results:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body and self.rows:
            self.rows[-1].append(attrs.get("title", ""))
        elif tag == "th" and "data-column" in attrs:
            self.headers[attrs["data-column"]] = attrs.get("aria-sort", "")

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


def parse(html_text: str) -> StatusAndRows:
    parser = StatusAndRows()
    parser.feed(html_text)
    return parser


def assert_self_contained(html_text: str) -> None:
    """No resource from the network: no remote src/href, no external scripts or stylesheets."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html_text, re.IGNORECASE)
    assert not re.search(r"<script[^>]*\bsrc=", html_text, re.IGNORECASE)
    assert not re.search(r"<link\b", html_text, re.IGNORECASE)
    assert "@import" not in html_text and "url(" not in html_text
    # The one URL in the page is the SVG namespace (an identifier, never fetched).
    assert set(re.findall(r"https?://[^\s\"'<>]+", html_text)) <= {"http://www.w3.org/2000/svg"}


# --- content -------------------------------------------------------------------------------------------
def test_training_writes_the_report(tiny_run):
    text = (tiny_run / "report.html").read_text()
    data = report_data(text)
    records = read_metrics(tiny_run)
    assert data["metrics"]["epoch"] == [r["epoch"] for r in records]  # short runs are not downsampled
    assert data["metrics"]["test_loss"] == [r["test_loss"] for r in records]
    assert data["metrics"]["train_acc"] == [r["train_acc"] for r in records]
    assert [c["id"] for c in data["charts"]] == ["loss", "accuracy", "weight_norm"]
    assert data["charts"][0]["yLog"] is True
    assert 'data-charts-expected="3"' in text
    assert_self_contained(text)


def test_run_report_shows_config_and_summary(tiny_run):
    text = write_report(tiny_run).read_text()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert "add mod 13" in text
    assert re.search(r"<tr class='changed'><th scope='row'[^>]*>d_model</th><td>32 <span class='default'>"
                     r"\(default 128\)", text)
    assert "<th scope='row'>steps</th><td>60</td>" in text
    assert f"<th scope='row'>config_key</th><td>{summary['config_key']}</td>" in text
    final_test_acc = f"{summary['final']['test_acc']:.2%}"
    assert final_test_acc in text
    assert "No analysis yet" in text


def test_long_runs_are_downsampled_keeping_ends_spikes_and_99_epochs(tmp_path):
    records = grokking_curve(5000)
    run = write_run_dir(tmp_path / "long", records)
    data = report_data(write_report(run).read_text())
    epochs = data["metrics"]["epoch"]
    assert data["n_records"] == 5000 and len(epochs) == data["n_points"] <= MAX_POINTS
    assert epochs == sorted(epochs) and epochs[0] == 0 and epochs[-1] == records[-1]["epoch"]
    train99 = next(r["epoch"] for r in records if r["train_acc"] >= 0.99)
    test99 = next(r["epoch"] for r in records if r["test_acc"] >= 0.99)
    assert train99 in epochs and test99 in epochs
    assert max(data["metrics"]["train_loss"]) == 50.0  # the spike
    assert [(m["epoch"], m["label"]) for m in data["markers"]] == [(train99, f"train 99% @ {train99}"),
                                                                   (test99, f"test 99% @ {test99}")]


def test_downsample_indices_bounds():
    records = grokking_curve(10_000)
    indices = downsample_indices(records, 500, keep=[1234])
    assert len(indices) <= 500 and 1234 in indices and indices[0] == 0 and indices[-1] == 9999
    assert downsample_indices(records[:100], 500) == list(range(100))


def test_non_finite_metrics_become_gaps(tmp_path):
    records = grokking_curve(50)
    records[10]["test_loss"] = float("inf")
    records[11]["test_loss"] = float("nan")
    run = write_run_dir(tmp_path / "run", records)
    data = report_data(write_report(run).read_text())  # strict JSON inside: no NaN/Infinity tokens
    assert data["metrics"]["test_loss"][10] is None and data["metrics"]["test_loss"][11] is None


def test_stale_summary_of_a_resumed_run_is_flagged(tmp_path):
    records = grokking_curve(200)
    run = write_run_dir(tmp_path / "run", records)
    summary = json.loads((run / "summary.json").read_text())
    summary["final"]["epoch"], summary["status"] = 500, "interrupted"
    (run / "summary.json").write_text(json.dumps(summary))
    text = write_report(run).read_text()
    assert "summary.json was written at epoch 500" in text and "running? (summary.json: interrupted" in text


def test_analysis_figures_and_numbers_are_embedded(analysed_run):
    run, result = analysed_run
    text = write_report(run).read_text()
    figures = sorted((run / "analysis").glob("*.png"))
    assert figures and text.count("src='data:image/png;base64,") == len(figures)
    assert f'data-images-total="{len(figures)}"' in text
    assert "key frequencies (used)" in text and "restricted loss" in text
    used = ", ".join(str(k) for k in result["key_frequencies"]["used"]) or "—"
    assert f"<th scope='row'>key frequencies (used)</th><td>{used}</td>" in text
    assert_self_contained(text)


def test_sweep_report(sweep_dir):
    text = write_report(sweep_dir).read_text()
    parsed = parse(text)
    assert [row[0] for row in parsed.rows] == ["lr0.001", "lr0.01", "lr0.1", "lr0.003"]
    # the swept config field first, paths last; a constant config field and an empty column set aside
    assert list(parsed.headers) == ["name", "lr", "final_test_acc", "epoch_test_acc_99", "run_dir"]
    assert "Settings shared by every run, and empty columns (2)" in text
    assert "<th scope='row'>p</th><td>13</td>" in text and "<th scope='row'>error</th><td>—</td>" in text
    # a run's name links to its report, where there is one
    assert "<a href='runs/lr0.001/report.html'>lr0.001</a>" in text and "runs/lr0.01/report.html" not in text
    assert text.count("src='data:image/png;base64,") == 1 and "test_acc_vs_lr.png" in text
    assert "lr = [0.001, 0.003, 0.01, 0.1]" in text  # the sweep's own file
    assert "98.00%" in text  # accuracies shown as percentages
    assert_self_contained(text)


# --- the page's assets ------------------------------------------------------------------------------------
NODE = shutil.which("node")


def package_files(suffix: str) -> list[Path]:
    root = importlib.resources.files("grokking")
    return sorted(Path(str(entry)) for entry in root.iterdir() if entry.name.endswith(suffix))


def test_every_javascript_file_of_the_package_parses():
    scripts = package_files(".js")
    assert {p.name for p in scripts} >= {a for a in ASSETS if a.endswith(".js")}
    if NODE is None:
        pytest.fail("node is not on PATH: it checks the report's JavaScript "
                    "(CI installs it: apt-get install -y nodejs)", pytrace=False)
    for script in scripts:
        result = subprocess.run([NODE, "--check", str(script)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{script.name}: {result.stderr}"


def test_the_page_inlines_the_stylesheet_and_scripts(tiny_run):
    text = write_report(tiny_run).read_text()
    assert set(ASSETS) == {p.name for p in package_files(".js") + package_files(".css")}
    for name in ASSETS:
        content = importlib.resources.files("grokking").joinpath(name).read_text(encoding="utf-8")
        assert content.strip() and content in text, name
        # the asset cannot end the element it is inlined in
        assert "</script" not in content.lower() and "</style" not in content.lower(), name
    # the error trap comes before the page's script, in <head>, so that it sees that script's errors
    assert text.index("window.reportErrors = []") < text.index("</head>") < text.index('"use strict"')
    assert_self_contained(text)


def test_report_errors_are_input_errors(tmp_path):
    with pytest.raises(ReportError) as caught:
        write_report(tmp_path / "missing")
    assert isinstance(caught.value, InputError) and caught.value.exit_status == 2


# --- the CLI --------------------------------------------------------------------------------------------
def test_cli_report(tiny_run, sweep_dir, capsys):
    (tiny_run / "report.html").unlink()
    assert main(["report", str(tiny_run)]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_run / "report.html")
    assert (tiny_run / "report.html").is_file()
    # --runs: a sweep's runs get their own reports, and the table links them
    run = sweep_dir / "runs" / "lr0.01"
    shutil.rmtree(run)
    shutil.copytree(tiny_run, run)
    (run / "report.html").unlink()
    assert main(["report", str(sweep_dir), "--runs"]) == 0
    assert (run / "report.html").is_file()
    assert "<a href='runs/lr0.01/report.html'>lr0.01</a>" in (sweep_dir / "report.html").read_text()


@pytest.mark.parametrize("make_path", [lambda tmp: tmp, lambda tmp: tmp / "missing",
                                       lambda tmp: (tmp / "file.txt", (tmp / "file.txt").write_text("x"))[0]],
                         ids=["empty-dir", "missing", "file"])
def test_cli_report_refuses_other_paths(tmp_path, capsys, make_path):
    path = make_path(tmp_path)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grokking: error: report:") and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


# --- headless Chromium -------------------------------------------------------------------------------------
def chromium(url: str, *args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium, with a proxy that refuses everything: any network fetch would fail."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
               f"--user-data-dir={profile}", *args, url]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def rendered_status(url: str, profile: Path) -> StatusAndRows:
    return parse(chromium(url, "--dump-dom", profile=profile).stdout)


@needs_chromium
def test_run_report_renders_in_chromium(analysed_run, tmp_path):
    run = write_run_dir(tmp_path / "long", grokking_curve(5000))  # long, downsampled, both 99% markers
    shutil.copytree(analysed_run[0] / "analysis", run / "analysis")  # its figures, to check they load
    url = write_report(run).as_uri()

    dom = chromium(url, "--dump-dom", profile=tmp_path / "profile").stdout
    status = parse(dom).status
    assert status["data-errors"] == "0", status
    assert status["data-charts-rendered"] == status["data-charts-expected"] == "3"
    assert int(status["data-images-total"]) >= 4 and status["data-images-loaded"] == status["data-images-total"]
    assert len(re.findall(r'<path d="M[^"]+" [^>]*data-series="', dom)) == 5  # 2 loss, 2 accuracy, 1 norm

    shot = tmp_path / "report.png"
    chromium(url, f"--screenshot={shot}", "--window-size=1200,2000", profile=tmp_path / "profile")
    from PIL import Image

    charts = np.asarray(Image.open(shot).convert("RGB").crop((0, 250, 1200, 1700)), dtype=int)  # the 3 charts
    pixels = charts.reshape(-1, 3)
    non_white = (pixels.min(axis=1) < 235).mean()
    assert non_white > 0.03, f"chart area looks blank ({non_white:.1%} non-white)"
    assert len(np.unique(pixels, axis=0)) > 100  # lines, text, antialiasing: many colours
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # the train and test curves
        drawn = (np.abs(pixels - np.array(color)).max(axis=1) <= 12).sum()
        assert drawn > 200, f"no curve drawn in {color} ({drawn} pixels)"


@needs_chromium
def test_sweep_table_sorts_in_chromium(sweep_dir, tmp_path):
    url = write_report(sweep_dir).as_uri()
    parsed = rendered_status(url + "#sort=final_test_acc:desc", tmp_path / "profile")
    assert parsed.status["data-errors"] == "0"
    assert [row[2] for row in parsed.rows] == ["1.0", "0.98", "0.05", "nan"]  # numeric order, nan last
    assert parsed.headers["final_test_acc"] == "descending"
    parsed = rendered_status(url + "#sort=epoch_test_acc_99", tmp_path / "profile")
    assert [row[3] for row in parsed.rows] == ["900", "4000", "12000", ""]  # numbers, not text; blank last
    assert parsed.status["data-images-loaded"] == parsed.status["data-images-total"] == "1"


@needs_chromium
def test_script_errors_are_reported_in_the_dom(tiny_run, tmp_path):
    """The health marker is not vacuous: a broken script shows up as data-errors."""
    broken = tmp_path / "broken.html"
    broken.write_text(write_report(tiny_run).read_text().replace("JSON.parse(", "JSON.parze(", 1))
    status = rendered_status(broken.as_uri(), tmp_path / "profile").status
    assert status["data-errors"] == "1" and status["data-charts-rendered"] == "0"


INTERACT_JS = """<script>
// Drive the page as a person would: hover the middle of the loss chart, hide the test curve,
// switch the epoch axis to log scale; record what the page shows in data-* attributes.
const overlay = document.querySelector("#chart-loss svg rect[fill=transparent]");  // the plot area
const box = overlay.getBoundingClientRect();
overlay.dispatchEvent(new MouseEvent("mousemove",
  { clientX: box.left + box.width * 0.5, clientY: box.top + box.height * 0.5, bubbles: true }));
document.body.dataset.tooltip = document.querySelector("#chart-loss .tooltip").textContent;
document.body.dataset.tooltipShown = document.querySelector("#chart-loss .tooltip").style.display;
const testButton = Array.from(document.querySelectorAll("#chart-loss .legend button")).find(b => b.textContent === "test");
testButton.click();
document.body.dataset.lossCurves = document.querySelectorAll("#chart-loss path[data-series]").length;
const logX = document.getElementById("log-x");
logX.checked = true;
logX.dispatchEvent(new Event("change"));
const xTicks = Array.from(document.querySelectorAll("#chart-accuracy .axis text[text-anchor=middle]"));
document.body.dataset.xTicks = xTicks.map(t => t.textContent + "@" + Math.round(+t.getAttribute("x"))).join(",");
document.body.dataset.lossYTicks = Array.from(document.querySelectorAll("#chart-loss .axis text[text-anchor=end]"))
  .map(t => t.textContent).join(",");
</script></body>"""


@needs_chromium
def test_hover_legend_and_log_axis_work_in_chromium(tmp_path):
    run = write_run_dir(tmp_path / "long", grokking_curve(5000))
    page = tmp_path / "interact.html"
    page.write_text(write_report(run).read_text().replace("</body>", INTERACT_JS, 1))
    dom = chromium(page.as_uri(), "--dump-dom", "--window-size=1200,2000", profile=tmp_path / "profile").stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body))
    assert parse(dom).status["data-errors"] == "0"
    assert attrs["tooltip-shown"] == "block"
    # The middle of the plot is epoch ~25000 (of 0..49990); the tooltip names the epoch and both curves' values.
    hovered = re.match(r"epoch (\d+)● train: (\S+)● test: (\S+)$", attrs["tooltip"])
    assert hovered, attrs["tooltip"]
    assert abs(int(hovered.group(1)) - 25000) < 500 and float(hovered.group(3)) > 1
    assert attrs["loss-curves"] == "1"  # the test curve was hidden from the legend
    # log loss axis: ticks at powers of ten (every other one over 9 decades), from 1e-7 to 1e2
    y_ticks = [float(t) for t in attrs["loss-y-ticks"].split(",")]
    exponents = [round(math.log10(t)) for t in y_ticks]
    assert y_ticks == [10.0 ** e for e in exponents] and len(set(np.diff(exponents))) == 1, attrs["loss-y-ticks"]
    assert exponents[0] >= -7 and exponents[-1] <= 2 and len(exponents) >= 4
    # log epoch axis: powers of ten equally spaced, the axis title says so
    ticks = dict(tick.rsplit("@", 1) for tick in attrs["x-ticks"].split(","))
    assert ticks.pop("epoch (log scale)")
    spacing = [int(ticks[b]) - int(ticks[a]) for a, b in (("100", "1000"), ("1000", "10000"))]
    assert spacing[0] > 100 and abs(spacing[0] - spacing[1]) <= 1, attrs["x-ticks"]
