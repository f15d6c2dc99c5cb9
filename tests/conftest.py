"""Fixtures shared by the test files: real stop signals delivered at a chosen point of an in-process training run
(the signal handler, the save at the step boundary and the exit all run as they do under SLURM)."""

from __future__ import annotations

import signal

import pytest

from plus.train.state import Preemption, StateFile


@pytest.fixture
def signal_after_save(monkeypatch):
    """arm(n, sig): this process receives `sig` right after the n-th state save of the runs that follow
    (arm(0): none)."""
    save = StateFile.save

    def arm(n: int = 1, sig: int = signal.SIGTERM):
        count = [0]

        def save_then_signal(self, payload, position):
            save(self, payload, position)
            count[0] += 1
            if count[0] == n:
                signal.raise_signal(sig)

        monkeypatch.setattr(StateFile, "save", save_then_signal)

    return arm


@pytest.fixture
def signal_during_evaluation(monkeypatch):
    """arm(n, sig): this process receives `sig` inside an evaluation, before its n-th batch (counted over the runs
    that follow; arm(0): none)."""
    check = Preemption.check

    def arm(n: int = 1, sig: int = signal.SIGTERM):
        count = [0]

        def signal_then_check(self):
            count[0] += 1
            if count[0] == n:
                signal.raise_signal(sig)
            check(self)

        monkeypatch.setattr(Preemption, "check", signal_then_check)

    return arm
