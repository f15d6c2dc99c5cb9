"""The lock (src/plus/lock.txt): the install is exactly the lock, the conda environment and the wheel follow it,
bad locks stop `make install` naming the line, and a job under another version records and reports the drift."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from plus import environment as E
from plus.data import convert as C
from plus.io import read_json
from plus.report import provenance
from plus.train.finetune import finetune

ROOT = Path(__file__).resolve().parents[1]
EMB = ROOT / "data" / "embedded"


def test_installed_packages_are_exactly_the_lock():
    """`pip freeze` of this interpreter, both ways: every locked package at its version, nothing unpinned."""
    lock = E.read_lock()
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], capture_output=True,
                         text=True, check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}).stdout
    frozen = dict(line.split("==", 1) for line in out.splitlines() if "==" in line)
    frozen = {E.normalize(name): version for name, version in frozen.items()}
    wrong = {pin.name: (pin.version, frozen.get(key)) for key, pin in lock.pins.items()
             if E.public(frozen.get(key, "")) != pin.version}
    assert not wrong, f"locked vs installed: {wrong}"
    torch_build = E.pulled_in_by("torch", E._installed())  # a CUDA build's own wheels (nvidia-*) may be extra
    unpinned = set(frozen) - set(lock.pins) - torch_build
    assert not unpinned, f"installed without a pin in {lock.path}: {sorted(unpinned)}"
    assert lock.project_version == E.installed_version(E.PROJECT)
    assert E.verify(lock)[0] == []


def test_lock_pins_the_makefile_torch_and_the_conda_environment_follows_it():
    lock = E.read_lock()
    makefile = (ROOT / "Makefile").read_text()
    assert lock.version_of("torch") == re.search(r"^TORCH := (\S+)$", makefile, re.M)[1]
    assert f"LOCK := {E.LOCK.relative_to(ROOT)}" in makefile
    conda = (ROOT / "envs/plus.yaml").read_text()
    assert E.sync_conda(conda, lock) == conda, "envs/plus.yaml pins differ from the lock: run `make lock`"
    pinned = {E.CONDA_NAMES.get(m[1], m[1]): m[2] for m in re.finditer(r"^\s*-\s*([\w.-]+)==(\S+)", conda, re.M)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [*project["dependencies"], *project["optional-dependencies"]["workflow"]]
    names = {E.normalize(re.match(E._NAME, req)[0]) for req in direct}
    assert names <= {E.normalize(n) for n in pinned}, f"direct dependencies without a conda pin: {names - set(pinned)}"
    assert all(lock.version_of(name) == version for name, version in pinned.items())


def test_lock_ships_inside_the_wheel(tmp_path):
    """A cluster install from a wheel finds the same lock at run time (package data)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("plus_workflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("plus/lock.txt") == E.LOCK.read_bytes()


BAD_LINES = {
    "numpy=2.4.6": "is not NAME==VERSION",
    "numpy>=2.4": "is not NAME==VERSION",
    "-e .": "is not NAME==VERSION",
    "--index-url https://example.org/simple": "is not NAME==VERSION",
    "git+https://github.com/numpy/numpy": "is not NAME==VERSION",
    "numpy==2.4.6 ; python_version < '3.12'": "is not NAME==VERSION",
    "torch==2.13.0+cpu": "local version label",
    "numpy==two": "not a PEP 440 release version",
    "plus-workflow==0.1.0": "never pinned",
    "Typing_Extensions==4.0.0": "already pinned on line",
}


def _bad_lock(tmp_path: Path, line: str) -> tuple[Path, int]:
    """The real lock with `line` appended; returns the file and the line's number."""
    text = E.LOCK.read_text()
    path = tmp_path / "lock.txt"
    path.write_text(text + line + "\n")
    return path, text.count("\n") + 1


@pytest.mark.parametrize("line", list(BAD_LINES))
def test_malformed_lock_line_is_named(tmp_path, line):
    path, n = _bad_lock(tmp_path, line)
    with pytest.raises(E.LockError, match=rf"lock.txt line {n}: .*{re.escape(BAD_LINES[line])}"):
        E.read_lock(path)


def test_lock_without_pins_or_header_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(E.LockError, match="no NAME==VERSION lines"):
        E.read_lock(tmp_path / "empty.txt")
    (tmp_path / "nohead.txt").write_text("numpy==2.4.6\n")
    with pytest.raises(E.LockError, match="locked for"):
        E.read_lock(tmp_path / "nohead.txt")
    with pytest.raises(E.LockError, match="cannot read the lock"):
        E.read_lock(tmp_path / "absent.txt")


def test_make_install_stops_at_a_malformed_line_before_pip(tmp_path):
    """The Makefile's first step: nothing is created, the message names the line."""
    path, n = _bad_lock(tmp_path, "pandas>=2")
    venv = tmp_path / "venv"
    res = subprocess.run(["make", "-C", str(ROOT), "install", f"LOCK={path}", f"VENV={venv}",
                          f"PYTHON={sys.executable}"], capture_output=True, text=True)
    assert res.returncode != 0 and not venv.exists()
    assert f"error: {path} line {n}: 'pandas>=2' is not NAME==VERSION" in res.stderr


def _wheel(folder: Path, name: str, version: str, requires: str = "") -> None:
    """A minimal pure wheel: enough for pip to see the release and what it requires."""
    dist = f"{name.replace('-', '_')}-{version}"
    folder.mkdir(exist_ok=True)
    requires = f"Requires-Dist: {requires}\n" if requires else ""
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA",
                    f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                    "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")


@pytest.mark.parametrize("pin, request_", [("plusfake-dep==2.0", "plusfake-dep"),
                                            ("plusfake-absent==1.0", "plusfake-absent"),
                                            ("plusfake-dep==2.0", "plusfake-app")])
def test_pin_missing_from_the_index_fails_naming_the_line(tmp_path, pin, request_):
    """The (local, hermetic) index has plusfake-dep 1.0 only, and plusfake-app 1.0 that requires it; plusfake-absent
    is not there at all. Installed quietly (as the Makefile does), directly or as a dependency."""
    _wheel(tmp_path / "index", "plusfake-dep", "1.0")
    _wheel(tmp_path / "index", "plusfake-app", "1.0", requires="plusfake-dep>=1")
    path, n = _bad_lock(tmp_path, pin)
    path.write_text(path.read_text() + "plusfake-app==1.0\n")
    res = subprocess.run([sys.executable, "-m", "plus.environment", "pip-install", str(path), "--quiet",
                          "--dry-run", "--no-index", "--find-links", str(tmp_path / "index"), request_],
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert f"error: {path} line {n}: {pin}: pip cannot install this pin" in res.stderr
    res = subprocess.run([sys.executable, "-m", "plus.environment", "pip-install", str(path), "--dry-run",
                          "--no-index", "--find-links", str(tmp_path / "index"), "plusfake-unpinned"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "plusfake-unpinned not pinned" in res.stderr


def test_verify_names_each_difference(tmp_path):
    lock = E.read_lock()
    numpy, pytest_pin = lock.pins["numpy"], lock.pins["pytest"]
    lines = E.LOCK.read_text().splitlines()
    lines[numpy.line - 1] = "numpy==0.0.1"
    del lines[pytest_pin.line - 1]  # installed but no longer pinned
    lines.append("plusfake-gone==1.0")
    (tmp_path / "lock.txt").write_text("\n".join(lines) + "\n")
    problems, _ = E.verify(E.read_lock(tmp_path / "lock.txt"))
    assert f"line {numpy.line}: numpy==0.0.1 is locked but {E.installed_version('numpy')} is installed" in problems[0]
    assert any(p.endswith("plusfake-gone==1.0 is locked but not installed") for p in problems)
    assert any(p.startswith(f"pytest=={E.installed_version('pytest')} is installed but not in") for p in problems)
    assert len(problems) == 3


def test_record_of_an_unreadable_lock_or_another_package_version(tmp_path):
    record = E.environment_record(tmp_path / "absent.txt")
    assert record["lock_digest"] is None and "cannot read the lock" in E.warning_line(record)
    (tmp_path / "lock.txt").write_text(E.LOCK.read_text().replace(f"{E.PROJECT}==", f"{E.PROJECT}==9"))
    record = E.environment_record(tmp_path / "lock.txt")
    assert list(record["drift"]) == [E.PROJECT] and record["drift"][E.PROJECT]["locked"].startswith("9")
    assert record["lock_digest"] == E.read_lock(tmp_path / "lock.txt").digest


def _fake_dist(folder: Path, name: str, version: str) -> Path:
    """A dist-info that shadows the installed one for importlib.metadata (the module itself is untouched)."""
    info = folder / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


@pytest.mark.slow
def test_job_under_another_numpy_warns_records_and_the_note_names_it(tmp_path):
    """Two `plus evaluate` jobs of one table, the second with numpy's metadata at 1.0.0: one warning line in its
    log, the drift in its provenance, and the merge's environment note names the run and the package."""
    C.convert_task("solubility", "embedded", C.embedded_raw("solubility", EMB), tmp_path / "data", 0, max_train=32)
    train = {"lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 1, "patience": -1,
             "lambda_mlm": 0.3, "lambda_task": 0.7, "max_pred": 10, "max_dev": 20}
    hp = {"model": {"family": "rnn", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8}, "train": train,
          "head": ["h", 16], "fidelity": {}, "allow_cpu": True, "threads": 1, "save_every_minutes": 10}
    finetune("solubility", tmp_path / "data", 0, hp, tmp_path / "state", tmp_path / "model.pt", tmp_path / "c.csv")
    lock = E.read_lock()
    jobs = {}
    for name, pythonpath in (("same", None), ("drifted", _fake_dist(tmp_path / "fake", "numpy", "1.0.0"))):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if pythonpath:
            env["PYTHONPATH"] = str(pythonpath)
        metrics = tmp_path / "finetune" / name / "metrics.json"
        res = subprocess.run([sys.executable, "-m", "plus.cli", "evaluate", "--task", "solubility", "--data",
                              str(tmp_path / "data"), "--model", str(tmp_path / "model.pt"), "--seed", "0",
                              "--hparams", json.dumps(hp), "--out-metrics", str(metrics), "--out-predictions",
                              str(metrics.with_name("p.npz")), "--bootstrap", "0"],
                             capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        jobs[name] = (str(metrics), [ln for ln in res.stderr.splitlines() if ln.startswith("warning: environment")])
    assert jobs["same"][1] == []
    locked = lock.version_of("numpy")
    assert jobs["drifted"][1] == [f"warning: environment differs from the lock (sha256 {lock.digest[:12]}): "
                                  f"numpy 1.0.0 (locked {locked}); the run's provenance records it"]
    env = read_json(jobs["drifted"][0])["provenance"]["environment"]
    assert env["lock_digest"] == lock.digest and env["versions"]["numpy"] == "1.0.0"
    assert env["drift"] == {"numpy": {"installed": "1.0.0", "locked": locked}}
    assert read_json(jobs["same"][0])["provenance"]["environment"]["drift"] == {}

    from plus.cli import main

    runs = [jobs["same"][0], jobs["drifted"][0]]
    assert main(["provenance", "--runs", *runs, "--out", str(tmp_path / "prov.json"), "--out-csv",
                 str(tmp_path / "prov.csv"), "--out-note", str(tmp_path / "environment.html")]) == 0
    note = read_json(tmp_path / "prov.json")["environment"]
    drifted = runs[1]
    assert note["lock_digest"] == lock.digest and note["lines"][0].startswith(f"Lock sha256 {lock.digest[:12]}")
    assert f"{drifted} (solubility) differs from its lock: numpy 1.0.0 (locked {locked})" in note["lines"]
    assert f"table solubility: runs differ in numpy: {locked} (1 run); 1.0.0 ({drifted})" in note["lines"] or \
        f"table solubility: runs differ in numpy: 1.0.0 (1 run); {locked} ({runs[0]})" in note["lines"]
    page = (tmp_path / "environment.html").read_text()
    assert drifted in page and "numpy 1.0.0" in page
    assert "numpy 1.0.0 (locked" in (tmp_path / "prov.csv").read_text()


def _prov(python="3.11.7", numpy="2.4.6", digest="a" * 64, drift=None):
    versions = {name: "1" for name in E.CHECKED} | {"numpy": numpy}
    return {"package_version": "0.1.0", "git_commit": None, "seed": 0, "python": python,
            "environment": {"lock_digest": digest, "versions": versions, "drift": drift or {}}}


def test_note_names_mixed_tables_other_locks_and_unrecorded_runs():
    runs = {"pre/a": _prov(), "ss/a": _prov(), "ss/b": _prov(), "ss/c": _prov(python="3.12.1"),
            "sol/a": _prov(numpy="2.5.0", digest="b" * 64), "sol/b": {"package_version": "0", "git_commit": None,
                                                                       "seed": 0}}
    tables = {"pre/a": "pretraining", "ss/a": "secstr", "ss/b": "secstr", "ss/c": "secstr", "sol/a": "solubility",
              "sol/b": "solubility"}
    note = provenance.environment_note(runs, tables, "a" * 64)
    lines = note["lines"]
    assert "table secstr: runs differ in python: 3.11.7 (2 runs); 3.12.1 (ss/c)" in lines
    assert "1 runs were made under lock bbbbbbbbbbbb, not this one: sol/a" in lines
    assert "table summary: runs differ in numpy: 2.4.6 (3 runs); 2.5.0 (sol/a)" in lines
    assert not any("pretraining" in line for line in lines)  # one run: nothing to compare
    assert note["not_recorded"] == ["sol/b"] and lines[-1].endswith("(made before the drift check): sol/b")
    unchecked = provenance.environment_note({"x": _prov(digest=None)}, {"x": "secstr"}, "a" * 64)
    assert "1 runs found no readable lock (environment not checked): x" in unchecked["lines"]
    clean = provenance.environment_note({"ss/a": _prov(), "ss/b": _prov()}, {"ss/a": "secstr", "ss/b": "secstr"},
                                        "a" * 64)
    assert clean["lines"][1].startswith("Every run matches the lock")
