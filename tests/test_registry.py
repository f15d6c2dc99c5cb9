"""The task registry is the one per-task table: nothing outside plus.tasks and the converters names a task."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from plus.data.converters import DATA
from plus.tasks.registry import TASKS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "plus"
# where a task's name may appear: its registry entry and its converters (with their data declaration)
ALLOWED = [PACKAGE / "tasks", PACKAGE / "data" / "converters"]


def _is_name(node, names) -> bool:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_name(e, names) for e in node.elts)
    return False


def python_name_uses(source: str, names: set[str]) -> list[int]:
    """Lines where a task's name is compared against, used as a table key, or looked up by a literal."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_is_name(x, names) for x in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and _is_name(k, names) for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _is_name(node.slice, names):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and any(_is_name(a, names) for a in node.args):
            lines.append(node.lineno)  # get_task("homology"), t.get("secstr"), ...
    return sorted(set(lines))


def rule_name_uses(source: str, names: set[str]) -> list[int]:
    """Lines of a Snakemake file with a task's name in a string: quoted alone, or as a path segment."""
    pattern = re.compile(rf"""(["'/])({"|".join(map(re.escape, sorted(names)))})(["'/]|_test\.)""")
    hits = []
    for i, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        if pattern.search(code):
            hits.append(i)
    return hits


def test_every_paper_task_has_its_data_declared_and_one_entry():
    assert list(TASKS) == list(DATA)
    for task in TASKS.values():
        assert task.kind in ("pair", "protein", "residue")
        assert task.headline_metric in task.reported and set(task.plot_metrics) <= set(task.table_metrics)
        assert set(task.effects) <= set(task.reported)
        assert task.pelmo_encoder_task is None or task.pelmo_encoder_task in TASKS


def may_name_tasks(path: Path) -> bool:
    return any(path == a or a in path.parents for a in ALLOWED)


def test_the_allow_list_covers_the_converters_only():
    assert all(a.exists() for a in ALLOWED), "the allow-list names a module that is gone"
    assert may_name_tasks(PACKAGE / "data" / "converters" / "tape.py")
    assert may_name_tasks(PACKAGE / "tasks" / "registry.py")
    for scanned in ("convert.py", "leakage.py", "tasks.py"):  # the dispatcher and readers are checked
        assert not may_name_tasks(PACKAGE / "data" / scanned)


def test_no_module_outside_the_registry_and_converters_names_a_task():
    names = set(TASKS)
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if may_name_tasks(path):
            continue
        hits = python_name_uses(path.read_text(), names)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    for path in sorted([*(ROOT / "rules").glob("*.smk"), ROOT / "Snakefile"]):
        hits = rule_name_uses(path.read_text(), names)
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    assert not found, f"task names outside plus.tasks and the converters (file: lines): {found}"


@pytest.mark.parametrize("snippet", [
    'if task.name == "secstr":\n    pass',
    'shuffle = task.name not in ("secstr", "x")',
    'METRICS = {"homology": ["acc"]}',
    'n = TABLE["transmembrane"]',
    'task = get_task("fluorescence")',
])
def test_the_scan_catches_a_planted_name_branch(snippet):
    assert python_name_uses(snippet, set(TASKS)) == [1]


@pytest.mark.parametrize("snippet", [
    '    if wildcards.task != "homology":',
    '        data="results/data/homology/manifest.json",',
    '        npz="results/embeddings/{model}/seed{seed}/homology_test.npz",',
])
def test_the_rule_scan_catches_a_planted_name(snippet):
    assert rule_name_uses(snippet, set(TASKS)) == [1]


def test_the_scans_leave_prose_and_other_strings_alone():
    prose = '"""homology pairs"""\nx = "homology pairs"\nif kind == "pair": pass'
    assert python_name_uses(prose, set(TASKS)) == []
    rules = '# homology\n    """Every homology pair"""\n    "b4_broken_homology_sampler"'
    assert rule_name_uses(rules, set(TASKS)) == []
