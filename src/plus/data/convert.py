"""`plus data convert`: run a task's converter (:mod:`plus.data.converters`) on its raw files.

CLI: ``plus data convert --task T --source embedded|canonical --raw KEY=PATH ... --outdir DIR --seed N
[--fidelity JSON]``.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from plus.arguments import json_object
from plus.data.converters import DATA
from plus.data.converters.homology import HOMOLOGY_2_07
from plus.io import InputError


def embedded_raw(task: str, root: str | os.PathLike = "data/embedded") -> dict[str, Path]:
    """The --raw KEY -> path mapping of a task's embedded files under `root`."""
    return {key: Path(root) / task / name for key, name in DATA[task].embedded_files.items()}


def convert_task(
    task: str,
    source: str,
    raw: dict[str, Path],
    outdir: str | os.PathLike,
    seed: int,
    max_train: int | None = None,
    fidelity: dict | None = None,
    **opts,
) -> dict:
    """Run the converter of (`task`, `source`), source "embedded" or "canonical"; returns the manifest.

    `fidelity`: reference-fidelity switches of the task's data, named ``data_<task>_<option>`` (config
    reference_fidelity); each sets the converter's keyword <option>.
    """
    if task not in DATA or source not in ("embedded", "canonical"):
        raise InputError(
            f"unknown task/source {task!r}/{source!r}; tasks: {', '.join(DATA)}; "
            "sources: embedded, canonical"
        )
    converter = getattr(DATA[task], source)
    opts = {**opts, **data_switch_options(task, converter, fidelity or {})}
    raw = {k: Path(v) for k, v in raw.items()}
    return converter(raw, Path(outdir), seed, max_train, **opts)


def data_switch_options(task: str, converter, switches: dict) -> dict:
    """Converter keyword arguments from ``data_<task>_<option>`` switches; unknown ones raise InputError."""
    prefix, params = f"data_{task}_", inspect.signature(converter).parameters
    opts = {}
    for key, value in switches.items():
        option = key.removeprefix(prefix)
        if not key.startswith(prefix) or option not in params or not isinstance(value, bool):
            raise InputError(f"{task}: {key}={value!r} is not a boolean data switch of this task's converter")
        opts[option] = value
    return opts


def _parse_raw(items: list[str]) -> dict[str, Path]:
    raw = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise InputError(f"--raw {item!r}: expected KEY=PATH")
        raw[key] = Path(value)
    return raw


def add_parser(subparsers) -> None:
    """Register ``data convert`` (call with the subparsers of the ``plus data`` command)."""
    p = subparsers.add_parser("convert", help="convert a downstream task's raw release into a task directory")
    p.add_argument("--task", required=True, choices=tuple(DATA))
    p.add_argument("--source", required=True, choices=("embedded", "canonical"))
    p.add_argument(
        "--raw",
        nargs="+",
        required=True,
        metavar="KEY=PATH",
        help="input files by key (see DATA.md; e.g. val_src=..., archive=...)",
    )
    p.add_argument("--outdir", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None, help="seeded subsample of the training split")
    p.add_argument("--n-pairs-dev", type=int, default=None, help="homology (embedded): dev pairs to sample")
    p.add_argument("--n-pairs-test", type=int, default=None, help="homology (embedded): pairs per test set")
    p.add_argument("--no-contact-maps", action="store_true", help="homology (canonical): skip the PNGs")
    p.add_argument("--homology-2-07", choices=HOMOLOGY_2_07, default=None,
                   help="homology (canonical): test 2.07 = a sample of --n-pairs-test pairs, or all pairs")
    p.add_argument("--fidelity", type=json_object, default={},
                   help="JSON: the task's data_<task>_* reference-fidelity switches")
    p.set_defaults(func=run)


def run(args) -> int:
    # the converter's own keyword options among the CLI's (homology's pair counts, contact maps, 2.07 choice)
    accepted = inspect.signature(getattr(DATA[args.task], args.source)).parameters
    given = {"n_pairs_dev": args.n_pairs_dev, "n_pairs_test": args.n_pairs_test, "test_2_07": args.homology_2_07,
             "contact_maps": False if args.no_contact_maps else None}
    opts = {k: v for k, v in given.items() if v is not None and k in accepted}
    manifest = convert_task(
        args.task, args.source, _parse_raw(args.raw), args.outdir, args.seed, args.max_train, args.fidelity,
        **opts,
    )
    summary = {k: manifest[k] for k in ("task", "counts", "dropped", "relabelled", "fidelity")}
    print(json.dumps(summary))
    return 0
