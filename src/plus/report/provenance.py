"""The merge of every run's provenance record (plus.provenance.collect_provenance) and its environment note."""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from plus.environment import CHECKED, describe, environment_record
from plus.io import InputError, atomic_write, read_json, write_json
from plus.provenance import PROVENANCE_KEYS

PRETRAINING = "pretraining"  # the table of runs without a task


def _run_of(path: str) -> tuple[dict, str]:
    """(provenance, table) of a metrics.json (its "provenance" object) or a run_info.json (the object itself or its
    "provenance"); the table is the file's "task", or pre-training for a run without one."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object")
    table = d.get("task") or PRETRAINING
    if "provenance" in d:
        d = d["provenance"]
    elif Path(path).name == "metrics.json":
        raise InputError(f"{path}: no 'provenance' object")
    missing = [k for k in ("package_version", "git_commit", "seed") if k not in d]
    if missing:
        raise InputError(f"{path}: provenance lacks {missing}")
    return d, str(table)


def _environment_of(prov: dict) -> dict | None:
    """What two runs of one table must share: Python, the lock and the versions of CHECKED (None: not recorded)."""
    env = prov.get("environment")
    if not isinstance(env, dict) or not isinstance(env.get("versions"), dict):
        return None
    return {"python": prov.get("python"), "lock": env.get("lock_digest"), **env["versions"]}


def _short(digest) -> str:
    return digest[:12] if digest else "none"


def _listed(runs: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(runs) - limit} more (results/provenance.json lists all)" if len(runs) > limit else ""
    return ", ".join(runs[:limit]) + more


def environment_note(runs: Mapping[str, dict], tables: Mapping[str, str], lock_digest: str | None) -> dict:
    """The environment note of merged runs ({run: provenance}, {run: table}): the lock digest of this installation,
    every run whose recorded environment differs from its lock or was made under another lock, and every table
    (and the summary: all fine-tuning runs) whose runs differ from each other in Python or a CHECKED version.
    `lines` is the note as the report shows it."""
    envs = {run: _environment_of(prov) for run, prov in runs.items()}
    unrecorded = [run for run, env in envs.items() if env is None]
    differs = [{"run": run, "table": tables[run], "package": name, **drift} for run, env in envs.items() if env
               for name, drift in runs[run]["environment"].get("drift", {}).items()]
    other_locks: dict[str, list[str]] = {}
    for run, env in envs.items():
        if env and env["lock"] != lock_digest:
            other_locks.setdefault(_short(env["lock"]), []).append(run)
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(tables[run], []).append(run)
    finetuning = [run for run in runs if tables[run] != PRETRAINING]
    if len({tables[run] for run in finetuning}) > 1:
        groups["summary"] = finetuning
    mixed = []
    for table, members in groups.items():
        recorded = [run for run in members if envs[run]]
        for key in ["python", "lock", *CHECKED]:
            values: dict[str, list[str]] = {}
            for run in recorded:
                value = envs[run].get(key)
                values.setdefault(_short(value) if key == "lock" else str(value), []).append(run)
            if len(values) > 1:
                mixed.append({"table": table, "key": key, "values": values})

    lines = [f"Lock sha256 {_short(lock_digest)} (src/plus/lock.txt of this installation), {len(runs)} runs."]
    by_run: dict[str, list[str]] = {}
    for d in differs:
        by_run.setdefault(d["run"], []).append(describe(d["package"], d))
    lines += [f"{run} ({tables[run]}) differs from its lock: {', '.join(diffs)}" for run, diffs in by_run.items()]
    lines += [f"{len(rs)} runs were made under lock {digest}, not this one: {_listed(rs)}" if digest != "none" else
              f"{len(rs)} runs found no readable lock (environment not checked): {_listed(rs)}"
              for digest, rs in other_locks.items()]
    for m in mixed:
        counts = Counter({value: len(rs) for value, rs in m["values"].items()})
        common, n = counts.most_common(1)[0]
        parts = [f"{common} ({n} run{'s' if n > 1 else ''})"]
        parts += [f"{value} ({_listed(rs)})" for value, rs in m["values"].items() if value != common]
        lines.append(f"table {m['table']}: runs differ in {m['key']}: {'; '.join(parts)}")
    if unrecorded:
        lines.append(f"{len(unrecorded)} runs have no environment record (made before the drift check): "
                     f"{_listed(unrecorded)}")
    if len(lines) == 1:
        lines.append("Every run matches the lock, and the runs of each table share one environment (Python, "
                     f"{', '.join(CHECKED)}).")
    return {"lock_digest": lock_digest, "runs": len(runs), "differs_from_lock": differs,
            "other_locks": other_locks, "mixed": mixed, "not_recorded": unrecorded, "lines": lines}


def write_note_html(note: dict, path: str | os.PathLike) -> None:
    """The environment note as a small HTML page (shown inline by the Snakemake report)."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in note["lines"][1:])
    text = (f"<html><body><h3>Environment</h3><p>{html.escape(note['lines'][0])}</p><ul>{items}</ul>"
            "</body></html>\n")
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(text)


def merge_provenance(files: Sequence, out: str | os.PathLike, out_csv: str | os.PathLike | None = None,
                     out_note: str | os.PathLike | None = None, lock_digest: str | None = None) -> dict:
    """Write {"environment": note, "runs": {file path: provenance}} for every run file to `out` (JSON), and, if
    given, one CSV row per run (nested hparams as compact JSON, the environment as its lock digest and drift) to
    `out_csv` and the environment note as HTML to `out_note`. `lock_digest`: of this installation's lock (default:
    read it). Returns the merged dict."""
    runs, tables = {}, {}
    for f in files:
        runs[str(f)], tables[str(f)] = _run_of(str(f))
    if lock_digest is None:
        lock_digest = environment_record()["lock_digest"]
    merged = {"environment": environment_note(runs, tables, lock_digest), "runs": runs}
    write_json(out, merged)
    if out_csv is not None:
        flat = [c for c in PROVENANCE_KEYS if c not in ("hparams", "environment")]
        rows = []
        for run, prov in runs.items():
            env = prov.get("environment") or {}
            drift = "; ".join(describe(n, d) for n, d in (env.get("drift") or {}).items())
            rows.append({"run": run, "table": tables[run], **{c: prov.get(c) for c in flat},
                         "lock_digest": env.get("lock_digest"), "environment_drift": drift,
                         "hparams": json.dumps(prov.get("hparams"), sort_keys=True, default=str)})
        columns = ["run", "table", *flat, "lock_digest", "environment_drift", "hparams"]
        with atomic_write(out_csv, newline="", encoding="utf-8") as fh:
            pd.DataFrame(rows, columns=columns).to_csv(fh, index=False, na_rep="")
    if out_note is not None:
        write_note_html(merged["environment"], out_note)
    return merged
