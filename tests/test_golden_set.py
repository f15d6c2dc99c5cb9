"""The golden tests check whichever golden set they are given: run unchanged on a second set with other sizes,
counts, seeds and settings (tests/golden_variant.py, built from this package's own outputs: see its docstring),
they pass, while a test that typed in a value of the recorded set would fail there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from golden_variant import write_variant

TESTS = Path(__file__).parent
GOLDEN_TESTS = ["test_models.py", "test_metrics.py", "test_pretrain.py"]  # test_precision: golden_step only


@pytest.mark.slow
def test_golden_tests_run_unchanged_on_another_set(tmp_path):
    variant = write_variant(tmp_path / "golden")
    env = {**os.environ, "PLUS_GOLDEN_DIR": str(variant)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           *(str(TESTS / name) for name in GOLDEN_TESTS)]
    res = subprocess.run(cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1200)
    summary = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-2000:]
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed > 50 and "skipped" not in summary, summary
    print(f"golden tests on a second set ({variant}): {summary}")
