"""The tested environment: the lock of exact package versions and the check that a job runs under it.

The lock (``lock.txt`` next to this file) lists every package `make install` pulls in at the version `make test`
passed with; the Makefile hands it to pip as a constraints file. It ships inside the package, so an installed
copy (a wheel on a cluster, a conda environment with ``pip install --no-deps -e .``) finds the lock it was
released with. Every `plus` job compares the installed versions of ``CHECKED`` with it: a difference is one
warning line in the job log and is recorded in the run's provenance (`environment_record`).

Standard library only: the Makefile runs this module before anything is installed
(``PYTHONPATH=src python -m plus.environment check|pip-install|verify|write-lock``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from plus import __version__
from plus.io import atomic_write

LOCK = Path(__file__).with_name("lock.txt")
PROJECT = "plus-workflow"  # installed editable from the checkout: never pinned, its version is the lock's header
CHECKED = ("torch", "numpy", "pandas", "snakemake", "pyhmmer", PROJECT)
# conda-forge names of locked PyPI packages where they differ (envs/plus.yaml)
CONDA_NAMES = {"pytorch": "torch", "pytorch-gpu": "torch", "pytorch-cpu": "torch", "python-isal": "isal"}

_PIN = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>\S+)")
_VERSION = re.compile(r"(?:\d+!)?\d+(?:\.\d+)*(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?")
_LOCKED_FOR = re.compile(rf"#\s*locked for:\s*{PROJECT}==(?P<version>\S+)\s*")
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"


class LockError(ValueError):
    """A lock file that is missing, malformed or does not describe this install; the message names the line."""


def normalize(name: str) -> str:
    """PEP 503 name: `PyYAML`, `pyyaml` and `py_yaml` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """The release without its local label: torch `2.13.0+cpu` and `2.13.0+cu126` are both release 2.13.0."""
    return version.split("+", 1)[0]


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    line: int


@dataclass(frozen=True)
class Lock:
    path: Path
    digest: str  # sha256 of the file's bytes (`sha256sum src/plus/lock.txt`)
    pins: dict[str, Pin]  # by normalized name
    project_version: str  # the version of this package the lock was made for

    def where(self, pin: Pin) -> str:
        return f"{self.path} line {pin.line}: {pin.name}=={pin.version}"

    def version_of(self, name: str) -> str | None:
        if normalize(name) == PROJECT:
            return self.project_version
        pin = self.pins.get(normalize(name))
        return pin.version if pin else None


def read_lock(path: str | os.PathLike = LOCK) -> Lock:
    """Parse a lock: comments, blank lines and `NAME==VERSION` lines only (no options, URLs, ranges, markers or
    local labels, so pip cannot read more into it than the versions). Raises LockError naming every bad line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LockError(f"{path}: cannot read the lock ({exc.strerror})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LockError(f"{path}: not UTF-8 text") from exc
    pins: dict[str, Pin] = {}
    errors, project_version = [], None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            if m := _LOCKED_FOR.fullmatch(line):
                project_version = m["version"]
            continue
        m = _PIN.fullmatch(line)
        if not m:
            errors.append(f"{path} line {n}: {raw!r} is not NAME==VERSION")
        elif "+" in m["version"]:
            errors.append(f"{path} line {n}: {line}: a local version label is not pinned (`make lock` drops it: "
                          "any build of the release satisfies the pin)")
        elif not _VERSION.fullmatch(m["version"]):
            errors.append(f"{path} line {n}: {line}: {m['version']!r} is not a PEP 440 release version")
        elif normalize(m["name"]) == PROJECT:
            errors.append(f"{path} line {n}: {line}: this package is installed from the checkout, never pinned")
        elif (key := normalize(m["name"])) in pins:
            errors.append(f"{path} line {n}: {line}: {m['name']} is already pinned on line {pins[key].line}")
        else:
            pins[key] = Pin(m["name"], m["version"], n)
    if not errors and not pins:
        errors.append(f"{path}: no NAME==VERSION lines (write the lock with `make lock`)")
    if not errors and project_version is None:
        errors.append(f"{path}: no '# locked for: {PROJECT}==VERSION' line (write the lock with `make lock`)")
    if errors:
        raise LockError("\n".join(errors))
    return Lock(path, hashlib.sha256(data).hexdigest(), pins, project_version)


# ------------------------------------------------------------------ run time: the drift check of every job
def installed_version(name: str) -> str | None:
    """Installed version of a distribution (None: not installed); for this package, the code that runs."""
    if normalize(name) == PROJECT:
        return __version__
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe(name: str, drift: dict) -> str:
    """`numpy 2.4.5 (locked 2.4.6)`: one package's difference from the lock."""
    installed = drift["installed"] or "not installed"
    return f"{name} {installed} (locked {drift['locked'] or 'nothing'})"


def environment_record(lock_path: str | os.PathLike = LOCK) -> dict:
    """What a run's provenance records: the lock's digest, the installed versions of CHECKED and how they
    differ from the lock (`drift`; empty when they match). A lock that cannot be read is recorded, not fatal."""
    versions = {name: installed_version(name) for name in CHECKED}
    try:
        lock = read_lock(lock_path)
    except LockError as exc:
        return {"lock_digest": None, "lock_error": str(exc).splitlines()[0], "versions": versions, "drift": {}}
    drift = {}
    for name, version in versions.items():
        locked = lock.version_of(name)
        if version is None or locked is None or public(version) != locked:
            drift[name] = {"installed": version, "locked": locked}
    return {"lock_digest": lock.digest, "versions": versions, "drift": drift}


def warning_line(record: dict) -> str | None:
    """The one log line of an environment that differs from its lock (None when it matches)."""
    if record.get("lock_error"):
        return f"warning: environment not checked: {record['lock_error']}"
    if record["drift"]:
        diffs = ", ".join(describe(n, d) for n, d in record["drift"].items())
        return (f"warning: environment differs from the lock (sha256 {record['lock_digest'][:12]}): {diffs}; "
                "the run's provenance records it")
    return None


def warn_drift() -> dict:
    """Check this process's environment against the lock; print the warning line, if any, to stderr."""
    record = environment_record()
    if line := warning_line(record):
        print(line, file=sys.stderr, flush=True)
    return record


def add_parser(subparsers) -> None:
    """`plus environment`: this installation against its lock (exit 1 when a package every job checks differs)."""
    p = subparsers.add_parser("environment", help="installed versions against the lock (what every job checks)")
    p.set_defaults(func=run)


def run(args) -> None:
    record = environment_record()
    if record.get("lock_error"):
        raise SystemExit(f"error: {record['lock_error']}")
    lock = read_lock()
    print(f"lock: {lock.path} (sha256 {lock.digest}, {len(lock.pins)} pins)")
    for name, version in record["versions"].items():
        state = f"DIFFERS: locked {lock.version_of(name)}" if name in record["drift"] else "as locked"
        print(f"{name}: {version or 'not installed'} ({state})")
    problems, notes = verify(lock)
    print(f"every locked package: {len(problems)} differences" + (":" if problems else ""))
    for line in [*notes, *problems]:
        print(f"  {line}")
    if record["drift"]:
        raise SystemExit(1)


# ------------------------------------------------------------------ install time: the Makefile's steps
def _installed() -> dict[str, metadata.Distribution]:
    """Distributions of this interpreter by normalized name (the first on sys.path wins, as for imports)."""
    out: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            out.setdefault(normalize(name), dist)
    return out


def _requirements(dist: metadata.Distribution) -> list[str]:
    """Normalized names `dist` requires, leaving out those of its extras."""
    names = []
    for req in dist.requires or ():
        marker = req.partition(";")[2]
        if "extra" not in marker and (m := re.match(_NAME, req.strip())):
            names.append(normalize(m[0]))
    return names


def pulled_in_by(root: str, installed: dict[str, metadata.Distribution]) -> set[str]:
    """Normalized names of the installed distributions `root` requires, directly or not."""
    found, todo = set(), [normalize(root)]
    while todo:
        dist = installed.get(todo.pop())
        for name in _requirements(dist) if dist else ():
            if name not in found:
                found.add(name)
                todo.append(name)
    return found


def verify(lock: Lock) -> tuple[list[str], list[str]]:
    """Compare this interpreter's installed distributions with the lock. Returns (problems, notes): a locked
    package missing or at another version, or a package installed without a pin, is a problem; the packages
    only a torch build of another kind pulls in (CUDA wheels: nvidia-*, triton) are notes."""
    installed = _installed()
    problems = []
    for key, pin in lock.pins.items():
        dist = installed.get(key)
        if dist is None:
            problems.append(f"{lock.where(pin)} is locked but not installed")
        elif public(dist.version) != pin.version:
            problems.append(f"{lock.where(pin)} is locked but {dist.version} is installed")
    torch_own = pulled_in_by("torch", installed)
    notes = []
    for key, dist in sorted(installed.items()):
        if key in lock.pins or key == PROJECT:
            continue
        pinned = f"{dist.metadata['Name']}=={dist.version}"
        if key in torch_own:
            notes.append(f"{pinned}: not in {lock.path}, pulled in by this torch build ({installed['torch'].version})")
        else:
            problems.append(f"{pinned} is installed but not in {lock.path} (an unpinned install: regenerate the "
                            "lock with `make lock`, or remove the virtual environment and reinstall)")
    return problems, notes


def _named_pins(lock: Lock, output: str) -> list[Pin]:
    """The lock's pins that pip's failure output names: those its conflict report names as constraints, else any
    it names as NAME==VERSION or as a requirement it could not find."""
    hits = {}
    for m in re.finditer(rf"\(constraint\) ({_NAME})==([^\s,;)'\"]+)", output):
        pin = lock.pins.get(normalize(m[1]))
        if pin and pin.version == m[2]:
            hits[pin.line] = pin
    if hits:
        return [hits[k] for k in sorted(hits)]
    for m in re.finditer(rf"({_NAME})==([^\s,;)'\"]+)", output):
        pin = lock.pins.get(normalize(m[1]))
        if pin and pin.version == m[2]:
            hits[pin.line] = pin
    for m in re.finditer(rf"(?:satisfies the requirement|matching distribution found for)\s+({_NAME})", output):
        if pin := lock.pins.get(normalize(m[1])):
            hits[pin.line] = pin
    return [hits[k] for k in sorted(hits)]


def _pip(args: list[str], echo: bool) -> tuple[int, str]:
    """Run `python -m pip ARGS` by this interpreter (without PYTHONPATH); returns (exit status, output)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.Popen([sys.executable, "-m", "pip", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    output = []
    for line in proc.stdout:
        if echo:
            sys.stdout.write(line)
        output.append(line)
    return proc.wait(), "".join(output)


def pip_install(lock_path: str | os.PathLike, pip_args: list[str]) -> int:
    """`pip install -c LOCK PIP_ARGS` by this interpreter, after checking the lock and that every package named
    in PIP_ARGS is pinned there (so none is installed unpinned). A failure names the lock lines pip names (a quiet
    pip leaves out its conflict report: a failed resolution is then repeated, verbose and as a dry run)."""
    lock = read_lock(lock_path)
    unpinned = [a for a in pip_args if re.fullmatch(_NAME, a) and normalize(a) not in lock.pins]
    if unpinned:
        raise LockError(f"{lock.path}: {', '.join(unpinned)} not pinned (an install would take any version)")
    args = ["install", "-c", str(lock.path), *pip_args]
    status, output = _pip(args, echo=True)
    if status == 0:
        return 0
    if "-q" in pip_args or "--quiet" in pip_args:
        _, verbose = _pip([a for a in args if a not in ("-q", "--quiet")] + ["--dry-run"], echo=False)
        sys.stdout.write(verbose[verbose.find("ERROR"):] if "ERROR" in verbose else "")
        output += verbose
    pins = _named_pins(lock, output)
    for pin in pins:
        print(f"error: {lock.where(pin)}: pip cannot install this pin (not on the package index, or in conflict; "
              "pip's message is above)", file=sys.stderr)
    if not pins:
        print(f"error: pip failed installing with the lock {lock.path}; its output (above) names no lock line",
              file=sys.stderr)
    return status


# ------------------------------------------------------------------ `make lock`
def lock_text(installed: dict[str, metadata.Distribution] | None = None) -> str:
    """The lock of this interpreter's environment (a clean one made by `make lock`): every distribution but this
    package, local version labels dropped."""
    installed = _installed() if installed is None else installed
    dists = [d for k, d in sorted(installed.items()) if k != PROJECT]
    local = [f"{d.metadata['Name']} {d.version}" for d in dists if "+" in d.version]
    head = [
        "# Exact versions of every package `make install` pulls in, as tested by `make test`: the Makefile's pip",
        "# constraints. Regenerate with `make lock` (README: \"Exact installs\"), never by hand.",
        f"# locked for: {PROJECT}=={__version__}",
        f"# made with: Python {platform.python_version()}, {platform.system()} {platform.machine()}",
    ]
    if local:
        head.append(f"# builds here: {', '.join(local)} (local labels are not pinned: any build of the release "
                    "satisfies its pin)")
    return "\n".join([*head, *(f"{d.metadata['Name']}=={public(d.version)}" for d in dists)]) + "\n"


def sync_conda(text: str, lock: Lock) -> str:
    """envs/plus.yaml with every dependency that is in the lock pinned to the lock's version (conda-forge names
    mapped by CONDA_NAMES); other lines unchanged."""
    out = []
    for line in text.splitlines(keepends=True):
        m = re.match(rf"(\s*-\s*)({_NAME})(\s*(?:==|=|>=)\s*[^\s#]+)?(.*)$", line, re.DOTALL)
        locked = m and lock.version_of(CONDA_NAMES.get(m[2], m[2]))
        if locked and m[3] is not None:
            line = f"{m[1]}{m[2]}=={locked}{m[4]}"
        out.append(line)
    return "".join(out)


def _write_atomic(path: Path, text: str) -> None:
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plus.environment", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="parse the lock; a bad line fails naming it").add_argument("lock", type=Path)
    p = sub.add_parser("pip-install", help="pip install -c LOCK PIP_ARGS (names the lock lines pip fails on)")
    p.add_argument("lock", type=Path)
    p.add_argument("pip_args", nargs=argparse.REMAINDER)
    sub.add_parser("verify", help="installed distributions = the lock, both ways").add_argument("lock", type=Path)
    p = sub.add_parser("write-lock", help="write the lock of this (clean) environment")
    p.add_argument("lock", type=Path)
    p.add_argument("--conda", type=Path, help="also pin the lock's versions in this conda environment file")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            lock = read_lock(args.lock)
            print(f"{lock.path}: {len(lock.pins)} pins, sha256 {lock.digest}")
        elif args.command == "pip-install":
            return pip_install(args.lock, args.pip_args)
        elif args.command == "verify":
            lock = read_lock(args.lock)
            problems, notes = verify(lock)
            for line in notes:
                print(f"note: {line}")
            for line in problems:
                print(f"error: {line}", file=sys.stderr)
            if problems:
                return 1
            print(f"{lock.path}: the {len(lock.pins)} locked versions are installed (sha256 {lock.digest[:12]})")
        else:
            _write_atomic(args.lock, lock_text())
            lock = read_lock(args.lock)
            if args.conda:
                _write_atomic(args.conda, sync_conda(args.conda.read_text(encoding="utf-8"), lock))
            print(f"{lock.path}: {len(lock.pins)} pins, sha256 {lock.digest}")
    except LockError as exc:
        print(f"error: {exc}".replace("\n", "\nerror: "), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
