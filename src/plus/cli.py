"""The `plus` command: one subcommand per workflow stage (the Snakemake rules call these)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from plus import __version__, environment, plan
from plus.arguments import hparams_json
from plus.io import InputError


def _add_pretrain(sub):
    p = sub.add_parser("pretrain", help="MLM + same-family pre-training on Pfam shards (resumable)")
    p.add_argument("--corpus", required=True, help="directory written by `plus pfam preprocess`")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--hparams", type=hparams_json, required=True, help="JSON: model, train, fidelity")
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
    p.add_argument("--hparams", type=hparams_json, required=True)
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
    p.add_argument("--hparams", type=hparams_json, required=True)
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


def build_parser() -> argparse.ArgumentParser:
    """The `plus` parser: each command's module registers it (`add_parser(subparsers)`, which sets `func`);
    the training commands' registrations (`_add_pretrain`, `_add_finetune`, `_add_evaluate`) are still here,
    with their run functions nested, until plus.train gets its own `add_parser`."""
    from plus import download, embed
    from plus.data import convert, leakage, pfam
    from plus.report import cli as report_cli
    from plus.tasks import baselines

    parser = argparse.ArgumentParser(prog="plus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"plus-workflow {__version__}")
    parser.add_argument("--custom-task", action="append", default=[], metavar="NAME=KIND",
                        help="a user's task (config custom_tasks:) known to this command; repeatable")
    sub = parser.add_subparsers(dest="command", required=True)
    download.add_parser(sub)
    pfam.add_parser(sub)
    data = sub.add_parser("data", help="downstream task data").add_subparsers(dest="data_command", required=True)
    convert.add_parser(data)
    _add_pretrain(sub)
    _add_finetune(sub)
    _add_evaluate(sub)
    baselines.add_parser(sub)
    embed.add_parser(sub)
    leakage.add_parser(sub)
    report_cli.add_parser(sub)
    environment.add_parser(sub)
    plan.add_parser(sub)
    return parser


def register_custom_tasks(argv) -> None:
    """Register the --custom-task entries before the subcommands' parsers list the tasks."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--custom-task", action="append", default=[])
    items = pre.parse_known_args(argv)[0].custom_task
    if items:
        from plus.tasks.custom import register_flags

        register_flags(items)


def main(argv=None) -> int:
    try:
        register_custom_tasks(sys.argv[1:] if argv is None else argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    environment.warn_drift()  # one log line when torch, numpy, pandas, snakemake, pyhmmer... differ from the lock
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


# glibc's malloc returns freed blocks above its mmap threshold to the kernel and faults them in again on the
# next allocation; a fixed threshold keeps smaller blocks in the heap, at the cost of the heap memory they
# retain. Measured by benchmarks/allocator.py (README "Speed on CPUs"), per step of CPU pre-training against
# glibc's default: PLUS-RNN BASE / LARGE at the paper's sizes run as fast with 256 MiB as with 4 GiB (1.14x
# faster than the default for LARGE) and peak at 0.65 / 0.69 of 4 GiB's memory; PLUS-TFM runs fastest with
# 4 GiB (the default is 1.65x slower, 256 MiB 1.33x) for 1.17x the default's memory. At the demo's sizes the
# settings do not differ. Set GLIBC_TUNABLES yourself (even to "") to opt out.
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=268435456"  # 256 MiB: every command but PLUS-TFM's
MALLOC_TUNABLES_BY_FAMILY = {"tfm": "glibc.malloc.mmap_threshold=4294967296"}


def family_tunables(family: str | None) -> str:
    """The allocator setting for the jobs of a model family (None: a command without a model)."""
    return MALLOC_TUNABLES_BY_FAMILY.get(family, MALLOC_TUNABLES)


def malloc_tunables(command: list[str]) -> str:
    """The allocator setting for a `plus` command line: by the model family of its --hparams, if any."""
    family = None
    for k, arg in enumerate(command):
        text = arg.split("=", 1)[1] if arg.startswith("--hparams=") else None
        if arg == "--hparams" and k + 1 < len(command):
            text = command[k + 1]
        if text is not None:
            try:
                family = json.loads(text)["model"]["family"]
            except (ValueError, KeyError, TypeError):  # argparse reports a malformed --hparams
                family = None
    return family_tunables(family)


def tune_allocator(command: list[str], tunables: str | None = None) -> None:
    """Re-run `command` (this process's argv, as run by the Python interpreter) in place of this process (same
    pid, so torchrun and SLURM keep tracking it) with `tunables` (default: malloc_tunables(command)) set, when
    it runs on glibc and GLIBC_TUNABLES is unset. The variable is read at process start only."""
    if "GLIBC_TUNABLES" in os.environ or not hasattr(os, "confstr"):
        return
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return
    if libc.startswith("glibc"):
        os.environ["GLIBC_TUNABLES"] = tunables or malloc_tunables(command)
        os.execv(sys.executable, [sys.executable, *command])


def entry() -> None:
    """The `plus` console script (and `python -m plus.cli`): allocator tuning, then `main`."""
    tune_allocator(["-m", "plus.cli", *sys.argv[1:]])
    sys.exit(main())


if __name__ == "__main__":
    entry()
