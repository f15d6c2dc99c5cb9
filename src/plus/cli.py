"""The `plus` command: one subcommand per workflow stage (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from plus import __version__, environment, plan
from plus.io import InputError


def _hparams(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--hparams is not valid JSON ({exc})") from exc


def _add_download(sub):
    p = sub.add_parser(
        "download",
        help="fetch one artefact from its mirrors in turn, or verify a local copy (resume, checks, atomic)",
    )
    p.add_argument("--url", action="append", default=[], help="a mirror; repeat it: tried in the given order")
    p.add_argument("--path", help="a local copy: verified, then linked or copied to --out (no download)")
    p.add_argument("--out")
    p.add_argument("--sha256", default="", help="expected sha256 (empty: record it on first download)")
    p.add_argument("--gzip", action="store_true", help="check the gzip stream (automatic for *.gz outputs)")
    p.add_argument("--retries", type=int, default=5, help="attempts per mirror (a broken transfer resumes)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    p.add_argument("--check", nargs="*", metavar="FILE[=SHA256]",
                   help="print source, size and sha256 of downloaded files (vs the pinned sha256)")

    def run(a):
        from plus import download as dl

        if a.check is not None:
            if a.url or a.path or a.out:
                p.error("--check takes no --url, --path or --out")
            bad = dl.check(a.check)
            if bad:
                raise InputError(f"{bad} file(s) differ from the sha256 pinned in the config")
            return
        if not a.out or not (a.url or a.path):
            p.error("give --out and --url (repeatable) or --path")
        if a.path:
            if a.url:
                print(f"local copy {a.path} given: the {len(a.url)} mirror URL(s) are not used", file=sys.stderr)
            dl.use_local(a.path, a.out, a.sha256.strip(), a.gzip)
        else:
            dl.download(a.url, a.out, a.sha256.strip(), a.retries, a.timeout, is_gzip=a.gzip)

    p.set_defaults(func=run)


def _add_pretrain(sub):
    p = sub.add_parser("pretrain", help="MLM + same-family pre-training on Pfam shards (resumable)")
    p.add_argument("--corpus", required=True, help="directory written by `plus pfam preprocess`")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--hparams", type=_hparams, required=True, help="JSON: model, train, fidelity")
    p.add_argument("--state-dir", required=True, help="resumable state (kept outside declared outputs)")
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--out-curve", required=True)
    p.add_argument("--name", default="", help="model name recorded in metrics.json")
    p.add_argument("--ablation", default="")

    def run(a):
        from plus.train.pretrain import pretrain

        pretrain(a.corpus, a.seed, a.hparams, a.state_dir, a.out_model, a.out_metrics, a.out_curve,
                 model_name=a.name, ablation=a.ablation)

    p.set_defaults(func=run)


def _add_finetune(sub):
    p = sub.add_parser("finetune", help="fine-tune on one task (resumable)")
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True, help="converted task directory (manifest.json)")
    p.add_argument("--pretrained", default=None, help="pre-trained model.pt (omit: random init)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--hparams", type=_hparams, required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--out-model", required=True)
    p.add_argument("--out-curve", required=True)
    p.add_argument("--out-run", default=None, help="run.json: the run's fingerprint and the model's sha256")

    def run(a):
        from plus.train.finetune import finetune

        finetune(a.task, a.data, a.seed, a.hparams, a.state_dir, a.out_model, a.out_curve, a.pretrained,
                 out_run=a.out_run)

    p.set_defaults(func=run)


def _add_evaluate(sub):
    p = sub.add_parser("evaluate", help="evaluate a fine-tuned model on every test set of a task")
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hparams", type=_hparams, required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--out-predictions", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--ablation", default="")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the 95 %% CIs")
    p.add_argument("--run", default=None, help="run.json of `plus finetune --out-run`: recorded in metrics.json")

    def run(a):
        from plus.train.evaluate import evaluate

        evaluate(a.task, a.data, a.model, a.seed, a.hparams, a.out_metrics, a.out_predictions,
                 model_name=a.name, ablation=a.ablation, n_boot=a.bootstrap, run_record=a.run)

    p.set_defaults(func=run)


def _add_baseline(sub):
    p = sub.add_parser("baseline", help="trivial per-task baseline, or phmmer for homology")
    p.add_argument("--task", required=True)
    p.add_argument("--kind", choices=["trivial", "phmmer"], required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--fidelity", type=_hparams, default={})

    def run(a):
        from plus.tasks import baselines
        from plus.tasks.registry import get_task

        if a.kind not in get_task(a.task).baselines:
            raise SystemExit(f"error: the {a.kind} baseline does not apply to {a.task} "
                             f"(its baselines: {', '.join(get_task(a.task).baselines)})")
        if a.kind == "phmmer":
            baselines.phmmer(a.data, a.out_metrics, a.cpus, a.fidelity)
        else:
            baselines.trivial(a.task, a.data, a.out_metrics, a.fidelity)

    p.set_defaults(func=run)


def _add_embed(sub):
    p = sub.add_parser("embed", help="per-residue and pooled embeddings (h, z) of sequences, .npz or .h5")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fasta", help="FASTA file (ids = first header word)")
    src.add_argument("--data", help="converted task directory (manifest.json), e.g. results/data/homology")
    p.add_argument("--sets", nargs="*", help="with --data: sequence sets (default: the test sets)")
    p.add_argument("--model", required=True, help="model.pt of plus pretrain/finetune, or a reference state_dict")
    p.add_argument("--hparams", type=_hparams, default=None,
                   help="JSON with `model` (needed for PLUS-TFM; PLUS-RNN sizes are read off the weights)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooled-only", action="store_true", help="leave out the per-residue h and z")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help=".npz, or .h5/.hdf5 (needs h5py)")

    def run(a):
        from plus.embed import embed

        embed(a.out, a.model, a.hparams, fasta=a.fasta, data=a.data, sets=a.sets, batch_size=a.batch_size,
              pooled_only=a.pooled_only, threads=a.threads)

    p.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    from plus.data import convert, leakage, pfam
    from plus.report import cli as report_cli

    parser = argparse.ArgumentParser(prog="plus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"plus-workflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_download(sub)
    pfam.add_parser(sub)
    sub.choices["pfam"].set_defaults(func=pfam.run)
    data = sub.add_parser("data", help="downstream task data").add_subparsers(dest="data_command", required=True)
    convert.add_parser(data)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_evaluate(sub)
    _add_baseline(sub)
    _add_embed(sub)
    leakage.add_parser(sub)
    report_cli.add_parser(sub)
    environment.add_parser(sub)
    plan.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    environment.warn_drift()  # one log line when torch, numpy, pandas, snakemake, pyhmmer... differ from the lock
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# glibc's malloc returns freed blocks above its mmap threshold to the kernel and faults them in again on the
# next allocation: PyTorch CPU training then spends about as long in page faults as in arithmetic
# (../shared/spec: 2.5x slower LSTM steps; 25 % of a demo fine-tuning job here). A 4 GiB threshold keeps
# them in the heap. Set GLIBC_TUNABLES yourself (even to "") to opt out.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4294967296"


def tune_allocator(command: list[str]) -> None:
    """Re-run `command` (this process's argv, as run by the Python interpreter) in place of this process (same
    pid, so torchrun and SLURM keep tracking it) with MALLOC_TUNABLES set, when it runs on glibc and
    GLIBC_TUNABLES is unset. The variable is read at process start only."""
    if "GLIBC_TUNABLES" in os.environ or not hasattr(os, "confstr"):
        return
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return
    if libc.startswith("glibc"):
        os.environ["GLIBC_TUNABLES"] = MALLOC_TUNABLES
        os.execv(sys.executable, [sys.executable, *command])


def entry() -> None:
    """The `plus` console script (and `python -m plus.cli`): allocator tuning, then `main`."""
    tune_allocator(["-m", "plus.cli", *sys.argv[1:]])
    sys.exit(main())


if __name__ == "__main__":
    entry()
