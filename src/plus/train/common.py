"""Pieces shared by pre-training and fine-tuning: device and DDP set-up, mixed precision, model construction,
optimisers (the reference's BertAdam included), resumable state, and the CSV training curve."""

from __future__ import annotations

import csv
import hashlib
import json
import math
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

from plus.io import InputError, atomic_path, atomic_write


# ------------------------------------------------------------------ device / distributed
class Runtime:
    """Device, rank and world size of this process (torchrun sets RANK/WORLD_SIZE/LOCAL_RANK)."""

    def __init__(self, allow_cpu: bool, threads: int | None = None):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        elif allow_cpu:
            self.device = torch.device("cpu")
        else:
            raise SystemExit(
                "error: this job asks for a GPU but CUDA is not available "
                "(set pretrain.allow_cpu: true in the config to run on CPU on purpose)"
            )
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def close(self):
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device | str, precision: str = "fp32"):
    """The context for forward passes and losses (never the optimiser step): bfloat16 autocast for "bf16",
    a no-op for "fp32". Parameters, gradients and optimiser state stay float32, and bf16 has float32's
    exponent range, so no gradient scaler is needed (the resumable state has no AMP scaler to save)."""
    if precision not in PRECISIONS:
        raise SystemExit(f"error: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------ evaluation batches
EVAL_RESIDUES_PER_RECORD = 200


def eval_batches(size, batch_size):
    """Record indices in batches of similar `size` (shortest first), each with at most `batch_size` records and
    at most batch_size x EVAL_RESIDUES_PER_RECORD padded residues: long records go in smaller batches, so a batch
    spanning short and long records never pads every record to the longest (outputs are batch-invariant)."""
    budget = batch_size * EVAL_RESIDUES_PER_RECORD
    batch = []
    for i in sorted(range(len(size)), key=size.__getitem__):
        if batch and (len(batch) == batch_size or (len(batch) + 1) * size[i] > budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


# ------------------------------------------------------------------ models
def build_encoder(model_cfg: dict, fidelity: dict, n_thresholds: int = 1, n_classes: int = 2):
    """Construct the encoder named by `model_cfg['family']` with sizes from the config (for P-ELMo: the
    encoder on top of the LM, see `build_lm`)."""
    from plus.models import PElmo, PlusRNN, PlusTFM

    fam = model_cfg["family"]
    if fam == "rnn":
        return PlusRNN(hidden_dim=model_cfg["hidden_dim"], num_layers=model_cfg["num_layers"],
                       proj_dim=model_cfg["proj_dim"], n_thresholds=n_thresholds)
    if fam == "tfm":
        return PlusTFM(hidden_dim=model_cfg["hidden_dim"], num_layers=model_cfg["num_layers"],
                       num_heads=model_cfg["num_heads"], ff_dim=model_cfg["ff_dim"],
                       max_len=model_cfg["max_len"], dropout=model_cfg.get("dropout", 0.1),
                       n_classes=n_classes,
                       layernorm="reference" if fidelity.get("b10_tfm_layernorm", True) else "standard")
    if fam == "pelmo":
        return PElmo(lm_dim=2 * model_cfg["lm_num_layers"] * model_cfg["lm_hidden_dim"],
                     lm_proj_dim=model_cfg.get("lm_proj_dim", 512), hidden_dim=model_cfg["hidden_dim"],
                     num_layers=model_cfg["num_layers"], proj_dim=model_cfg["proj_dim"], n_thresholds=n_thresholds)
    raise InputError(f"model family {fam!r}: pre-training/fine-tuning is implemented for rnn, tfm and pelmo")


def build_lm(model_cfg: dict):
    """P-ELMo's bidirectional language model (pre-trained by `plus pretrain`, frozen downstream)."""
    from plus.models import PElmoLM

    return PElmoLM(hidden_dim=model_cfg["lm_hidden_dim"], num_layers=model_cfg["lm_num_layers"])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A state_dict saved by this package or by the reference (plain tensors; weights_only load)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: pre-trained model not found") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is bad input
        raise InputError(f"{path}: not a weights-only PyTorch state_dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: expected a dict of tensors (a state_dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def check_compatible(model: torch.nn.Module, state: dict, path) -> None:
    """Refuse a checkpoint of another architecture before any work starts (encoder tensors must match)."""
    own = model.state_dict()
    shared = [k for k in state if k in own]
    encoder_keys = [k for k in own if k.startswith(("rnn.", "transformer.", "embed."))]
    missing = [k for k in encoder_keys if k not in state]
    bad = [k for k in shared if own[k].shape != state[k].shape and k.startswith(("rnn.", "transformer.", "embed."))]
    if missing or bad:
        detail = f"missing {missing[:3]}" if missing else (
            f"{bad[0]}: checkpoint {tuple(state[bad[0]].shape)} vs model {tuple(own[bad[0]].shape)}")
        raise InputError(f"{path}: checkpoint does not fit this model's architecture ({detail})")


# ------------------------------------------------------------------ optimisers
class BertAdam(torch.optim.Optimizer):
    """The reference's BertAdam: Adam without bias correction, decoupled weight decay, per-tensor
    gradient clipping, learning rate scaled by a warm-up/linear-decay schedule (spec §2.4, B11)."""

    def __init__(self, params, lr, warmup, t_total, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
                 max_grad_norm=1.0):
        super().__init__(params, dict(lr=lr, warmup=warmup, t_total=t_total, betas=betas, eps=eps,
                                      weight_decay=weight_decay, max_grad_norm=max_grad_norm))

    @staticmethod
    def schedule(progress: float, warmup: float) -> float:
        if progress < warmup:
            return progress / warmup
        return max((1.0 - progress) / max(1.0 - warmup, 1e-12), 0.0)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                grad = p.grad
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                b1, b2 = group["betas"]
                state["m"].mul_(b1).add_(grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = state["m"] / (state["v"].sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update = update + group["weight_decay"] * p
                lr = group["lr"]
                if group["t_total"] > 0:
                    lr = lr * self.schedule(state["step"] / group["t_total"], group["warmup"])
                p.add_(update, alpha=-lr)
                state["step"] += 1


def build_optimizer(model: torch.nn.Module, hp, total_steps: int, fidelity: dict):
    """Optimizer and LR scheduler (or None) per the settings (hparams.PretrainHP); returns (opt, sched, clip_global)."""
    name = hp.optimizer
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=hp.lr), None, True
    decay_all = fidelity.get("b11_decay_all_params", True)
    if name == "bertadam" and decay_all:
        opt = BertAdam(model.parameters(), lr=hp.lr, warmup=hp.warmup, t_total=total_steps,
                       weight_decay=hp.weight_decay, max_grad_norm=hp.clip_grad_norm)
        return opt, None, False
    # corrected BERT optimiser: AdamW, no decay on biases/LayerNorm, warm-up + linear decay, global clip
    no_decay = [p for n, p in model.named_parameters() if n.endswith(("bias", "gamma", "beta")) or ".norm" in n]
    ids = {id(p) for p in no_decay}
    decay = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, eps=1e-6)
    warm = hp.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: BertAdam.schedule(s / max(total_steps, 1), warm) if warm > 0 else
        max(1.0 - s / max(total_steps, 1), 0.0))
    return opt, sched, True


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


# ------------------------------------------------------------------ outputs
def write_curve(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write the training curve rows as CSV (union of keys, in first-seen order)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in fields})


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def save_model(path: str | os.PathLike, state_dict: dict) -> None:
    """Write a plain-tensor state_dict (loadable with weights_only=True), atomically. Saved through a file
    object, the archive's inner name is fixed, so the same tensors give the same bytes on every rerun."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({k: v.detach().cpu().clone() for k, v in state_dict.items()}, fh)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
