"""Throughput and peak memory of the Pfam preprocessor on a synthetic Pfam-A.fasta.gz of N records.

Records follow Pfam-A.fasta: `>NAME/start-end ACC.v PFxxxxx.v;ID;`, sequences wrapped at 60 columns, grouped
by family; lengths log-normal (median 130) clipped to 20..1000; family sizes Zipf-like over 3,000 families;
members of a family are windows of a family ancestor with 30 % substitutions (so gzip compresses them like
homologous domains). Prints one JSON line: records, input_mb, mb_per_s, gzip_mb_per_s, ratio_to_gzip,
peak_rss_mb (largest resident set of the child process that runs `preprocess` and of its workers), and
cpu_s, wall_s, load_avg_1min to judge timings taken on a shared machine.

    python benchmarks/pfam_preprocess.py --records 1000000 [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LETTERS = np.frombuffer(b"ARNDCQEGHILKMFPSTWYV", np.uint8)
N_FAMILIES, ANCESTOR = 3000, 1100


def fasta_records(text: bytes, fam, lengths, start, first_id: int, release: int) -> bytes:
    """Pfam-A.fasta records (header ``>ID/start-end ACC.1 PFnnnnn.<release>;Fam;``, 60 residues a line) of the
    concatenated sequences `text`: record k is family fam[k], lengths[k] residues from position start[k]."""
    parts, offset = [], 0
    for k, (f, length, s) in enumerate(zip(fam.tolist(), lengths.tolist(), start.tolist(), strict=True)):
        seq = text[offset : offset + length]
        offset += length
        ident = first_id + k
        parts.append(b">S%08d_SYNTH/%d-%d S%08d.1 PF%05d.%d;Fam%d;\n" % (ident, s + 1, s + length, ident, f,
                                                                          release, f))
        parts.extend(seq[i : i + 60] + b"\n" for i in range(0, length, 60))
    return b"".join(parts)


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Write a synthetic Pfam-A.fasta.gz of n records (compressed by `gzip -6` in a child process)."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, N_FAMILIES + 1) ** 1.1
    family = np.sort(rng.choice(N_FAMILIES, n, p=weights / weights.sum()))
    ancestors = rng.integers(0, 20, (N_FAMILIES, ANCESTOR), dtype=np.uint8)
    with open(path, "wb") as out:
        gz = subprocess.Popen(["gzip", "-6", "-c"], stdin=subprocess.PIPE, stdout=out)
        for lo in range(0, n, 50_000):
            fam = family[lo : lo + 50_000]
            lengths = np.clip(rng.lognormal(np.log(130), 0.6, len(fam)), 20, 1000).astype(np.int64)
            start = (rng.random(len(fam)) * (ANCESTOR - lengths + 1)).astype(np.int64)
            first = np.repeat(np.cumsum(lengths) - lengths, lengths)
            pos = np.arange(lengths.sum()) - first + np.repeat(start, lengths)
            residues = ancestors[np.repeat(fam, lengths), pos]
            mutate = rng.random(len(residues)) < 0.3
            residues[mutate] = rng.integers(0, 20, int(mutate.sum()), dtype=np.uint8)
            text = LETTERS[residues].tobytes()
            gz.stdin.write(fasta_records(text, fam, lengths, start, lo, release=7))
        gz.stdin.close()
        if gz.wait():
            raise RuntimeError("gzip failed")


def gzip_speed(path: Path) -> tuple[float, int]:
    """(seconds for `gzip -dc path > /dev/null`, uncompressed bytes)."""
    size = int(subprocess.run(f"gzip -dc {path} | wc -c", shell=True, check=True, capture_output=True,
                              text=True).stdout)
    start = time.perf_counter()
    subprocess.run(["gzip", "-dc", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start, size


CHILD = """
import json, sys, time
from plus.data.pfam import preprocess
start = time.perf_counter()
stats = preprocess(sys.argv[1], sys.argv[2], seed=2020, min_family_size=int(sys.argv[3]))
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": stats["input"]["bytes"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--min-family-size", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the generated input and outputs")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pfam_bench_"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"synthetic_{args.records}.fasta.gz"
    try:
        if not data.exists():
            generate(data, args.records)
        gzip_seconds, size = gzip_speed(data)
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(workdir / "out"),
                                  str(args.min_family_size)], stdout=subprocess.PIPE, text=True)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        if status:
            raise SystemExit(f"preprocess failed (status {status})")
        result = json.loads(out)
        mb_per_s = result["bytes"] / result["seconds"] / 1e6
        gzip_mb_per_s = size / gzip_seconds / 1e6
        print(json.dumps({
            "records": args.records,
            "input_mb": round(size / 1e6, 1),
            "mb_per_s": round(mb_per_s, 1),
            "gzip_mb_per_s": round(gzip_mb_per_s, 1),
            "ratio_to_gzip": round(mb_per_s / gzip_mb_per_s, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # the child and its worker processes
            "wall_s": round(result["seconds"], 1),
            "load_avg_1min": round(os.getloadavg()[0], 2),  # other work on the machine skews the timings
        }))
    finally:
        if not args.keep:
            shutil.rmtree(workdir / "out", ignore_errors=True)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
