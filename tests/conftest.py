"""Shared fixtures. The seed reference is loaded by path from ../shared (never imported by the package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from grokking.config import Config

# Test models are tiny: one thread is faster than two, and immune to OpenMP spin-waiting when
# the machine is shared (measured: a 40-epoch tiny run took 17 s with 2 threads under load, 0.1 s with 1).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SEED_REFERENCE = REPO.parent / "shared" / "reference" / "seed_reference.py"


def load_seed_reference():
    if not SEED_REFERENCE.exists():
        # The repository's tests need ../shared beside the checkout (CI has it): fail, never skip.
        pytest.fail(f"seed reference not found at {SEED_REFERENCE}: the tests need ../shared beside the checkout")
    spec = importlib.util.spec_from_file_location("seed_reference", SEED_REFERENCE)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("seed_reference", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def seed_reference():
    return load_seed_reference()


def tiny_config(**changes) -> Config:
    """A model small enough for a test to train in about a second."""
    base = dict(p=13, d_model=32, n_heads=4, d_mlp=64, epochs=40, eval_every=5, checkpoint_every=20,
                checkpoint_log=0, report=False)
    return Config().replace(**{**base, **changes})
