"""`plus tables`, `plus tables-summary`, `plus tables-pretraining`, `plus effects`, `plus effects-table`,
`plus plot ...`, `plus provenance`."""

from __future__ import annotations

import argparse
from pathlib import Path

from plus.io import InputError


def _pairs(items, flag: str) -> dict[str, str]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"{flag}: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _task_tables(items) -> dict[str, str]:
    """TASK=CSV, or a CSV whose file stem is the task (results/tables/secstr.csv)."""
    from plus.tasks.registry import TASKS

    out = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep:
            task, path = Path(item).stem, item
        if task not in TASKS:
            raise InputError(f"--tables {item!r}: unknown task {task!r} ({sorted(TASKS)}); use TASK=CSV")
        out[task] = path
    return out


def _table_outputs(p, title: str | None = None) -> None:
    """--title and the CSV, Markdown and (optional) HTML outputs of a table command."""
    p.add_argument("--title", default=title)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="also an HTML rendering (shown inline by the Snakemake report)")


def add_parser(subparsers) -> None:
    """Register the report subcommands on an argparse subparsers object (each sets its own func)."""
    p = subparsers.add_parser("tables", help="paper-style table of one task from run metrics.json files")
    p.add_argument("--task", required=True)
    p.add_argument("--runs", nargs="*", default=[], help="fine-tuning metrics.json files that exist")
    p.add_argument("--expected", nargs="*", default=[], help="every metrics.json the config expects")
    p.add_argument("--baselines", nargs="*", default=[], help="trivial/phmmer baseline metrics.json files")
    p.add_argument("--published", nargs="*", default=[], help="published-number CSVs")
    p.add_argument("--test-set-map", nargs="*", default=[], metavar="KEY=LABEL",
                   help="our test-set key = published test_set label")
    p.add_argument("--model-label", nargs="*", default=[], metavar="MODEL[/ABLATION]=LABEL",
                   help="our model (ablation) = published model label")
    _table_outputs(p)
    p.set_defaults(func=run_tables)

    p = subparsers.add_parser("tables-summary", help="summary table (one column per task) from the task tables")
    p.add_argument("--tables", nargs="+", required=True, metavar="[TASK=]CSV",
                   help="task tables from `plus tables`; TASK defaults to the file stem")
    _table_outputs(p)
    p.set_defaults(func=run_tables_summary)

    p = subparsers.add_parser("tables-pretraining", help="MLM/SFP accuracy table from pre-training runs")
    p.add_argument("--runs", nargs="*", default=[])
    p.add_argument("--expected", nargs="*", default=[])
    p.add_argument("--published", nargs="*", default=[])
    p.add_argument("--test-set-map", nargs="*", default=[], metavar="KEY=LABEL")
    p.add_argument("--model-label", nargs="*", default=[], metavar="MODEL[/ABLATION]=LABEL")
    _table_outputs(p)
    p.set_defaults(func=run_tables_pretraining)

    p = subparsers.add_parser("effects", help="paired bootstrap effects of the ablation contrasts of one task")
    p.add_argument("--task", required=True)
    p.add_argument("--runs", nargs="*", default=[],
                   help="fine-tuning metrics.json files, each with its predictions.npz beside it")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0; written in the table)")
    p.add_argument("--threads", type=int, default=1, help="processes bootstrapping runs in parallel")
    p.add_argument("--out-csv", required=True)
    p.set_defaults(func=run_effects)

    p = subparsers.add_parser("effects-table", help="merge per-task effects into the ablation-effects table")
    p.add_argument("--effects", nargs="+", required=True, help="CSVs from `plus effects`")
    _table_outputs(p, title="Ablation effects")
    p.add_argument("--out-headline", help="the headline paragraphs as reStructuredText (the report includes it)")
    p.set_defaults(func=run_effects_table)

    p = subparsers.add_parser("plot", help="figures (PNG + SVG)")
    kinds = p.add_subparsers(dest="plot_kind", required=True)
    k = kinds.add_parser("ablation", help="per-task ablation bars with seeds as points")
    k.add_argument("--task", required=True)
    k.add_argument("--runs", nargs="+", required=True)
    k.add_argument("--metrics", nargs="*")
    k.set_defaults(func=run_plot_ablation)
    k = kinds.add_parser("pretrain-curves", help="loss, MLM and SFP accuracy vs step")
    k.add_argument("--curves", nargs="+", required=True)
    k.set_defaults(func=run_plot_pretrain_curves)
    k = kinds.add_parser("finetune-curves", help="train/dev loss vs epoch of one task")
    k.add_argument("--task", required=True)
    k.add_argument("--curves", nargs="+", required=True)
    k.set_defaults(func=run_plot_finetune_curves)
    k = kinds.add_parser("effects", help="forest plot of the ablation effects with their CIs, per task")
    k.add_argument("--effects", required=True, help="ablation_effects.csv from `plus effects-table`")
    k.set_defaults(func=run_plot_effects)
    k = kinds.add_parser("embeddings", help="2-D PCA of pooled embeddings coloured by SCOP class")
    k.add_argument("--npz", required=True)
    k.add_argument("--title")
    k.set_defaults(func=run_plot_embeddings)
    for k in kinds.choices.values():
        k.add_argument("--out-png", required=True)
        k.add_argument("--out-svg", required=True)

    p = subparsers.add_parser("provenance", help="merge every run's provenance into one JSON (and CSV)")
    p.add_argument("--runs", nargs="+", required=True, help="metrics.json or run_info.json files")
    p.add_argument("--out", required=True)
    p.add_argument("--out-csv")
    p.add_argument("--out-note", help="the environment note as HTML (lock digest, runs that differ)")
    p.set_defaults(func=run_provenance)


def run_tables(args: argparse.Namespace) -> None:
    from plus.report import render, tables

    df = tables.build_task_table(args.task, args.runs, args.baselines, args.published,
                                 _pairs(args.test_set_map, "--test-set-map"),
                                 _pairs(args.model_label, "--model-label"), expected_runs=args.expected)
    render.write_table(df, args.out_csv, args.out_md, args.title or f"{args.task}", args.out_html)


def run_tables_summary(args: argparse.Namespace) -> None:
    from plus.report import render, tables

    task_tables = _task_tables(args.tables)
    df = tables.build_summary_table(task_tables)
    render.write_table(df, args.out_csv, args.out_md, args.title or f"Summary of the {len(task_tables)} tasks",
                       args.out_html, render.SUMMARY_LAYOUT)


def run_tables_pretraining(args: argparse.Namespace) -> None:
    from plus.report import render, tables

    df = tables.build_pretraining_table(args.runs, args.expected, args.published,
                                        _pairs(args.test_set_map, "--test-set-map"),
                                        _pairs(args.model_label, "--model-label"))
    render.write_table(df, args.out_csv, args.out_md, args.title or "Pre-training", args.out_html,
                       render.PRETRAINING_LAYOUT)


def run_effects(args: argparse.Namespace) -> None:
    from plus.report import effects

    df = effects.ablation_effects(args.task, args.runs, n_boot=args.n_boot, seed=args.seed, workers=args.threads)
    effects.write_effects(df, args.out_csv)


def run_effects_table(args: argparse.Namespace) -> None:
    from plus.report import effects

    effects.write_effects(effects.read_effects(args.effects), args.out_csv, args.out_md, args.out_html,
                          args.out_headline, title=args.title)


def run_plot_ablation(args: argparse.Namespace) -> None:
    from plus.report import plots

    plots.plot_ablation(args.task, args.runs, args.out_png, args.out_svg, args.metrics or None)


def run_plot_pretrain_curves(args: argparse.Namespace) -> None:
    from plus.report import plots

    plots.plot_pretrain_curves(args.curves, args.out_png, args.out_svg)


def run_plot_finetune_curves(args: argparse.Namespace) -> None:
    from plus.report import plots

    plots.plot_finetune_curves(args.task, args.curves, args.out_png, args.out_svg)


def run_plot_effects(args: argparse.Namespace) -> None:
    from plus.report import plots

    plots.plot_effects(args.effects, args.out_png, args.out_svg)


def run_plot_embeddings(args: argparse.Namespace) -> None:
    from plus.report import plots

    plots.plot_embeddings(args.npz, args.out_png, args.out_svg, args.title)


def run_provenance(args: argparse.Namespace) -> None:
    from plus.report import provenance

    merged = provenance.merge_provenance(args.runs, args.out, args.out_csv, args.out_note)
    print("\n".join(merged["environment"]["lines"]))
