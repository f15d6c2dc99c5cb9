"""Paper-scale rehearsal on one machine: a synthetic Pfam 27.0-sized Pfam-A.fasta.gz through the real
`plus pfam preprocess`, then the real `plus pretrain` (BASE, LARGE, TFM and P-ELMo's LM at the paper's sizes and
batch sizes) for a few optimizer steps on the full-size shards. Prints one JSON line.

    python benchmarks/paper_scale.py [--records N] [--steps S] [--models base,large,tfm,pelmo] [--workdir DIR]
                                     [--eval-pairs P] [--steps-per-model base=10,large=3]

How N is chosen (the default): the paper keeps 14,670,860 training sequences from 3,150 families after its
filters (>= 20 residues, families with >= 1,000 training sequences, random 80/20 split; we also hold 0.2 % of
training out for validation, config pfam.val_fraction). So the kept families hold 14,670,860 / (0.8 x 0.998)
records, sizes >= 1,350 (so that all of them pass the 1,000-training-sequence filter) with a long tail
(log-normal excess); 1,000 more families of 20..1,000 records fail it. Pfam 27.0's true record count is not
verified here (no download): only the post-filter figures of the paper are matched. With --records N, the
family counts scale with N. Lengths are drawn from the embedded real Pfam seed alignments (data/embedded/pfam,
ungapped), residues follow those alignments' residue frequencies; members of a family are windows of a family
ancestor with 30 % substitutions, so gzip compresses them like homologous domains.

Per model: a measured run of S steps (peak RSS, per-step RSS split into corpus mappings / anonymous memory,
tokens/s), a save -> SIGKILL -> resume run compared tensor by tensor with the uninterrupted model, the
DataLoader's pairs/s with one worker (real PairBatches: sampler, masking, collation), and the same steps on a
1 M-record corpus (RSS at two sizes). Evaluation uses --eval-pairs of the test pairs. TFM trains on the rnn
variant of the corpus with its own 512-token pair truncation (the workflow's tfm variant keeps <= 256
residues; preprocessing a second full-size variant would double the rehearsal's preprocessing time). P-ELMo's LM
trains on its own variant, as the workflow's: no length or family filter (preprocessed once more, only when
pelmo is among --models); its batches hold single sequences, so its loader rate is in sequences/s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from pfam_preprocess import LETTERS, fasta_records  # benchmarks/ is the script's directory

REPO = Path(__file__).resolve().parents[1]
PAPER_TRAIN, PAPER_FAMILIES = 14_670_860, 3_150
TRAIN_SHARE = 0.8 * (1 - 0.002)  # test 20 %, then validation 0.2 % of the training split
MIN_KEPT, SMALL_FAMILIES = 1_350, 1_000
FULL_RECORDS = round(PAPER_TRAIN / TRAIN_SHARE) + SMALL_FAMILIES * 510  # ~510 records per small family
MODELS = {"base": "plus-rnn_base", "large": "plus-rnn_large", "tfm": "plus-tfm", "pelmo": "p-elmo"}


# ------------------------------------------------------------------ synthetic Pfam-A.fasta.gz
def seed_statistics() -> tuple[np.ndarray, np.ndarray]:
    """(ungapped lengths, frequencies of the 20 standard residues) of the embedded real Pfam seeds."""
    lengths, counts = [], np.zeros(256, np.int64)
    for path in sorted((REPO / "data/embedded/pfam").glob("*/*")):
        if path.suffix not in (".sto", ".txt"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            if line and not line.startswith(("#", "//")) and len(line.split()) == 2:
                seq = re.sub(r"[.\-]", "", line.split()[1]).upper().encode()
                if seq:
                    lengths.append(len(seq))
                    counts += np.bincount(np.frombuffer(seq, np.uint8), minlength=256)
    freq = counts[LETTERS].astype(float)
    return np.asarray(lengths), freq / freq.sum()


def family_sizes(records: int, rng) -> np.ndarray:
    """Records per family: kept families (>= MIN_KEPT) then small ones, scaled to `records` in total."""
    scale = records / FULL_RECORDS
    n_small = max(1, round(SMALL_FAMILIES * scale))
    n_kept = max(1, round(PAPER_FAMILIES * scale))
    small = rng.integers(20, 1001, n_small)
    excess = rng.lognormal(0.0, 1.2, n_kept)
    budget = records - small.sum() - MIN_KEPT * n_kept
    if budget < 0:
        raise SystemExit(f"--records {records}: too few for {n_kept} families of >= {MIN_KEPT}")
    kept = MIN_KEPT + np.floor(excess / excess.sum() * budget).astype(np.int64)
    kept[: records - small.sum() - kept.sum()] += 1
    return np.concatenate([kept, small])


def generate(path: Path, records: int, seed: int = 0) -> dict:
    """Write the synthetic Pfam-A.fasta.gz (gzip -6 in a child process) atomically; returns its description."""
    rng = np.random.default_rng(seed)
    seed_lengths, freq = seed_statistics()
    sizes = family_sizes(records, rng)
    order = rng.permutation(len(sizes))  # kept and small families interleaved in the file
    family = np.repeat(order, sizes[order])
    ancestor_len = int(seed_lengths.max())
    ancestors = rng.choice(20, (len(sizes), ancestor_len), p=freq).astype(np.uint8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        gz = subprocess.Popen(["gzip", "-6", "-c"], stdin=subprocess.PIPE, stdout=out)
        for lo in range(0, records, 50_000):
            fam = family[lo : lo + 50_000]
            lengths = rng.choice(seed_lengths, len(fam)).astype(np.int64)
            start = (rng.random(len(fam)) * (ancestor_len - lengths + 1)).astype(np.int64)
            first = np.repeat(np.cumsum(lengths) - lengths, lengths)
            pos = np.arange(lengths.sum()) - first + np.repeat(start, lengths)
            residues = ancestors[np.repeat(fam, lengths), pos]
            mutate = rng.random(len(residues)) < 0.3
            residues[mutate] = rng.choice(20, int(mutate.sum()), p=freq).astype(np.uint8)
            text = LETTERS[residues].tobytes()
            gz.stdin.write(fasta_records(text, fam, lengths, start, lo, release=27))
        gz.stdin.close()
        if gz.wait():
            raise SystemExit("gzip failed")
    tmp.replace(path)
    return {"families": len(sizes), "families_ge_min_kept": int((sizes >= MIN_KEPT).sum()),
            "seed_lengths": len(seed_lengths), "mean_length": round(float(seed_lengths.mean()), 1)}


# ------------------------------------------------------------------ child processes and their memory
def rss_split(pid: int, corpus: str) -> dict | None:
    """Resident MB of a process: total, anonymous, file-backed, and the corpus shards' mappings."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        smaps = Path(f"/proc/{pid}/smaps").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|RssAnon|RssFile|VmHWM):\s+(.*)$", status, re.M)}
    corpus_kb, current = 0, False
    for line in smaps.splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = corpus in line
        elif current and line.startswith("Rss:"):
            corpus_kb += int(line.split()[1])
    return {"rss": kb.get("VmRSS", 0) / 1024, "anon": kb.get("RssAnon", 0) / 1024,
            "file": kb.get("RssFile", 0) / 1024, "corpus": corpus_kb / 1024, "hwm": kb.get("VmHWM", 0) / 1024}


class Watched:
    """A child process, its stderr parsed for the tqdm step counter, its memory sampled every 0.5 s."""

    def __init__(self, cmd, corpus: str, env=None, log: Path | None = None):
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
        self.corpus, self.samples, self.step_times, self.step, self.log = corpus, [], {}, 0, log
        self.t0 = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.reader.start()
        self.sampler.start()

    def _read(self):
        buf = b""
        with open(self.log or os.devnull, "ab") as log:
            while chunk := self.proc.stderr.read1(4096):
                log.write(chunk)
                buf += chunk
                *done, buf = re.split(rb"[\r\n]", buf)
                for line in done:
                    m = re.search(rb"pretrain:.*\|\s*(\d+)/(\d+)", line)
                    if m and int(m.group(1)) > self.step:
                        self.step = int(m.group(1))
                        self.step_times[self.step] = time.monotonic() - self.t0

    def _sample(self):
        while self.proc.poll() is None:
            s = rss_split(self.proc.pid, self.corpus)
            if s:
                self.samples.append({"t": time.monotonic() - self.t0, "step": self.step, **s})
            time.sleep(0.5)

    def wait(self) -> int:
        rc = self.proc.wait()
        self.reader.join()
        self.sampler.join()
        return rc


def pretrain_cmd(corpus: Path, out: Path, hparams: dict) -> list[str]:
    return [sys.executable, "-m", "plus.cli", "pretrain", "--corpus", str(corpus), "--seed", "0", "--hparams",
            json.dumps(hparams), "--state-dir", str(out / "state"), "--out-model", str(out / "model.pt"),
            "--out-metrics", str(out / "metrics.json"), "--out-curve", str(out / "curve.csv")]


def paper_hparams(model: str, steps: int, eval_pairs: int, threads: int, batch: int | None = None) -> dict:
    """The workflow's pre-training hyper-parameters for a model (config.yaml), capped to `steps`; `batch`
    (pairs) replaces the paper's batch size and caps the evaluation batch (reported, never silent)."""
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg = config["models"][MODELS[model]]
    train = dict(config["pretrain"][cfg["family"]])
    eval_key = "max_eval_seqs" if cfg["family"] == "pelmo" else "max_eval_pairs"  # P-ELMo's LM: held-out sequences
    train.update({"max_steps": steps, eval_key: eval_pairs, "eval_every": 10**9, "log_every": 1})  # a row per step
    if batch:
        train.update(batch_size=batch, eval_batch_size=min(batch, train["eval_batch_size"]))
    from plus.train.hparams import model_hparams

    return {"model": model_hparams(cfg), "train": train,
            "fidelity": {}, "save_every_minutes": 10**6, "allow_cpu": True, "threads": threads}


def measured_run(corpus: Path, out: Path, hparams: dict) -> dict:
    """One uninterrupted run: per-step RSS (the peak within each step), split at the overall peak, step times."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    w = Watched(pretrain_cmd(corpus, out, hparams), str(corpus), log=out / "stderr.log")
    if w.wait():
        raise SystemExit(f"pretrain failed: see {out / 'stderr.log'}")
    steps = hparams["train"]["max_steps"]
    per_step = [round(max([s["rss"] for s in w.samples if s["step"] == k] or [0])) for k in range(steps)]
    peak = max(w.samples, key=lambda s: s["rss"])
    import csv

    with open(out / "curve.csv") as fh:  # elapsed_s of every step (log_every 1), from the training process
        times = [0.0] + [float(r["elapsed_s"]) for r in csv.DictReader(fh) if r["split"] == "train"]
    return {"samples": w.samples, "per_step_rss_mb": per_step, "peak_rss_mb": round(max(s["hwm"] for s in w.samples)),
            "peak_split": peak, "max_file_mb": max(s["file"] for s in w.samples), "step_s": np.diff(times).tolist(),
            "start_anon_mb": bare_process_anon_mb(), "wall_s": w.samples[-1]["t"]}


def training_tunables(hparams: dict) -> str:
    """GLIBC_TUNABLES of a training process: this process's, else what `python -m plus.cli` sets itself."""
    from plus.cli import family_tunables

    return os.environ.get("GLIBC_TUNABLES", family_tunables(hparams["model"]["family"]))


def bare_process_anon_mb() -> float:
    """Anonymous resident MB of a process that has imported torch and the training code, before any model."""
    code = ("import plus.train.pretrain, re; print(re.search(r'RssAnon:\\s+(\\d+)', "
            "open('/proc/self/status').read()).group(1))")
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def resume_run(corpus: Path, out: Path, hparams: dict) -> tuple[bool, float, float]:
    """Save after step 1, SIGKILL, rerun to the end: (state MB, seconds to save that state again with fsync)."""
    import torch

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    hp = {**hparams, "save_every_steps": 1}
    proc = subprocess.Popen(pretrain_cmd(corpus, out, hp), stderr=subprocess.DEVNULL)
    state = out / "state/last.pt"
    while proc.poll() is None and not state.exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if not state.exists():
        raise SystemExit(f"{out}: no state saved before the run ended")
    state_mb = state.stat().st_size / 1e6
    saved = torch.load(state, weights_only=False, map_location="cpu")
    start = time.perf_counter()
    with open(out / "resave.pt", "wb") as fh:
        torch.save(saved, fh)
        fh.flush()
        os.fsync(fh.fileno())
    save_s = time.perf_counter() - start
    (out / "resave.pt").unlink()
    del saved
    with open(out / "stderr.log", "wb") as log:
        if subprocess.run(pretrain_cmd(corpus, out, hp), stderr=log).returncode:
            raise SystemExit(f"resumed pretrain failed: see {out / 'stderr.log'}")
    return state_mb, save_s


def same_model(a: Path, b: Path) -> bool:
    import torch

    x, y = torch.load(a, map_location="cpu"), torch.load(b, map_location="cpu")
    x, y = x.get("model", x), y.get("model", y)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def worker_private_mb(pid: int) -> tuple[float, float]:
    """(private anonymous MB, private file-backed MB) of a process: pages only it maps. The file-backed ones of
    a loader worker are corpus pages it alone touched: page cache, which the kernel can drop."""
    anon = file = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path(f"/proc/{pid}/smaps").read_text()):
        private = sum(int(v) for v in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+)", block, re.M))
        fields = block.split("\n", 1)[0].split()
        if len(fields) > 5 and fields[5].startswith("/"):
            file += private
        else:
            anon += private
    return anon / 1024, file / 1024


def loader_rate(corpus_dir: Path, hparams: dict, batches: int) -> tuple[float, float, float]:
    """Items/s that one DataLoader worker delivers (the real batches: PLUS's PairBatches with sampler, masking
    and collation, in pairs; P-ELMo's SequenceBatches, in sequences), and the worker's private anonymous and
    private file-backed memory in MB (see worker_private_mb)."""
    import torch

    from plus.data.pfam_corpus import PfamCorpus
    from plus.train.hparams import pretrain_settings
    from plus.train.masking import FamilyIndex
    from plus.train.pretrain_batches import PairBatches, SequenceBatches

    corpus = PfamCorpus(corpus_dir)
    family = hparams["model"]["family"]
    train = pretrain_settings(hparams).train
    anchors = np.random.default_rng([0, 0]).permutation(len(corpus))
    if family == "pelmo":
        data = SequenceBatches(corpus, train.batch_size, anchors)
    else:
        max_len = hparams["model"].get("max_len") if family == "tfm" else None
        data = PairBatches(corpus, FamilyIndex(np.asarray(corpus.family)), family, train, {}, 0, 0, anchors, max_len)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(batches + 1)), batch_size=None,
                                         num_workers=1)
    it = iter(loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    items, private = 0, (0.0, 0.0)
    for k, b in enumerate(it):
        items += b["n_pairs"] if "n_pairs" in b else len(b["lengths"])
        if k == batches // 2:  # mid-way, while the worker is busy
            private = worker_private_mb(it._workers[0].pid)
    return items / (time.perf_counter() - start), *private


def param_count(hparams: dict) -> int:
    """All parameters of the network pre-training trains (P-ELMo: its language model)."""
    from plus.train.common import build_encoder, build_lm

    model = hparams["model"]
    net = build_lm(model) if model["family"] == "pelmo" else build_encoder(model, {})
    return sum(p.numel() for p in net.parameters())


# ------------------------------------------------------------------ the rehearsal
def preprocess(fasta: Path, outdir: Path, filters: bool = True) -> dict:
    """`plus pfam preprocess` with config.yaml's settings (`filters` False: P-ELMo's variant, no length or
    family filter, as rules/common.smk), timed against `gzip -dc`; cached in outdir/bench.json."""
    import yaml

    pf = yaml.safe_load((REPO / "config.yaml").read_text())["pfam"]
    min_len, min_family_size = (pf["min_len"], pf["min_family_size"]) if filters else (1, 1)
    size = int(subprocess.run(f"gzip -dc {fasta} | wc -c", shell=True, check=True, capture_output=True,
                              text=True).stdout)
    os.sync()  # both timings start with no dirty pages left to write back (the input was just written)
    start = time.perf_counter()
    subprocess.run(["gzip", "-dc", str(fasta)], stdout=subprocess.DEVNULL, check=True)
    gzip_s = time.perf_counter() - start
    if not (outdir / "stats.json").exists():
        cmd = [sys.executable, "-m", "plus.cli", "pfam", "preprocess", "--input", str(fasta), "--outdir", str(outdir),
               "--seed", str(pf["split_seed"]), "--test-fraction", str(pf["test_fraction"]),
               "--val-fraction", str(pf["val_fraction"]), "--min-len", str(min_len),
               "--min-family-size", str(min_family_size), "--n-test-pairs", str(pf["n_test_pairs"]),
               "--n-val-pairs", str(pf["n_val_pairs"])]
        os.sync()
        start = time.perf_counter()
        child = subprocess.Popen(cmd)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        if status:
            raise SystemExit(f"preprocess failed (status {status})")
        (outdir / "bench.json").write_text(json.dumps({"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}))
    bench = json.loads((outdir / "bench.json").read_text())
    mb_per_s, gzip_mb_per_s = size / bench["seconds"] / 1e6, size / gzip_s / 1e6
    return {"mb_per_s": round(mb_per_s, 1), "gzip_mb_per_s": round(gzip_mb_per_s, 1),
            "ratio_to_gzip": round(mb_per_s / gzip_mb_per_s, 3), "peak_rss_mb": round(bench["peak_rss_mb"]),
            "input_mb": round(size / 1e6), "wall_s": round(bench["seconds"])}


def corpus_for(workdir: Path, records: int, filters: bool = True) -> tuple[Path, dict, dict]:
    fasta = workdir / f"Pfam-A.synthetic{records}.fasta.gz"
    desc_file = workdir / f"Pfam-A.synthetic{records}.json"
    if not fasta.exists():
        start = time.perf_counter()
        desc = generate(fasta, records)
        desc["generate_s"] = round(time.perf_counter() - start)
        desc_file.write_text(json.dumps(desc))
    outdir = workdir / (f"corpus{records}" if filters else f"corpus{records}_unfiltered")
    pre = preprocess(fasta, outdir, filters)
    return outdir, pre, json.loads(desc_file.read_text())


def main() -> None:
    import yaml

    from plus.resources import gpu_pretrain_projection

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=FULL_RECORDS, help=f"default {FULL_RECORDS:,} (see above)")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per model")
    p.add_argument("--steps-per-model", default="", help="overrides, e.g. base=10,large=3")
    p.add_argument("--models", default="base,large,tfm,pelmo")
    p.add_argument("--batch-per-model", default="",
                   help="pairs per batch replacing the paper's (when it does not fit in memory), e.g. large=32")
    p.add_argument("--workdir", type=Path, default=Path("results/paper_scale"))
    p.add_argument("--eval-pairs", type=int, default=256, help="test/selection pairs evaluated per run")
    p.add_argument("--compare-records", type=int, default=1_000_000, help="the smaller corpus (RSS at two sizes)")
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--no-resume-check", action="store_true")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each training process")
    args = p.parse_args()
    start = time.monotonic()
    args.workdir.mkdir(parents=True, exist_ok=True)
    overrides = {k: int(v) for k, v in (kv.split("=") for kv in args.steps_per_model.split(",") if kv)}
    batches = {k: int(v) for k, v in (kv.split("=") for kv in args.batch_per_model.split(",") if kv)}
    corpora = {}  # filters -> (full-size corpus, its preprocessing figures, the comparison corpus)

    def corpora_for(filters: bool):
        if filters not in corpora:
            corpus, pre, desc = corpus_for(args.workdir, args.records, filters)
            small = None if args.compare_records == args.records else \
                corpus_for(args.workdir, args.compare_records, filters)[0]
            corpora[filters] = corpus, pre, desc, small
        return corpora[filters]

    corpus, pre, desc, _ = corpora_for(True)
    stats = json.loads((corpus / "stats.json").read_text())
    mean_len = stats["after_family_filter"]["train_tokens"] / stats["after_family_filter"]["train"]
    variants = yaml.safe_load((REPO / "config.yaml").read_text())["pfam"]["variants"]
    models, extra = {}, {}
    for name in args.models.split(","):
        steps = overrides.get(name, args.steps)
        hp = paper_hparams(name, steps, args.eval_pairs, args.threads, batches.get(name))
        family = hp["model"]["family"]
        # TFM trains on the rnn variant (see the module docstring); P-ELMo on its unfiltered variant
        filters = variants[hp["model"]["corpus"]].get("filters", True)
        corpus, _, _, small = corpora_for(filters)
        if not filters:
            extra["preprocess_unfiltered"] = corpora[filters][1]
        model_stats = json.loads((corpus / "stats.json").read_text())["after_family_filter"]
        model_len = model_stats["train_tokens"] / model_stats["train"]
        unit = "sequence" if family == "pelmo" else "pair"  # what a batch holds
        run = measured_run(corpus, args.workdir / f"run_{name}", hp)
        pairs = hp["train"]["batch_size"]
        tokens_per_s = (1 if family == "pelmo" else 2) * pairs * model_len / np.mean(run["step_s"]) \
            if run["step_s"] else None
        res = {"steps": steps, "batch_pairs": pairs, "batch_unit": unit,
               "train_sequences": model_stats["train"], "mean_train_length": round(model_len, 1),
               "paper_batch_pairs": paper_hparams(name, steps, args.eval_pairs, args.threads)["train"]["batch_size"],
               "step_s": [round(t, 1) for t in run["step_s"]],
               "train_tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
               "peak_rss_mb": run["peak_rss_mb"], "per_step_rss_mb": run["per_step_rss_mb"],
               "glibc_tunables": training_tunables(hp)}
        n_params = param_count(hp)
        model_opt_mb = 16 * n_params / 2**20  # fp32 weights, gradients, Adam's two moments
        split = run["peak_split"]
        res["peak_split_mb"] = {
            "corpus_mappings": round(split["corpus"]),
            "other_file_mappings": round(split["file"] - split["corpus"]),  # shared libraries (torch...)
            "model_optimizer": round(model_opt_mb),
            "activations_allocator": round(split["anon"] - model_opt_mb - (run["start_anon_mb"] or 0)),
            "process_before_model": round(run["start_anon_mb"]),  # torch + plus imported, no model
        }
        # a GPU job's host memory: everything but activations (they live on the GPU); the model and optimiser
        # live on the GPU too, but the state save copies them to the host. File mappings at their own maximum
        # (the final residue count maps the whole corpus), which need not coincide with the peak.
        res["gpu_job_host_mb"] = round(run["max_file_mb"] + (run["start_anon_mb"] or 0) + model_opt_mb)
        rate, worker_mb, worker_pages_mb = loader_rate(corpus, hp, args.loader_batches)
        res[f"loader_{unit}s_per_s"], res["loader_worker_private_mb"] = round(rate, 1), round(worker_mb)
        res["loader_worker_corpus_pages_mb"] = round(worker_pages_mb)
        if small is None:  # this corpus is the comparison size
            res["peak_rss_mb_1m"], res["rss_ratio_full_to_1m_same_steps"] = run["peak_rss_mb"], 1.0
        else:
            hp_small = paper_hparams(name, min(steps, 3), args.eval_pairs, args.threads, batches.get(name))
            small_run = measured_run(small, args.workdir / f"run_{name}_1m", hp_small)
            res["peak_rss_mb_1m"] = small_run["peak_rss_mb"]
            k = len(small_run["per_step_rss_mb"])
            res["rss_ratio_full_to_1m_same_steps"] = round(max(run["per_step_rss_mb"][:k] + [0]) /
                                                           max(max(small_run["per_step_rss_mb"]), 1), 3)
        if not args.no_resume_check:
            state_mb, save_s = resume_run(corpus, args.workdir / f"resume_{name}", hp)
            res.update(state_mb=round(state_mb), save_s=round(save_s, 2),
                       resumed_identical=same_model(args.workdir / f"run_{name}/model.pt",
                                                    args.workdir / f"resume_{name}/model.pt"))
        proj = gpu_pretrain_projection(hp["model"], n_params, model_stats["train_tokens"], hp["train"]["epochs"],
                                       pairs, model_len)
        proj["loader_workers_needed"] = int(np.ceil(proj[f"{unit}s_per_s"] / res[f"loader_{unit}s_per_s"]))
        res["projection"] = proj
        res["params"] = n_params
        models[name] = res
        print(json.dumps({"partial": name, **res}), file=sys.stderr, flush=True)
    print(json.dumps({
        "records": args.records, "train_sequences": stats["after_family_filter"]["train"],
        "families_kept": stats["families_kept"], "mean_train_length": round(mean_len, 1), "generator": desc,
        "preprocess": pre, **extra, "models": models,
        "projection": {k: v["projection"] for k, v in models.items()},
        "threads": args.threads, "glibc_tunables": {k: v["glibc_tunables"] for k, v in models.items()},
        "wall_s": round(time.monotonic() - start), "load_avg_1min": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
