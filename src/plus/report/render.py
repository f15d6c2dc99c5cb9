"""Markdown and HTML renderings of the comparison tables (plus.report.tables), and writing a table.

The CSV keeps every column; the renderings are compact (:class:`Layout`): a column without a value in any row
is left out, so ``pub.``/``Δ`` appear only where our row has a published value (a published row's own value
sits in the metric's column).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pandas as pd

from plus.html_table import html_page
from plus.io import atomic_write
from plus.report.tables import ID_COLUMNS, STATS, column_groups


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


class Missing(str):
    """A display cell without a value ("n/a", "—"); a column holding nothing else is left out."""


NA, NOT_RERUN = Missing("n/a"), Missing("—")

NOTE = ("Ours: mean ± std over seeds (std ddof=1; none for one seed). Published rows: the value reported in the "
        "cited source, not rerun. pub.: the published value of our row's model, Δ = ours − published. n/a: "
        "unknown or not computed; —: does not apply. Columns without a value in any row are left out; the CSV "
        "beside this file keeps every column, with n_seeds and the 95 % bootstrap CI.")
SUMMARY_NOTE = ("Each task's headline metric: mean over seeds [95 % CI, the mean over seeds of each run's "
                "bootstrap interval over test examples]; Seeds: fine-tuning seeds per task (largest over tasks). "
                "Published rows: the value reported in the cited source, not rerun. pub. and Δ = ours − published "
                "appear where one of our models has a published value. n/a: unknown or not computed. The CSV "
                "beside this file keeps every column (std, n_seeds, published, delta).")
B16_NOTE = ("val = test: the validation and test columns are identical in every row because the reference "
            "selects its models on the test pairs (bug B16, switch b16_select_on_test), so both splits are the "
            "same set; the CSV keeps both.")


@dataclass(frozen=True)
class Layout:
    """How the Markdown/HTML rendering shows a table; the CSV always keeps every column.

    cell: "mean_std" (mean ± std) or "mean_ci" (mean [ci95_low, ci95_high]). merge: two test sets shown as one
    column ``"{a} = {b}"`` for every metric whose values are identical in every row, explained by merge_note.
    baseline_set: a test-set group holding trivial baselines per row, shown as rows (baseline_label) holding
    each metric's value in that metric's columns.
    """

    cell: str = "mean_std"
    note: str = NOTE
    merge: tuple[str, str] | None = None
    merge_note: str = ""
    baseline_set: str | None = None
    baseline_label: str = "baseline"


PRETRAINING_NOTE = ("Mean ± std over pre-training seeds (std ddof=1; none for one seed): accuracy is the fraction of "
                    "masked residues (MLM), of sequence pairs (SFP) or of residues (P-ELMo LM) predicted right; "
                    "losses in nats. chance / unigram frequency: SFP chance (0.5) and the MLM (LM) accuracy of "
                    "predicting the corpus's most frequent residue, per corpus. n/a: unknown or not computed. "
                    "Columns without a value in any row are left out; the CSV beside this file keeps every column.")
SUMMARY_LAYOUT = Layout(cell="mean_ci", note=SUMMARY_NOTE)
PRETRAINING_LAYOUT = Layout(note=PRETRAINING_NOTE, merge=("val", "test"), merge_note=B16_NOTE,
                            baseline_set="trivial", baseline_label="chance / unigram frequency")


def _same_values(recs, a: str, b: str) -> bool:
    for rec in recs:
        for stat in ("mean", "std", "published"):
            x, y = rec.get(f"{a}/{stat}", math.nan), rec.get(f"{b}/{stat}", math.nan)
            if not ((pd.isna(x) and pd.isna(y)) or x == y):
                return False
    return True


def _apply_layout(df: pd.DataFrame, layout: Layout) -> tuple[list[dict], list[tuple[str, str]], list[str]]:
    """(records, column groups, footnotes) after moving a baseline group into rows and merging identical sets."""
    recs, groups, notes = df.to_dict("records"), column_groups(df), []
    if layout.baseline_set:
        base = [g for g in groups if g[0] == layout.baseline_set]
        groups = [g for g in groups if g[0] != layout.baseline_set]
        seen: dict[tuple, list[str]] = {}
        for rec in recs:
            values = tuple(rec[f"{ts}/{m}/mean"] for ts, m in base)
            if rec["kind"] != "published" and not all(pd.isna(v) for v in values):
                seen.setdefault(values, []).append(rec["model"])
        for values, models in seen.items():
            label = layout.baseline_label + (f" (corpus of {', '.join(dict.fromkeys(models))})"
                                             if len(seen) > 1 else "")
            row = {**dict.fromkeys(ID_COLUMNS, ""), "kind": "baseline", "model": label, "ablation": "-",
                   "n_runs": pd.NA, "missing_runs": pd.NA}
            for (_, metric), value in zip(base, values, strict=True):
                for ts, m in groups:
                    if m == metric:
                        row.update({f"{ts}/{m}/mean": value, f"{ts}/{m}/std": math.nan})
            recs.append(row)
    if layout.merge:
        a, b = layout.merge
        merged = []
        for ts, m in groups:
            if ts == a and (b, m) in groups and _same_values(recs, f"{a}/{m}", f"{b}/{m}"):
                name = f"{a} = {b}"
                for rec in recs:
                    rec.update({f"{name}/{m}/{stat}": rec.get(f"{a}/{m}/{stat}", math.nan) for stat in STATS})
                merged.append((a, m))
        if merged:
            gone = {(a, m) for _, m in merged} | {(b, m) for _, m in merged}
            groups = [(f"{a} = {b}", m) if (ts, m) in merged else (ts, m) for ts, m in groups
                      if (ts, m) in merged or (ts, m) not in gone]
            notes.append(layout.merge_note)
    return recs, groups, notes


def _group_name(ts: str, metric: str, layout: Layout) -> str:
    task, sep, test_set = ts.partition(":")
    return f"{task} {metric} ({test_set})" if layout.cell == "mean_ci" and sep else f"{ts} {metric}"


def _ours(rec: dict, key: str, layout: Layout) -> str:
    mean = rec.get(f"{key}/mean", math.nan)
    if pd.isna(mean):
        return NA
    if layout.cell == "mean_ci":
        low, high = rec.get(f"{key}/ci95_low", math.nan), rec.get(f"{key}/ci95_high", math.nan)
        return f"{mean:.3f}" + ("" if pd.isna(low) or pd.isna(high) else f" [{low:.3f}, {high:.3f}]")
    std = rec.get(f"{key}/std", math.nan)
    return f"{mean:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")


def _identity(rec: dict) -> list[str]:
    if rec["kind"] == "published":
        seeds = "not rerun"
        kind = f"published ({rec['paper']}{', secondary' if rec['status'] == 'secondary' else ''})"
    else:
        seeds = NOT_RERUN if pd.isna(rec["n_runs"]) else (
            f"{rec['n_runs']}" + (f" ({rec['missing_runs']} missing)" if rec["missing_runs"] else ""))
        kind = rec["kind"]
    named = rec["label"] and rec["label"] != rec["model"]
    return [f"{rec['model']} ({rec['label']})" if named else rec["model"], rec["ablation"], kind, seeds]


def _compact(header: list[str], rows: list[list[str]], fixed: int) -> tuple[list[str], list[list[str]]]:
    """Drop every column after the first `fixed` whose cells are all :class:`Missing`."""
    keep = [j for j in range(len(header))
            if j < fixed or any(not isinstance(row[j], Missing) for row in rows)]
    return [header[j] for j in keep], [[str(row[j]) for j in keep] for row in rows]


def display_rows(df: pd.DataFrame, layout: Layout | None = None) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, text cells and footnotes of the readable table. Per (test set, metric): ours (see
    :class:`Layout`; a published row shows its published value here), pub. (our row's published value) and
    Δ; a column without a value in any row is left out."""
    layout = layout or Layout()
    recs, groups, notes = _apply_layout(df, layout)
    header = ["Model", "Ablation", "Kind", "Seeds"]
    rows = [_identity(rec) for rec in recs]
    for ts, m in groups:
        name, key = _group_name(ts, m, layout), f"{ts}/{m}"
        header += [name, f"{name} pub.", "Δ"]
        for row, rec in zip(rows, recs, strict=True):
            pub, delta = rec.get(f"{key}/published", math.nan), rec.get(f"{key}/delta", math.nan)
            if rec["kind"] == "published":
                row += [NA if pd.isna(pub) else format(pub, "g"), NOT_RERUN, NOT_RERUN]
            else:
                row += [_ours(rec, key, layout), NA if pd.isna(pub) else format(pub, "g"),
                        NA if pd.isna(delta) else format(delta, "+.3f")]
    # a published reference row without a value in any shown cell says nothing here (the summary's other cells)
    rows = [row for row, rec in zip(rows, recs, strict=True)
            if rec["kind"] != "published" or any(not isinstance(x, Missing) for x in row[4:])]
    header, rows = _compact(header, rows, fixed=4)
    return header, rows, notes


def to_markdown(df: pd.DataFrame, title: str | None = None, layout: Layout | None = None) -> str:
    """Readable Markdown rendering of a table (see :func:`display_rows`)."""
    layout = layout or Layout()
    header, rows, notes = display_rows(df, layout)
    lines = [f"## {title}", ""] if title else []
    lines += ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    lines += ["", layout.note, ""] + [f"{n}\n" for n in notes]
    return "\n".join(lines)


def to_html(df: pd.DataFrame, title: str | None = None, layout: Layout | None = None) -> str:
    """HTML rendering of a table (see :func:`display_rows`), for the Snakemake report."""
    layout = layout or Layout()
    header, rows, notes = display_rows(df, layout)
    return html_page(title, header, rows, [layout.note, *notes], text_columns=3)


def write_table(df: pd.DataFrame, csv_path: str | os.PathLike, md_path: str | os.PathLike,
                title: str | None = None, html_path: str | os.PathLike | None = None,
                layout: Layout | None = None) -> None:
    """Write the table as CSV (every column; unknown = empty cell), as Markdown and optionally as HTML (both
    compact, see :class:`Layout`), each atomically."""
    with atomic_write(csv_path, newline="") as fh:
        df.to_csv(fh, index=False, na_rep="", float_format="%.10g")
    with atomic_write(md_path, encoding="utf-8") as fh:
        fh.write(to_markdown(df, title, layout))
    if html_path:
        with atomic_write(html_path, encoding="utf-8") as fh:
            fh.write(to_html(df, title, layout))
