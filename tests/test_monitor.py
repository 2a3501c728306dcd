"""Live monitoring: TensorBoard event files and offline W&B runs hold exactly metrics.jsonl."""
from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from grokking import monitor
from grokking.cli import main
from grokking.config import Config, ConfigError
from grokking.monitor import MonitorUnavailable, make_callbacks, scalars
from grokking.train import read_metrics, train


def tiny_run(out: Path, **changes) -> list[dict]:
    cfg = Config().replace(p=13, d_model=32, d_mlp=64, epochs=30, eval_every=5, checkpoint_every=0,
                           checkpoint_log=0, report=False, **changes)
    train(cfg, out, progress=False)
    return read_metrics(out)


def tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every event
    accumulator.Reload()
    return {tag: {event.step: event.value for event in accumulator.Scalars(tag)}
            for tag in accumulator.Tags()["scalars"]}


def test_tensorboard_logs_the_metrics(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the 'monitor' extra: pip install 'grokking[monitor]'")
    records = tiny_run(tmp_path / "run", tensorboard=True)
    logged = tensorboard_scalars(tmp_path / "run" / "tensorboard")
    expected_tags = set(records[0]) - {"epoch"}
    assert set(logged) == expected_tags
    for record in records:
        for key, value in scalars(record).items():
            # event files store float32
            assert logged[key][record["epoch"]] == float(np.float32(value)), (key, record["epoch"])
    assert all(len(steps) == len(records) for steps in logged.values())


def test_tensorboard_resume_purges_repeated_steps(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the 'monitor' extra: pip install 'grokking[monitor]'")
    cfg = Config().replace(tensorboard=True)

    def log(epochs: list[int], loss: float) -> None:
        [callback] = make_callbacks(cfg, tmp_path)
        for epoch in epochs:
            callback.on_eval({"epoch": epoch, "train_loss": loss})
        callback.close()

    log([0, 5, 10, 15], loss=1.0)
    log([10, 15, 20], loss=2.0)  # a resume from epoch 10's checkpoint
    assert tensorboard_scalars(tmp_path / "tensorboard")["train_loss"] == {0: 1.0, 5: 1.0, 10: 2.0, 15: 2.0, 20: 2.0}


def test_callbacks_open_nothing_before_the_first_evaluation(tmp_path):
    """The trainer may clear the run directory (--overwrite) after building its callbacks."""
    pytest.importorskip("tensorboard", reason="needs the 'monitor' extra: pip install 'grokking[monitor]'")
    callbacks = make_callbacks(Config().replace(tensorboard=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    for callback in callbacks:
        callback.close()


def test_missing_extra_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(monitor.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real_find_spec(name, *a))
    for option in ("tensorboard", "wandb"):
        with pytest.raises(MonitorUnavailable) as caught:
            make_callbacks(Config().replace(**{option: True}), tmp_path)
        assert isinstance(caught.value, ImportError) and isinstance(caught.value, ConfigError)
        assert "pip install 'grokking[monitor]'" in str(caught.value) and "\n" not in str(caught.value)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "5",
                 "--tensorboard", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "grokking[monitor]" in err
    assert not out.exists()  # refused before anything was written


# --- W&B ------------------------------------------------------------------------------------------------
def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline ``.wandb`` file. The file is a LevelDB-style log (a
    7-byte W&B header, then 32 KiB blocks of checksummed, possibly fragmented records) of
    wandb's Record protobufs; wandb itself ships no public reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    if data[:4] != b":W&B" or data[4:7] != b"\xe1\xbe\x00":
        pytest.skip(f"unknown .wandb file header {data[:7]!r} (this wandb version changed its format)")
    block, position, pending, rows = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's zero-filled tail
            position += block - position % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + 7])
        payload, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind == 0:  # zero padding: the end of what was written
            break
        pending = payload if kind in (1, 2) else pending + payload  # FULL/FIRST start, MIDDLE/LAST append
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


def test_wandb_offline_logs_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="needs the 'monitor' extra: pip install 'grokking[monitor]'")
    # Any attempt to reach a server would fail at once: this port has nothing listening.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_MODE", "online")  # the callback must force offline whatever the environment says
    records = tiny_run(tmp_path / "run", wandb=True)
    run_files = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1
    history = wandb_history(run_files[0])
    assert len(history) == len(records)
    for row, record in zip(history, records):
        assert row["_step"] == record["epoch"]
        for key, value in scalars(record).items():
            assert row[key] == pytest.approx(value, rel=1e-12), key
