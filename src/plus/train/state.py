"""A training run's resumable state: its run definition and fingerprint, the state file (atomic, validated,
with a previous copy), the RNG state, and the stop signals that make a run save and exit (preemption)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from plus.io import atomic_path
from plus.train.common import Runtime

# ------------------------------------------------------------------ run definition
STATE_FORMAT = 2  # layout of the saved state; 1 was the unfingerprinted, pickled last.pt
# Settings that cannot change what a run computes, so they stay out of its fingerprint: when and how often
# the state is saved, and how the machine runs it (threads, like the GPU model, change floating-point rounding,
# not the run definition; allow_cpu only permits a CPU; DataLoader workers produce the same batches).
NOT_RESULT_SETTINGS = ("save_every_minutes", "save_every_steps", "threads", "allow_cpu")
NOT_RESULT_TRAIN = ("num_workers",)
NOT_RESULT_MODEL = ("gpus",)  # the world size is recorded instead


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (identity of an input)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def run_definition(job: str, seed: int, hparams: dict, inputs: dict, world_size: int = 1) -> dict:
    """Everything that determines a training run's result, as plain JSON values: the job, the seed, the
    resolved hyper-parameters (model config, training settings, fidelity switches, head), the identities
    (sha256) of its inputs, the world size and the state format."""
    settings = {k: v for k, v in hparams.items() if k not in NOT_RESULT_SETTINGS}
    if isinstance(settings.get("train"), dict):
        settings["train"] = {k: v for k, v in settings["train"].items() if k not in NOT_RESULT_TRAIN}
    if isinstance(settings.get("model"), dict):
        settings["model"] = {k: v for k, v in settings["model"].items() if k not in NOT_RESULT_MODEL}
    return json.loads(json.dumps({"format": STATE_FORMAT, "job": job, "seed": seed, "world_size": world_size,
                                  "hparams": settings, "inputs": inputs}, default=str))


def fingerprint(definition: dict) -> str:
    """sha256 of the canonical JSON of a run definition."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def definition_changes(old, new) -> str:
    """The keys in which two run definitions differ, with old and new values ("hparams.train.lr 0.002 -> 0.0001")."""
    a, b = _flatten(old if isinstance(old, dict) else {}), _flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))
    return ", ".join(f"{k} {_short(a.get(k, _MISSING))} -> {_short(b.get(k, _MISSING))}" for k in keys) or "none"


_MISSING = "<unset>"


def _flatten(obj, prefix=""):
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _short(value) -> str:
    text = json.dumps(value) if value is not _MISSING else value
    return text if len(text) <= 24 else text[:12] + "..."


# ------------------------------------------------------------------ resumable state
class StateError(ValueError):
    """A saved state that cannot be resumed (unreadable, or not shaped like this run's state)."""


def require(condition, message: str) -> None:
    if not condition:
        raise StateError(message)


def check_tensors(saved, like: dict, what: str) -> None:
    """`saved` must hold exactly the tensors of `like`, with the same shapes and dtypes."""
    require(isinstance(saved, dict), f"{what} is not a dict")
    missing, extra = [k for k in like if k not in saved], [k for k in saved if k not in like]
    require(not missing and not extra, f"{what}: missing {missing[:2]}, unexpected {extra[:2]}")
    for k, ref in like.items():
        v = saved[k]
        require(isinstance(v, torch.Tensor) and v.shape == ref.shape and v.dtype == ref.dtype,
                f"{what}: {k} is {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}, "
                f"expected {tuple(ref.shape)}")


def check_optimizer(saved, opt: torch.optim.Optimizer) -> None:
    """`saved` must be a state_dict of `opt`'s parameter groups, with moment tensors shaped like the parameters."""
    require(isinstance(saved, dict) and isinstance(saved.get("param_groups"), list)
            and isinstance(saved.get("state"), dict), "optimizer: not an optimizer state_dict")
    fresh = opt.state_dict()["param_groups"]
    require([g.get("params") if isinstance(g, dict) else None for g in saved["param_groups"]]
            == [g["params"] for g in fresh], "optimizer: other parameter groups")
    params = [p for g in opt.param_groups for p in g["params"]]
    for idx, entry in saved["state"].items():
        require(isinstance(idx, int) and 0 <= idx < len(params) and isinstance(entry, dict),
                f"optimizer: state of unknown parameter {idx!r}")
        for key, v in entry.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                require(v.shape == params[idx].shape, f"optimizer: {key} of parameter {idx} is {tuple(v.shape)}, "
                        f"expected {tuple(params[idx].shape)}")


class StateFile:
    """The resumable state of one run: `state_dir/last.pt` and the save before it, `previous.pt`, each written
    atomically (fsynced, renamed into place) and read with `weights_only=True`. A state belongs to one run
    definition (its fingerprint); `load` resumes only a state of this definition that has not finished, and
    otherwise starts fresh with one line saying why. Damaged files are moved aside as `*.corrupt`, a state of
    another definition as `*.discarded`; a finished run leaves a small record, so a forced rerun retrains."""

    def __init__(self, state_dir: str | os.PathLike, every_minutes: float, every_steps: int | None,
                 definition: dict, rt: Runtime | None = None):
        self.dir = Path(state_dir)
        self.path, self.previous = self.dir / "last.pt", self.dir / "previous.pt"
        self.every_s = every_minutes * 60
        self.every_steps = every_steps
        self.last_save = time.monotonic()
        self.definition, self.fingerprint = definition, fingerprint(definition)
        self.rt = rt
        self.loaded_from: Path | None = None

    def load(self, check) -> dict | None:
        """The saved payload to resume from (after `check(payload)`, which raises StateError on a state not shaped
        like this run's; RNG states are restored), or None for a fresh start. With several ranks, rank 0 decides
        and the others read the file it chose."""
        world = self.rt.world if self.rt is not None else 1
        if world > 1:
            choice = [self._choose(check) if self.rt.is_main else None]
            dist.broadcast_object_list(choice, src=0)
            if choice[0] is None:
                return None
            self.loaded_from = Path(choice[0])
            state = torch.load(choice[0], map_location="cpu", weights_only=True)
        else:
            state = self._choose(check, keep=True)
            if state is None:
                return None
        set_rng_state(state["rng"])
        return state["payload"]

    def _choose(self, check, keep=False):
        for path in (self.path, self.previous):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                require(isinstance(state, dict) and {"format", "fingerprint", "definition"} <= state.keys(),
                        "not a training state of this version")
            except Exception as exc:  # noqa: BLE001 - any unreadable file: set aside, try the older save
                self._set_aside(path, ".corrupt", f"warning: {path}: damaged or unreadable training state "
                                f"({_reason(exc)})")
                continue
            if state["fingerprint"] != self.fingerprint:
                self._discard_all(f"{path}: saved by another run definition (changed: "
                                  f"{definition_changes(state['definition'], self.definition)})")
                return None
            if state.get("finished"):
                print(f"{path}: its run finished at {state.get('position', 'the end')}: starting fresh",
                      file=sys.stderr, flush=True)
                for p in (self.path, self.previous):
                    p.unlink(missing_ok=True)
                return None
            try:
                require({"payload", "rng"} <= state.keys(), "no payload or RNG state")
                check_rng(state["rng"])
                check(state["payload"])
            except StateError as exc:
                self._set_aside(path, ".corrupt", f"warning: {path}: inconsistent training state ({exc})")
                continue
            self.loaded_from = path
            return state if keep else str(path)
        return None

    def _set_aside(self, path: Path, suffix: str, message: str) -> None:
        target = path.with_name(path.name + suffix)
        os.replace(path, target)
        print(f"{message}; moved aside to {target.name}", file=sys.stderr, flush=True)

    def _discard_all(self, message: str) -> None:
        for p in (self.previous, self.path):
            if p.exists():
                os.replace(p, p.with_name(p.name + ".discarded"))
        print(f"{message}; moved aside to *.discarded, starting fresh", file=sys.stderr, flush=True)

    def due(self, step: int) -> bool:
        if self.every_steps:
            return step % self.every_steps == 0
        return time.monotonic() - self.last_save >= self.every_s

    def save(self, payload: dict, position: str) -> None:
        """Write `payload` (plus RNG states and the run definition) as the newest save; the last one becomes
        `previous.pt`."""
        self._write({"format": STATE_FORMAT, "fingerprint": self.fingerprint, "definition": self.definition,
                     "finished": False, "position": position, "payload": plain(payload), "rng": rng_state()})
        self.last_save = time.monotonic()

    def finish(self, position: str) -> None:
        """Replace the state by a small record of the finished run (no tensors): a rerun of the same definition
        starts fresh, and a rerun of another one can say which settings changed."""
        self._write({"format": STATE_FORMAT, "fingerprint": self.fingerprint, "definition": self.definition,
                     "finished": True, "position": position}, rotate=False)
        self.previous.unlink(missing_ok=True)

    def _write(self, state: dict, rotate: bool = True) -> None:
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            if rotate and self.path.exists():
                os.replace(self.path, self.previous)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def plain(obj):
    """`obj` with NumPy scalars and arrays replaced by Python numbers and tensors (what weights_only loads)."""
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items()) if isinstance(obj, OrderedDict) else \
            {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as plain containers and tensors."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def check_rng(state) -> None:
    require(isinstance(state, dict) and {"python", "numpy", "torch"} <= state.keys(), "RNG state incomplete")
    py = state["python"]
    require(isinstance(py, tuple) and len(py) == 3 and isinstance(py[1], tuple) and len(py[1]) == 625,
            "Python RNG state malformed")
    npy = state["numpy"]
    require(isinstance(npy, dict) and npy.get("bit_generator") == "MT19937"
            and isinstance(npy.get("state"), dict) and len(npy["state"].get("key", ())) == 624,
            "NumPy RNG state malformed")
    ref = torch.get_rng_state()
    require(isinstance(state["torch"], torch.Tensor) and state["torch"].shape == ref.shape
            and state["torch"].dtype == ref.dtype, "torch RNG state malformed")


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = {**state["numpy"], "state": {**state["numpy"]["state"],
                                            "key": np.asarray(state["numpy"]["state"]["key"], dtype=np.uint32)}}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------ preemption
class Interrupted(Exception):
    """Raised inside an evaluation when a stop signal arrived, so that the run saves without finishing it."""


class Preemption:
    """SIGTERM (SLURM at the time limit or on preemption) and SIGUSR1 (SLURM's `--signal` warning before the
    time limit) ask a training run to stop. The handler only records the signal; the training loop saves its
    state at the next step boundary (`requested`) and exits with status 128 + signal, so that Snakemake and
    SLURM retry the job and the retry resumes from that step. With several ranks, all stop at the same step.
    `progress` is the loop's last completed position, named in the log."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, rt: Runtime | None = None):
        self.rt, self.signum, self.agreed, self.progress, self.arrived = rt, 0, 0, "start-up", None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
                signal.siginterrupt(sig, False)  # restart system calls (gloo/NCCL sockets, file I/O) it interrupts

    def _handle(self, signum, frame):
        if not self.signum:
            self.signum, self.arrived = signum, self.progress

    def requested(self) -> bool:
        """True when any rank has received a stop signal (a collective call with several ranks). Every rank
        answers from the all-reduced value: a signal that arrives during the all-reduce counts at the next
        boundary, on all ranks alike."""
        signum = self.signum
        if self.rt is not None and self.rt.world > 1:
            flag = torch.tensor([signum], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        self.agreed = signum
        return bool(signum)

    def check(self) -> None:
        """Between evaluation batches: raise Interrupted when a stop was requested."""
        if self.requested():
            raise Interrupted

    def exit(self, saved_at: str, path) -> None:
        name = signal.Signals(self.agreed).name
        arrived = f"arrived after {self.arrived}" if self.arrived is not None else "arrived on another rank"
        print(f"{name} {arrived}: saved at {saved_at} to {path}; exiting with status {128 + self.agreed} "
              "so that the retry resumes", file=sys.stderr, flush=True)
        self.close()
        raise SystemExit(128 + self.agreed)

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
