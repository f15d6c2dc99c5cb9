"""What produced a run: versions, commit, device, host, SLURM job, seed, hyper-parameters and the environment
against the lock (recorded by training and evaluation; plus.report.provenance merges the records)."""

from __future__ import annotations

import datetime
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

import plus
from plus.environment import environment_record

PROVENANCE_KEYS = ["package_version", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn", "device",
                   "hostname", "slurm_job_id", "seed", "hparams", "environment", "timestamp"]


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
        "environment": environment_record(),
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
