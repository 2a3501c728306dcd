"""Bad input everywhere: configs, command lines, config files and checkpoint files.

Property-based (hypothesis) tests throw random and malformed input at ``config.from_dict``
and at the CLI (``grokking.cli.main`` in-process). Every case must end in a valid Config /
exit 0 with a complete run directory, or a ConfigError / exit 2 with exactly one line on
stderr that names the field, and nothing written. Run with ``-s`` to see the counts of
examples tried and their outcomes.
"""
from __future__ import annotations

import builtins
import itertools
import json
import math
import os
import pickle
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import tiny_config
from grokking.checkpoint import CheckpointError, load_checkpoint, load_model
from grokking.cli import main
from grokking.config import FIELDS, PRESETS, Config, ConfigError, _coerce, field_type, from_dict, validate
from grokking.data import OPERATIONS
from grokking.model import Transformer
from grokking.train import train

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
CLI_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def report(title: str, counts: Counter) -> None:
    print(f"\n{title}: {sum(counts.values())} examples")
    for outcome, n in counts.most_common():
        print(f"  {n:5d}  {outcome}")


def kind_of(message: str) -> str:
    """Which check refused the input, for the outcome counts."""
    for pattern, kind in (("unknown config field", "unknown key"), ("finite", "non-finite number"),
                          ("must be one of", "not an allowed value"), ("must be [<>]", "out of range"),
                          ("must be (a|an|true)", "wrong type"), ("divisible|prime|empty train", "relation"),
                          ("must be set", "missing")):
        if re.search(pattern, message):
            return kind
    return "other"


# --- values --------------------------------------------------------------------------------------------
JUNK_STRINGS = ["", " ", "nan", "NaN", "inf", "-inf", "Infinity", "-1", "-0.5", "0", "1e400", "-1e400", "1" * 5000,
                "abc", "1.5", "0x10", "None", "null", "true", "yes", "1e9", "10**9", "\n", "5\n6", "\x00", "🙂", "--",
                "-", "1_000", " 7 ", "3.0", "2**31", "1e-320", "[]", "{}"]
junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.just(5000).map(lambda digits: 10**digits), st.floats(),  # (st.just(10**5000) breaks hypothesis's own repr) st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=20), st.sampled_from(JUNK_STRINGS), st.binary(max_size=8),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers()), st.complex_numbers(), st.just(float("nan")), st.just(math.inf), st.just(-math.inf),
)


def valid_value(name: str) -> st.SearchStrategy:
    """Values the field accepts (sometimes as strings, as the CLI and TOML give them)."""
    meta, want = FIELDS[name].metadata, field_type(name)
    if name == "op":
        return st.sampled_from(sorted(OPERATIONS))
    if meta["choices"]:
        return st.sampled_from(meta["choices"])
    if want is bool:
        return st.one_of(st.booleans(), st.sampled_from(["true", "false", "1", "0", "yes", "off"]))
    lo, hi = meta["min"], meta["max"]
    if want is int:
        values = st.integers(min_value=int(lo), max_value=int(hi))
        return st.one_of(values, values.map(str))
    floats = st.floats(min_value=lo, max_value=hi, exclude_min=meta["min_open"], exclude_max=meta["max_open"])
    strategy = st.one_of(floats, floats.map(repr))
    return st.one_of(strategy, st.none()) if meta["optional"] else strategy


names = st.sampled_from(sorted(FIELDS))
keys = st.one_of(names, names.map(lambda n: n.replace("_", "-")), st.text(max_size=12), st.integers(), st.none(),
                 st.floats(allow_nan=False), st.sampled_from(["P", "lr ", "d_model\n", "config", "out", "__class__"]))


@st.composite
def config_dicts(draw) -> dict:
    """Mostly valid values (so that the relations between fields get exercised), with junk values
    for known fields and, less often, random keys mixed in."""
    d = {}
    for _ in range(draw(st.integers(0, 8))):
        name = draw(names)
        d[name] = draw(valid_value(name))
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        d[draw(names)] = draw(junk)
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1]))):
        key = draw(keys)
        d[key] = draw(st.one_of(junk, valid_value(key) if key in FIELDS else junk))
    return d


def check_config_error(err: ConfigError, given_keys) -> None:
    message = str(err)
    assert len(message.splitlines()) == 1 and message.strip() == message, repr(message)
    assert message.startswith(f"{err.field}: "), message
    shown = {k if isinstance(k, str) and k.isidentifier() else repr(k) for k in given_keys}
    assert err.field in FIELDS or err.field in shown, (err.field, message)


def check_config(cfg: Config) -> None:
    assert validate(cfg) is cfg
    for name in FIELDS:
        value = getattr(cfg, name)
        if value is None:
            assert FIELDS[name].metadata["optional"]
        else:
            assert type(value) is field_type(name), (name, value)
            assert not isinstance(value, float) or math.isfinite(value)
    assert from_dict(cfg.to_dict()) == cfg


def test_from_dict_returns_a_valid_config_or_a_one_line_config_error():
    counts = Counter()

    @FUZZ
    @given(config_dicts())
    def check(d):
        try:
            cfg = from_dict(d)
        except ConfigError as err:
            check_config_error(err, d.keys())
            counts[f"ConfigError: {kind_of(str(err))}"] += 1
        else:
            check_config(cfg)
            counts["valid Config"] += 1

    check()
    report("config.from_dict fuzz", counts)
    assert counts["valid Config"] and sum(counts.values()) > counts["valid Config"]


def test_every_field_refuses_junk_of_every_kind():
    """Each field against each kind of junk value (wrong type, NaN, inf, negative, huge, strings)."""
    counts = Counter()

    @FUZZ
    @given(names, junk)
    def check(name, value):
        try:
            cfg = from_dict({name: value})
        except ConfigError as err:
            check_config_error(err, [name])
            assert err.field in (name, "frac", "p", "d_model"), (name, value, str(err))
            counts[f"ConfigError: {kind_of(str(err))}"] += 1
        else:
            check_config(cfg)
            counts["accepted (coerced to a valid value)"] += 1

    check()
    report("one field, junk value", counts)


BAD = [  # (mapping, field the message must name)
    ({"p": float("nan")}, "p"), ({"lr": float("nan")}, "lr"), ({"lr": math.inf}, "lr"), ({"lr": "-inf"}, "lr"),
    ({"lr": 0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": 10**400}, "lr"), ({"weight_decay": "1e400"}, "weight_decay"),
    ({"p": -5}, "p"), ({"p": 1}, "p"), ({"p": 10**30}, "p"), ({"p": "1" * 5000}, "p"), ({"p": "13.5"}, "p"),
    ({"p": True}, "p"), ({"p": [13]}, "p"), ({"p": None}, "p"), ({"epochs": -1}, "epochs"),
    ({"seed": 2**31}, "seed"), ({"frac": 0}, "frac"), ({"frac": 1.0}, "frac"), ({"frac": "0.3x"}, "frac"),
    ({"frac": 0.001, "p": 5}, "frac"), ({"frac": 0.9, "p": 5, "op": "divide"}, "frac"), ({"d_model": 130, "n_heads": 4}, "d_model"),
    ({"n_heads": 0}, "n_heads"), ({"op": "divide", "p": 100}, "p"), ({"op": "oddsub", "p": 9}, "p"),
    ({"op": "pow"}, "op"), ({"op": 3}, "op"), ({"optimizer": "ADAMW"}, "optimizer"), ({"device": "tpu"}, "device"),
    ({"layernorm": "maybe"}, "layernorm"), ({"layernorm": 2}, "layernorm"), ({"beta2": 1.0}, "beta2"),
    ({"stop_at_test_acc": 1.5}, "stop_at_test_acc"), ({"stop_at_test_acc": "nan"}, "stop_at_test_acc"),
    ({"batch_size": 2.5}, "batch_size"), ({"grokfast_window": 0}, "grokfast_window"),
    ({"learning_rate": 1e-3}, "learning_rate"), ({"d_model\n": 8}, "'d_model\\n'"), ({7: 1}, "7"),
]


@pytest.mark.parametrize("mapping,field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_fields_are_named_in_one_line(mapping, field):
    with pytest.raises(ConfigError) as info:
        from_dict(mapping)
    assert info.value.field == field and len(str(info.value).splitlines()) == 1


# --- the CLI --------------------------------------------------------------------------------------------
# Always tiny unless a fuzzed flag overrides it; the fuzz never makes a run big (see SAFE_CAPS).
BASE = ["--epochs", "1", "--max-steps", "20", "--d-model", "8", "--d-mlp", "8", "--n-heads", "1", "--p", "5",
        "--checkpoint-every", "0", "--checkpoint-log", "0", "--eval-every", "1"]
SAFETY = ["--no-compile", "--no-tensorboard", "--no-wandb", "--no-report", "--quiet"]  # last: they always win
FUZZED_FIELDS = sorted(n for n in FIELDS if n not in ("compile", "tensorboard", "wandb", "report"))
# Valid values above these would make a real (slow or huge) run: the fuzz only uses values that are
# invalid or within them. max_steps must stay >= 1 so that no fuzzed run is unbounded.
SAFE_CAPS = {"p": 13, "d_model": 16, "d_head": 8, "d_mlp": 16, "n_layers": 2, "n_heads": 16, "epochs": 3,
             "max_steps": 50, "grokfast_window": 10, "checkpoint_log": 50}
SAFE_MIN = {"max_steps": 1}
COMPLETE_RUN = ("config.json", "metrics.jsonl", "summary.json", "curves.png", "checkpoints/last.safetensors")


def is_safe(name: str, value: str) -> bool:
    """The value is refused by validation, or it is valid and keeps the run tiny."""
    try:
        x = _coerce(name, value)
    except ConfigError:
        return True
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return True
    meta = FIELDS[name].metadata
    if (meta["min"] is not None and x < meta["min"]) or (meta["max"] is not None and x > meta["max"]):
        return True
    return SAFE_MIN.get(name, -math.inf) <= x <= SAFE_CAPS.get(name, math.inf)


def small_valid(name: str) -> st.SearchStrategy:
    if name in SAFE_CAPS:
        lo = max(int(FIELDS[name].metadata["min"]), SAFE_MIN.get(name, 0))
        return st.integers(lo, SAFE_CAPS[name]).map(str)
    return valid_value(name).filter(lambda v: v is not None).map(str)


cli_junk = st.one_of(st.sampled_from(JUNK_STRINGS), st.text(max_size=12), st.integers(-(10**25), 10**25).map(str),
                     st.floats().map(repr))


@st.composite
def flag_pairs(draw) -> list[str]:
    argv = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(st.sampled_from(FUZZED_FIELDS))
        flag = "--" + name.replace("_", "-")
        if field_type(name) is bool:
            choice = draw(st.sampled_from(["on", "on", "off", "off", "junk"]))
            argv += [flag] if choice == "on" else ["--no-" + flag[2:]] if choice == "off" else [flag, draw(cli_junk)]
            continue
        value = draw(st.one_of(small_valid(name), cli_junk).filter(lambda v: is_safe(name, v)))
        argv += [flag, value] if draw(st.booleans()) else [f"{flag}={value}"]  # '=' lets values start with '-'
    return argv


# junk arguments: positionals, unknown options, dangling flags (never prefixes of real ones: argparse abbreviates)
junk_args = st.one_of(st.text(min_size=1, max_size=8).filter(lambda s: not s.startswith("-")),
                      st.sampled_from(["--zzz", "--zzz=1", "-z", "--", "--p", "--lr", "--config", "--preset",
                                       "--resume", "--resume=x", "--epochs", "--op"]))


def write_config_file(directory: Path, kind: str, body) -> Path:
    if kind == "json":
        path = directory / "cfg.json"
        path.write_text(json.dumps(body))
    elif kind == "toml":
        path = directory / "cfg.toml"
        lines = []
        for key, value in body.items():
            text = json.dumps(value) if isinstance(value, (str, bool, int, float)) else json.dumps(str(value))
            text = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.get(text, text)
            lines.append(f"{json.dumps(key)} = {text}")
        path.write_text("\n".join(lines) + "\n")
    elif kind == "bytes":
        path = directory / "cfg.toml"
        path.write_bytes(body)
    else:
        path = directory / "missing.toml"
    return path


config_bodies = st.dictionaries(st.sampled_from([*FUZZED_FIELDS, "colour", "d-model"]),
                                st.one_of(cli_junk, st.integers(-5, 13), st.booleans(), st.floats()), max_size=4
                                ).filter(lambda d: all(is_safe(k.replace("-", "_"), v) for k, v in d.items()
                                                       if k.replace("-", "_") in FIELDS))


@st.composite
def cli_cases(draw):
    extra = []
    if draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["json", "toml", "bytes", "missing"]))
        body = draw(st.binary(max_size=30)) if kind == "bytes" else draw(config_bodies)
        extra.append(("config", kind, body))
    if draw(st.integers(0, 5)) == 0:
        extra.append(("preset", draw(st.one_of(st.sampled_from(sorted(PRESETS)), cli_junk))))
    pairs = draw(flag_pairs())
    junk_tail = draw(st.lists(junk_args, min_size=1, max_size=2)) if draw(st.integers(0, 5)) == 0 else []
    out_state = draw(st.sampled_from(["absent", "absent", "absent", "empty", "full", "file"]))
    overwrite = draw(st.integers(0, 4)) == 0
    order = draw(st.permutations(range(len(junk_tail) + 1)))
    return extra, pairs, junk_tail, out_state, overwrite, order


def dir_state(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return ("file", path.read_bytes())
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else b"") for p in path.rglob("*"))


def check_complete_run(out: Path) -> None:
    for name in COMPLETE_RUN:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] in ("completed", "stopped_early")
    load_checkpoint(out / "checkpoints" / "last.safetensors")
    assert not list(out.rglob("*.tmp"))


def test_cli_train_fuzz_exit_0_with_a_complete_run_or_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing can land in the repository, whatever the argv
    counts = Counter()
    serial = itertools.count()

    @CLI_FUZZ
    @given(cli_cases())
    def check(case):
        extra, pairs, junk_tail, out_state, overwrite, order = case
        case_dir = tmp_path / f"case{next(serial)}"
        case_dir.mkdir()
        out = case_dir / "run"
        if out_state == "empty":
            out.mkdir()
        elif out_state == "full":
            out.mkdir()
            (out / "keep.txt").write_text("not a run")
        elif out_state == "file":
            out.write_text("a file")
        argv = ["train", "--out", str(out), *BASE]
        for item in extra:
            if item[0] == "config":
                argv += ["--config", str(write_config_file(case_dir, item[1], item[2]))]
            else:
                argv += ["--preset", item[1]]
        argv += pairs
        if overwrite:
            argv.append("--overwrite")
        argv += SAFETY
        for position, token in zip(order, junk_tail):  # junk anywhere after the subcommand
            argv.insert(1 + position * 2 % max(len(argv) - 1, 1), token)
        before = dir_state(out)
        capsys.readouterr()
        rc = main(argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        if rc == 0:
            check_complete_run(out)
            assert json.loads(captured.out)["out"] == str(out)
            counts["exit 0, complete run directory"] += 1
        elif rc == 2:
            lines = captured.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("grokking: error: "), (argv, captured.err)
            after = dir_state(out)
            assert after == before or (before is None and after == []), (argv, before, after)
            counts[f"exit 2: {classify_cli_error(lines[0])}"] += 1
        elif rc == 1:  # a valid config that diverges (say lr 100, weight decay 1e4): a clean failure
            lines = captured.err.splitlines()
            assert len(lines) == 1 and "non-finite" in lines[0], captured.err
            assert json.loads((out / "summary.json").read_text())["status"] == "failed"
            counts["exit 1, numerical fault, status failed"] += 1
        else:
            raise AssertionError(f"exit {rc}: {argv}")

    check()
    report("grokking train CLI fuzz", counts)
    assert counts["exit 0, complete run directory"] and sum(v for k, v in counts.items() if k.startswith("exit 2"))


def classify_cli_error(line: str) -> str:
    for pattern, kind in (("unrecognized arguments|expected one argument|invalid choice|ignored explicit|not allowed",
                           "argparse (unknown/incomplete argument)"),
                          ("--resume takes its config", "--resume with other flags"),
                          ("is not empty|exists and is not a directory", "--out refused"),
                          (r"config: ", "config file unreadable"), ("resume:", "resume refused")):
        if re.search(pattern, line):
            return kind
    field = line.removeprefix("grokking: error: ").split(":")[0]
    return f"field {field}: {kind_of(line)}" if field in FIELDS else f"other ({line[:60]})"


@pytest.mark.parametrize("argv,field", [
    (["--lr", "nan"], "lr"), (["--lr", "inf"], "lr"), (["--lr", "1e400"], "lr"), (["--epochs", "-1"], "epochs"),
    (["--epochs", "1.5"], "epochs"), (["--p", "1" * 5000], "p"), (["--seed", "abc"], "seed"),
    (["--n-heads", "3"], "d_model"), (["--op", "divide", "--p", "12"], "p"), (["--frac", "0.00001"], "frac"),
    (["--device", "cuda" if not torch.cuda.is_available() else "tpu"], "device"), (["--stop-at-test-acc", "2"], "stop_at_test_acc"),
    (["--op", "a\nb"], "op"), (["--out", ""], "out"), (["--preset", "nope"], "preset"), (["--zzz"], "unrecognized"),
    (["junk\nmore junk"], "unrecognized"), (["--layernorm", "yes"], "unrecognized"), (["--p"], "--p"),
])
def test_cli_bad_flags_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, argv, field):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    full = ["train", "--out", str(out), *argv] if "--out" not in argv else ["train", *argv]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and field in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()


CONFIG_FILES = [  # (file name, bytes, field or words the error must name)
    ("c.toml", b"p = 13\ncolour = 'red'\n", "colour"),
    ("c.toml", b"d-model = 130\n", "d_model"),
    ("c.toml", b"lr = nan\n", "lr"),
    ("c.toml", b"p = 12\nop = 'divide'\n", "p"),
    ("c.toml", b"[model]\nd_model = 8\n", "model"),
    ("c.toml", b"epochs = 1979-05-27\n", "epochs"),
    ("c.toml", b"p = 13\np = 17\n", "config"),
    ("c.toml", b"\xff\xfe\x00junk", "config"),
    ("c.json", b'{"lr": 1' + b"0" * 400 + b"}", "lr"),
    ("c.json", b'{"lr": NaN}', "lr"),
    ("c.json", b"[1, 2]", "config"),
    ("c.json", b"[" * 100000, "config"),
    ("c.json", b'{"p": 13', "config"),
    ("c.json", b'{"seed": -1}', "seed"),
]


@pytest.mark.parametrize("name,data,field", CONFIG_FILES, ids=[str(i) for i in range(len(CONFIG_FILES))])
def test_config_file_errors_one_line_exit_2(tmp_path, capsys, name, data, field):
    path = tmp_path / name
    path.write_bytes(data)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and field in err, err
    assert not out.exists()


def test_config_file_is_a_directory_or_missing(tmp_path, capsys):
    for path in (tmp_path, tmp_path / "nope.toml"):
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
        assert len(capsys.readouterr().err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


# --- checkpoint files ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    train(tiny_config(epochs=3, grokfast="ema", batch_size=16), out, progress=False)
    return out


def eval_error(path: Path, capsys) -> str:
    assert main(["eval", str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("grokking: error: "), err
    return err


def test_eval_missing_empty_garbage_and_checkpointless_dirs(tmp_path, capsys):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    (tmp_path / "garbage.safetensors").write_bytes(os.urandom(4096))
    (tmp_path / "huge_header.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")
    (tmp_path / "text.pth").write_text("hello")
    (tmp_path / "not_a_run").mkdir()
    for name in ("missing.safetensors", "empty.safetensors", "garbage.safetensors", "huge_header.safetensors",
                 "text.pth", "not_a_run"):
        eval_error(tmp_path / name, capsys)


def test_eval_of_a_truncated_checkpoint_is_refused_at_every_length(small_run, tmp_path, capsys):
    data = (small_run / "checkpoints" / "last.safetensors").read_bytes()
    header = int.from_bytes(data[:8], "little")
    cuts = sorted({*range(0, 24), *range(header - 4, header + 12), *range(0, len(data), max(len(data) // 60, 1)), len(data) - 1})
    truncated = tmp_path / "t.safetensors"
    for cut in cuts:
        truncated.write_bytes(data[:cut])
        with pytest.raises(CheckpointError):
            load_checkpoint(truncated)
        eval_error(truncated, capsys)
    print(f"\ntruncated checkpoint: {len(cuts)} lengths of {len(data)} bytes, all refused")


def test_a_tampered_checkpoint_fails_the_sha256_check(small_run, tmp_path, capsys):
    source = small_run / "checkpoints" / "last.safetensors"
    data = source.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    tampered = tmp_path / "tampered.safetensors"
    positions = [header, header + 1, (header + len(data)) // 2, len(data) - 1]
    for position in positions:  # one flipped bit in the tensor data
        flipped = bytearray(data)
        flipped[position] ^= 0x01
        tampered.write_bytes(bytes(flipped))
        with pytest.raises(CheckpointError, match="SHA-256"):
            load_checkpoint(tampered)
        assert "SHA-256" in eval_error(tampered, capsys)
    # An edit inside the metadata JSON (the stored epoch) is caught too.
    edited = data.replace(b'\\"epoch\\": 3', b'\\"epoch\\": 9', 1)
    assert edited != data
    tampered.write_bytes(edited)
    assert "SHA-256" in eval_error(tampered, capsys)


class RunsCommand:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class OpensFile:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


@pytest.mark.parametrize("payload", [RunsCommand, OpensFile])
@pytest.mark.parametrize("container", ["torch_zip", "legacy_pickle", "raw_pickle_protocol_0"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, capsys, payload, container):
    target = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    obj = {"model": {"embed.W_E": payload(str(target))}, "epoch": 1}
    if container == "torch_zip":
        torch.save(obj, evil)
    elif container == "legacy_pickle":
        torch.save(obj, evil, _use_new_zipfile_serialization=False)
    else:
        evil.write_bytes(pickle.dumps(obj, protocol=0))
    err = eval_error(evil, capsys)
    assert not target.exists()
    if container != "raw_pickle_protocol_0":  # protocol 0 has no magic: it is refused as an unknown format
        assert "refused" in err and "run code" in err
    with pytest.raises(CheckpointError):
        load_model(evil)
    assert not target.exists()


@pytest.fixture(scope="module")
def seed_files(tmp_path_factory) -> dict[str, Path]:
    """Seed-format checkpoints (a torch.save dict with the model's state_dict), zip and legacy."""
    directory = tmp_path_factory.mktemp("seed")
    cfg = tiny_config()
    state = Transformer(cfg).state_dict()
    files = {}
    for name, zip_format in (("zip", True), ("legacy", False)):
        files[name] = directory / f"{name}.pth"
        torch.save({"model": state, "epoch": 3}, files[name], _use_new_zipfile_serialization=zip_format)
    return files


def test_a_valid_seed_checkpoint_loads(seed_files, capsys):
    for path in seed_files.values():
        assert main(["eval", str(path), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["epoch"] == 3


@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_a_truncated_seed_checkpoint_is_refused(seed_files, tmp_path, capsys, kind):
    data = seed_files[kind].read_bytes()
    truncated = tmp_path / "t.pth"
    cuts = sorted({*range(0, 16), *range(16, len(data), max(len(data) // 40, 1)), len(data) - 1})
    for cut in cuts:
        truncated.write_bytes(data[:cut])
        eval_error(truncated, capsys)
    print(f"\ntruncated seed .pth ({kind}): {len(cuts)} lengths of {len(data)} bytes, all refused")


def test_seed_dicts_of_the_wrong_shape_are_refused(tmp_path, capsys):
    bad = [{"model": {"embed.W_E": 3}}, {"model": {"embed.W_E": torch.zeros(3)}}, {"model": {}}, [1, 2],
           {"model": Transformer(tiny_config()).state_dict(), "train_data": 5, "test_data": [(1, 2, 13)]},
           {"model": Transformer(tiny_config()).state_dict(), "train_data": [(99, 2, 13)], "test_data": [(1, 2, 13)]}]
    for i, obj in enumerate(bad):
        path = tmp_path / f"bad{i}.pth"
        torch.save(obj, path)
        eval_error(path, capsys)
