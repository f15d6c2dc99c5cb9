"""Open the Snakemake report in headless Chromium: save a screenshot and check what it renders.

    python scripts/screenshot_report.py results/report.html --out results/report.png [--expect WORD ...]

Chromium (Debian package `chromium`) runs the report's JavaScript; the rendered DOM is checked for each
expected word (default: the seven task names and "ablation"), so a report that fails to render, or lacks a
task, exits 1 naming what is missing. Prints one JSON line: screenshot path and size, found/missing words.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TASKS = ["homology", "solubility", "localization", "stability", "fluorescence", "secstr", "transmembrane"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise SystemExit("error: no Chromium found (Debian: apt-get install chromium)")


def run_browser(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, required=True, help="screenshot PNG")
    p.add_argument("--size", default="1600,1200", help="window WIDTH,HEIGHT")
    p.add_argument("--expect", nargs="*", default=[*TASKS, "ablation"])
    a = p.parse_args(argv)
    if not a.report.is_file():
        raise SystemExit(f"error: {a.report}: no such report")
    url = a.report.resolve().as_uri()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    run_browser([f"--screenshot={a.out.resolve()}", f"--window-size={a.size}", url])
    dom = run_browser(["--dump-dom", url]).stdout
    dom = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", dom).lower()  # what is rendered, not the data
    found = [w for w in a.expect if w.lower() in dom]
    missing = [w for w in a.expect if w.lower() not in dom]
    size = a.out.stat().st_size if a.out.exists() else 0
    print(json.dumps({"screenshot": str(a.out), "bytes": size, "dom_chars": len(dom), "found": found,
                      "missing": missing}))
    return 0 if size and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
