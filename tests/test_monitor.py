"""Live monitoring: TensorBoard event files and W&B runs hold exactly metrics.jsonl; W&B picks its
mode as W&B would (online when logged in, offline when asked or without credentials)."""
from __future__ import annotations

import importlib.util
import itertools
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from grokking import monitor
from grokking.cli import main
from grokking.config import Config, ConfigError
from grokking.monitor import (
    WANDB_ID_FILE,
    WANDB_MODES,
    MonitorUnavailable,
    make_callbacks,
    scalars,
    wandb_has_credentials,
    wandb_mode,
)
from grokking.train import read_metrics, resume, train


NEEDS_MONITOR = "needs the 'monitor' extra: pip install 'grokking-lab[monitor]'"


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
    pytest.importorskip("tensorboard", reason=NEEDS_MONITOR)
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
    pytest.importorskip("tensorboard", reason=NEEDS_MONITOR)
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
    pytest.importorskip("tensorboard", reason=NEEDS_MONITOR)
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
        assert "pip install 'grokking-lab[monitor]'" in str(caught.value) and "\n" not in str(caught.value)
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "5",
                 "--tensorboard", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "grokking-lab[monitor]" in err
    assert not out.exists()  # refused before anything was written


# --- W&B ------------------------------------------------------------------------------------------------
def wandb_history(run_file: Path) -> list[dict]:
    """The history rows of an offline ``.wandb`` file. The file is a LevelDB-style log (a
    7-byte W&B header, then 32 KiB blocks of checksummed, possibly fragmented records) of
    wandb's Record protobufs; wandb itself ships no public reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    # a new header means this wandb changed its file format: the reader below needs updating
    assert data[:4] == b":W&B" and data[4:7] == b"\xe1\xbe\x00", f"unknown .wandb file header {data[:7]!r}"
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


FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, the shape of a W&B API key; no account's


@pytest.fixture
def no_wandb_account(tmp_path, monkeypatch):
    """An environment in which W&B finds no credentials and could reach no server: the user's
    netrc, settings and keys are out of sight (this test never reads them) and the W&B host is
    a local port with nothing listening, so any attempt to go online fails at once."""
    pytest.importorskip("wandb", reason=NEEDS_MONITOR)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_DISABLED", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / ".config" / "wandb"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_SILENT", "true")
    return home


def logged_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def assert_history_is_the_metrics(run_file: Path, records: list[dict]) -> None:
    history = wandb_history(run_file)
    assert [row["_step"] for row in history] == [record["epoch"] for record in records]
    for row, record in zip(history, records):
        for key, value in scalars(record).items():
            assert row[key] == pytest.approx(value, rel=1e-12), key


def test_wandb_without_credentials_logs_offline_into_the_run_dir(tmp_path, no_wandb_account):
    assert wandb_has_credentials() is False
    records = tiny_run(tmp_path / "run", wandb=True)
    [run_file] = logged_runs(tmp_path / "run")
    assert_history_is_the_metrics(run_file, records)


def test_wandb_offline_when_asked_and_a_resume_continues_the_same_run(tmp_path, no_wandb_account, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # logged in, but the environment asks for offline
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "run"
    cfg = Config().replace(p=13, d_model=32, d_mlp=64, epochs=20, eval_every=5, checkpoint_every=10,
                           checkpoint_log=0, report=False, wandb=True)
    train(cfg, out, progress=False)
    resume(out, progress=False, epochs=30)
    run_id = (out / "wandb" / WANDB_ID_FILE).read_text().strip()
    first, second = logged_runs(out)
    assert first.parent.name.endswith(run_id) and second.parent.name.endswith(run_id)  # one W&B run, resumed
    records = read_metrics(out)
    assert [row["_step"] for row in wandb_history(first)] == [0, 5, 10, 15, 20]
    # the resume continues from the epoch-20 checkpoint: its W&B part holds the evaluations after it
    assert_history_is_the_metrics(second, [r for r in records if r["epoch"] > 20])


def test_wandb_online_without_credentials_is_refused_before_training(tmp_path, no_wandb_account, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError, match="needs credentials"):
        make_callbacks(Config().replace(wandb=True), tmp_path / "run")
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--p", "13", "--d-model", "32", "--d-mlp", "64", "--epochs", "5",
                 "--wandb", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "wandb login" in err
    assert not out.exists()


def test_wandb_finds_credentials_where_wandb_looks(no_wandb_account, monkeypatch):
    assert wandb_has_credentials() is False
    (no_wandb_account / ".netrc").write_text(f"machine 127.0.0.1:9\n  login user\n  password {FAKE_KEY}\n")
    assert wandb_has_credentials() is True  # `wandb login` writes the netrc entry for the W&B host
    (no_wandb_account / ".netrc").unlink()
    assert wandb_has_credentials() is False
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert wandb_has_credentials() is True
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_has_credentials({"WANDB_IDENTITY_TOKEN_FILE": "/some/token"}) is True


ALIASES = {"dryrun": "offline", "run": "online"}
SPELLINGS = [None, "", "  "] + [m for mode in WANDB_MODES for m in (mode, mode.upper())] + list(ALIASES)


def canonical(value: str | None) -> str | None:
    """The mode a spelling names, or None for 'not set'."""
    if value is None or not value.strip():
        return None
    return ALIASES.get(value.strip().lower(), value.strip().lower())


@pytest.mark.parametrize("has_credentials", [False, True])
def test_wandb_mode_over_every_combination(has_credentials):
    checked = 0
    for requested, env_mode, disabled in itertools.product(SPELLINGS, SPELLINGS, [None, "true", "1", "false"]):
        env = {k: v for k, v in (("WANDB_MODE", env_mode), ("WANDB_DISABLED", disabled)) if v is not None}
        if canonical(requested) is not None:
            expected = canonical(requested)  # code beats the environment, as wandb.init(mode=) does
        elif canonical(env_mode) is not None:
            expected = canonical(env_mode)
        elif disabled in ("true", "1"):
            expected = "disabled"
        else:
            expected = "online" if has_credentials else "offline"
        assert wandb_mode(env, has_credentials, requested) == expected, (requested, env, has_credentials)
        checked += 1
    assert checked == len(SPELLINGS) ** 2 * 4


def test_wandb_mode_refuses_unknown_modes_in_one_line():
    for env, requested, named in (({"WANDB_MODE": "onlne"}, None, "WANDB_MODE='onlne'"),
                                  ({}, "cloud", "mode='cloud'"), ({"WANDB_MODE": "online"}, "x", "mode='x'")):
        with pytest.raises(ConfigError) as caught:
            wandb_mode(env, True, requested)
        assert named in str(caught.value) and "\n" not in str(caught.value)
