"""Size and save/load time of a pre-training job's resumable state (plus.train.state.StateFile) at the paper's
sizes: the model, Adam's two moments, the best model so far and the curve, written atomically with fsync, as a
save on SIGTERM/SIGUSR1 writes it. Sizes the lead time of SLURM's warning signal (slurm/config.yaml).
Prints one JSON line per model.

    python benchmarks/state_save.py [--models base large tfm] [--dir DIR] [--repeats N]

--dir: where to write (default: a temporary directory under results/state's file system, i.e. the working
directory). Measure on the cluster's shared file system for the real figure.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from plus.models import PlusRNN, PlusTFM
from plus.train.state import StateFile, run_definition

MODELS = {"base": lambda: PlusRNN(hidden_dim=512), "large": lambda: PlusRNN(hidden_dim=1024), "tfm": PlusTFM}


def payload(model):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # creates Adam's moments
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    curve = [{"step": s, "split": "train", "loss": 1.0, "lr": 1e-3, "elapsed_s": float(s)} for s in range(0, 10**5, 10)]
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": None, "step": 12345,
            "curve": curve, "best": {"loss": 1.0, "step": 10000, "state": best, "val": {}},
            "running": {"loss": []}, "eval_pending": False}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--dir", default=".")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name]()
        data = payload(model)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix=".state-bench-") as tmp:
            sf = StateFile(tmp, 10, None, run_definition("pretrain", 0, {"train": {}}, {}))
            saves, loads = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                sf.save(data, "step 12345")
                saves.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                torch.load(Path(tmp) / "last.pt", map_location="cpu", weights_only=True)
                loads.append(time.perf_counter() - t0)
            size = (Path(tmp) / "last.pt").stat().st_size
        save_s = statistics.median(saves)
        print(json.dumps({"model": name, "params": sum(p.numel() for p in model.parameters()),
                          "state_mb": round(size / 1e6, 1), "save_s": round(save_s, 3),
                          "write_mb_per_s": round(size / 1e6 / save_s), "load_s": round(statistics.median(loads), 3),
                          "repeats": args.repeats, "dir": str(Path(args.dir).resolve())}), flush=True)


if __name__ == "__main__":
    main()
