"""Host memory of each task's data in a fine-tuning or evaluation job, measured on the converted data of a
workdir (the embedded data after `make demo`) and projected to the release sizes of the config's `plan.tasks`.
Prints one JSON line.

    python benchmarks/task_memory.py --workdir DIR [--configfile config.yaml]

Per task: Python heap allocated by reading every split of results/data/<task> (plus.data.tasks.read_split,
as the jobs read them; traced with tracemalloc), per residue of the records read; then that rate times the
release size's residues (train + test examples x mean length, pair tasks: two sequences per example).
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from plus.data.tasks import load_manifest, read_split  # noqa: E402


def residues(records) -> int:
    return sum(len(field) for r in records for field in r[1:] if isinstance(field, str) and field.isalpha()
               and field.isupper())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--configfile", type=Path, default=REPO / "config.yaml", help="its plan.tasks sizes")
    args = p.parse_args()
    sizes = yaml.safe_load(args.configfile.read_text())["plan"]["tasks"]
    out = {}
    for task, size in sizes.items():
        task_dir = args.workdir / "results/data" / task
        manifest = load_manifest(task_dir)
        files = [manifest["splits"]["train"], manifest["splits"]["dev"], *manifest["splits"]["test"].values()]
        tracemalloc.start()
        data = [read_split(task_dir, f, manifest) for f in files]
        heap = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        n_res = sum(residues(records) for records in data)
        per_example = 2 if manifest["kind"] == "pair" else 1
        release_res = (size["train_examples"] + size["test_examples"]) * size["mean_length"] * per_example
        out[task] = {"records": sum(map(len, data)), "residues": n_res, "heap_mb": round(heap / 2**20, 1),
                     "bytes_per_residue": round(heap / max(n_res, 1), 2),
                     "release_residues": release_res, "release_mb": round(heap / max(n_res, 1) * release_res / 2**20)}
        del data
    print(json.dumps(out))


if __name__ == "__main__":
    main()
