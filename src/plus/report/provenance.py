"""What produced a run: versions, commit, device, host, SLURM job, seed and hyper-parameters."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

import plus
from plus.io import InputError, atomic_write, read_json, write_json

PROVENANCE_KEYS = ["package_version", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn", "device",
                   "hostname", "slurm_job_id", "seed", "hparams", "timestamp"]


def _git(path: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_provenance(path: str | os.PathLike | None = None, seed: int | None = None,
                       hparams: Mapping | None = None) -> dict:
    """Provenance of the current process. `path`: a directory inside the git checkout (default: the
    directory of the installed ``plus`` package); git_commit is None outside a checkout."""
    path = Path(path) if path is not None else Path(plus.__file__).resolve().parent
    commit = _git(path, "rev-parse", "HEAD")
    status = _git(path, "status", "--porcelain", "--untracked-files=no") if commit else None
    try:
        import torch

        torch_version, cuda = torch.__version__, torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {_cpu_model()}"
    except ImportError:
        torch_version = cuda = cudnn = None
        device = f"CPU: {_cpu_model()}"
    return {
        "package_version": plus.__version__,
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "torch": torch_version,
        "cuda": cuda,
        "cudnn": cudnn,
        "device": device,
        "hostname": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "seed": seed,
        "hparams": dict(hparams) if hparams is not None else None,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _provenance_of(path: str) -> dict:
    """A metrics.json's "provenance" object, or a run_info.json (the object itself or its "provenance")."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object")
    if "provenance" in d:
        d = d["provenance"]
    elif Path(path).name == "metrics.json":
        raise InputError(f"{path}: no 'provenance' object")
    missing = [k for k in ("package_version", "git_commit", "seed") if k not in d]
    if missing:
        raise InputError(f"{path}: provenance lacks {missing}")
    return d


def merge_provenance(files: Sequence, out: str | os.PathLike,
                     out_csv: str | os.PathLike | None = None) -> dict:
    """Write {file path: provenance} for every run file to `out` (JSON) and, if given, one CSV row per run
    (nested hparams as compact JSON) to `out_csv`. Returns the merged dict."""
    merged = {str(f): _provenance_of(str(f)) for f in files}
    write_json(out, merged)
    if out_csv is not None:
        rows = [{"run": k, **{c: v.get(c) for c in PROVENANCE_KEYS if c != "hparams"},
                 "hparams": json.dumps(v.get("hparams"), sort_keys=True, default=str)}
                for k, v in merged.items()]
        with atomic_write(out_csv, newline="", encoding="utf-8") as fh:
            pd.DataFrame(rows, columns=["run", *PROVENANCE_KEYS]).to_csv(fh, index=False, na_rep="")
    return merged
