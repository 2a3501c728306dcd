"""How many threads a run computes with.

OpenMP threads spin while they wait for work. On a machine where another process is busy,
a run with as many threads as cores spends its time waiting for the core the neighbour holds:
measured on two cores (canonical run), 39 ms an epoch with two threads on a quiet machine and
135 ms beside one busy process, against 60-64 ms with one thread either way. The wait policy
(``OMP_WAIT_POLICY``) is read once, when the OpenMP runtime loads, so a library cannot change
it later; the thread count it can change.

``threads = N`` fixes the count: the run is then bit-for-bit reproducible, also on resume.
``threads = 0`` lets :class:`ThreadPolicy` choose between one thread and the count the process
had when the run started: it times real training epochs at each (interleaved, so that a
neighbour's load falls on both), keeps the faster, and tries again every ``every`` epochs or
as soon as an epoch takes much longer than the chosen count's measured time. Which counts were
used is recorded; another count rounds sums differently, so an automatic run is reproducible
only in distribution.

A fixed count is reproducible only once MKL's vector math (VML) has chosen its kernels, which
:func:`settle_vector_math` does at import (see there).
"""
from __future__ import annotations

import statistics
from contextlib import contextmanager
from typing import Any, Iterator

import torch

_vector_math_settled = False


def settle_vector_math() -> None:
    """Make MKL's vector math choose its CPU kernels now, from this thread alone.

    On CPU, PyTorch's ``exp``, ``log`` (and others) call MKL's VML (``vmdExp``, ``vmdLn``, ...)
    on each thread's chunk. VML finds its CPU type lazily, on its first call in the process, and
    not atomically (MKL 2024.2, linked into the PyTorch 2.13 CPU wheels,
    ``mkl_vml_serv_cpu_detect``): it stores the raw ``cpuid`` code (9 on this AVX-512 machine)
    in a static, then the VML type that code maps to (5). A second thread entering VML in that
    window (the first parallel ``exp`` of a process, both OpenMP threads arriving together) reads
    the raw code and runs another table's kernel on its whole chunk: here the AVX2 "enhanced
    performance" ``exp``, relative error up to 3.3e-9 instead of 1 ulp. So step 0's float64
    cross-entropy of the canonical run at 2 threads came out different in 1 process in 20-30
    (its gradient, at learning rate 0, reaches AdamW's moments: the weights differ from epoch 2
    on), and in 2 of 5 when a matrix product just before has both threads spinning. Every later
    call is right. One call of one element, serial, before any parallel region, sets the static
    for the whole process (about 0.7 ms, once; nothing per step); idempotent, harmless without
    MKL."""
    global _vector_math_settled
    if not _vector_math_settled:
        torch.ones(1, dtype=torch.float64).exp_()
        _vector_math_settled = True


class ThreadPolicy:
    """Chooses the thread count for each training epoch.

    The loop calls :meth:`start` once, then :meth:`before_epoch` before and :meth:`after_epoch`
    (with the epoch's wall seconds) after every training epoch; the policy sets ``torch``'s
    thread count in between. ``automatic=False`` (a GPU run, whose host threads only launch
    kernels) keeps the process's count when ``requested`` is 0.
    """

    def __init__(self, requested: int, *, every: int = 2000, trial: int = 3, slow: float = 1.5, patience: int = 5,
                 most: int | None = None, automatic: bool = True):
        self.requested = requested
        self.most = most if most is not None else torch.get_num_threads()
        if requested > 0:
            self.candidates = [requested]
        else:
            self.candidates = sorted({1, max(1, self.most)}) if automatic else [max(1, self.most)]
        self.every, self.trial, self.slow, self.patience = every, trial, slow, patience
        self.current = self.candidates[-1]
        self.choices: list[dict[str, float | int]] = []  # {"epoch", "threads", "ms": {count: ms}}
        self._times: dict[int, list[float]] = {}
        self._schedule: list[int] = []  # thread counts of the trial epochs still to run
        self._baseline: float | None = None
        self._slow_epochs = 0
        self._next_trial = 0
        self._epoch = 0

    @property
    def automatic(self) -> bool:
        return len(self.candidates) > 1

    def start(self) -> None:
        """Set the count the first evaluation and epoch use (a fixed count: every one)."""
        if torch.get_num_threads() != self.current:
            torch.set_num_threads(self.current)

    def summary(self) -> dict[str, Any]:
        """What a run records: the count asked for, the counts tried, and each choice made."""
        return {"requested": self.requested, "candidates": list(self.candidates), "current": self.current,
                "choices": list(self.choices)}

    def before_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        if self.automatic and not self._schedule and epoch >= self._next_trial:
            self._schedule = [n for _ in range(self.trial) for n in self.candidates]
            self._times = {n: [] for n in self.candidates}
        threads = self._schedule[0] if self._schedule else self.current
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def after_epoch(self, seconds: float) -> None:
        if self._schedule:
            self._times[self._schedule.pop(0)].append(seconds)
            if not self._schedule:
                self._decide()
            return
        if self._baseline is None or not self.automatic:
            return
        # A neighbour that starts mid-run shows as epochs much slower than measured: try again now.
        self._slow_epochs = self._slow_epochs + 1 if seconds > self.slow * self._baseline else 0
        if self._slow_epochs >= self.patience:
            self._slow_epochs = 0
            self._next_trial = self._epoch + 1

    def _decide(self) -> None:
        medians = {n: statistics.median(t) for n, t in self._times.items() if t}
        self.current = min(medians, key=lambda n: (medians[n], n))
        self._baseline = medians[self.current]
        self._next_trial = self._epoch + 1 + self.every
        self.choices.append({"epoch": self._epoch, "threads": self.current,
                             "ms": {str(n): round(m * 1000, 2) for n, m in medians.items()}})


@contextmanager
def restored_threads() -> Iterator[None]:
    """The process's thread count as it was, once the run is over."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
