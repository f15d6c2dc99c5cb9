"""Open the Snakemake report in headless Chromium, walk its menu like a reader, and screenshot each page.

    python scripts/screenshot_report.py results/report.html --outdir results/report_screenshots

Drives Debian's `chromium` over the DevTools protocol (package `websocket-client`): the landing page (with the
run's headline answer), then Tables -> <task> -> the task's table for every task, Plots -> <task> -> the
ablation plot, the summary and pre-training tables, the ablation-effects table and its forest plot. Each page
is saved as a PNG, and the rendered text of each table page must hold its expected words; a page that does not
render, or a task without a table or plot, exits 1 naming what is missing. Prints one JSON line per page.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# click the first visible link or button whose text is exactly `text` (the report is a single-page app)
CLICK = """(() => {{
  const hits = [...document.querySelectorAll('a, button, label, td, span, div')]
    .filter(e => e.textContent.trim() === {text} && e.offsetParent !== null);
  const el = hits[hits.length - 1];  // the innermost match
  if (!el) return false;
  (el.closest('a, button, tr') || el).click();
  return true;
}})()"""


# open the entry of the current list whose cells include `kind` (its "view" icon: the row's first link)
OPEN_ROW = """(() => {{
  const row = [...document.querySelectorAll('tr')]
    .find(r => [...r.querySelectorAll('td')].some(td => td.textContent.trim() === {kind}));
  if (!row) return false;
  const link = row.querySelector('a, button, svg');
  (link ? (link.closest('a, button') || link) : row).dispatchEvent(new MouseEvent('click', {{bubbles: true}}));
  return true;
}})()"""


PAGE_TEXT = """(async () => {
  const framed = await Promise.all([...document.querySelectorAll('iframe')]
    .filter(f => f.src.startsWith('data:')).map(f => fetch(f.src).then(r => r.text()).catch(() => '')));
  const doc = new DOMParser();
  return [document.body.innerText, ...framed.map(h => doc.parseFromString(h, 'text/html').body.innerText)].join('\\n');
})()"""


def chromium() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise SystemExit("error: no Chromium found (Debian: apt-get install chromium)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """A headless Chromium page driven over the DevTools protocol."""

    def __init__(self, width: int, height: int):
        import websocket

        self.profile = tempfile.mkdtemp(prefix="plus-report-")
        port = free_port()
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             # no background connections (the machine may have no network), no first-run work
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json") as r:
                    pages = [p for p in json.load(r) if p["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise SystemExit("error: Chromium did not start its DevTools endpoint within 60 s")
            time.sleep(0.2)
        # no Origin header: Chromium >= 111 refuses DevTools websockets from origins it was not told to allow
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str, settle: float = 3.0) -> None:
        self.call("Page.navigate", url=url)
        time.sleep(settle)

    def click(self, text: str, settle: float = 1.5) -> bool:
        ok = bool(self.evaluate(CLICK.format(text=json.dumps(text))))
        time.sleep(settle)
        return ok

    def open_row(self, kind: str, settle: float = 2.0) -> bool:
        ok = bool(self.evaluate(OPEN_ROW.format(kind=json.dumps(kind))))
        time.sleep(settle)
        return ok

    def text(self) -> str:
        """The page's text, with the text of embedded data: documents (the report shows HTML tables in iframes)."""
        result = self.call("Runtime.evaluate", expression=PAGE_TEXT, returnByValue=True, awaitPromise=True)
        return result["result"].get("value") or ""

    def screenshot(self, path: Path) -> int:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return len(data)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)


def walk(report: Path, outdir: Path, tasks: list[str], width: int, height: int) -> list[dict]:
    outdir.mkdir(parents=True, exist_ok=True)
    browser = Browser(width, height)
    pages = []
    try:
        url = report.resolve().as_uri()

        def page(name: str, steps: list[str], row: str | None, expect: list[str], image: str = "") -> None:
            """Click through `steps` (menu entries, filters), then open the list entry with a cell `row`; the page
            must show every `expect` text and, with `image`, a picture of that file name."""
            browser.open(url)
            clicked = [s for s in steps if browser.click(s)]
            if row and browser.open_row(row):
                clicked.append(row)
            steps = steps + ([row] if row else [])
            text = browser.text()
            png = outdir / f"{name}.png"
            size = browser.screenshot(png)
            missing = [s for s in steps if s not in clicked] + [w for w in expect if w not in text]
            shown = "[...document.images].some(i => i.complete && i.naturalWidth > 0 && i.src.includes(%s))"
            if image and not browser.evaluate(shown % json.dumps(f"filename={image}")):
                missing.append(image)
            pages.append({"page": name, "png": str(png), "bytes": size, "text_chars": len(text),
                          "missing": missing})

        # the landing page answers the paper's question (the headline written by `plus effects-table`)
        page("landing", [], None, ["PLUS reproduction", "What this run found", "headline metric"])
        for task in tasks:
            page(f"table_{task}", ["Tables", task], "table", ["Model", "Ablation", "trivial"])
            page(f"plot_{task}", ["Plots", task, "ablation"], task, [], image=f"{task}_ablation.png")
        page("table_summary", ["Tables", "summary"], "summary", ["Model", "Seeds", *tasks])
        page("table_pretraining", ["Tables", "pre-training"], "table", ["Model", "chance / unigram frequency"])
        page("table_ablation_effects", ["Tables", "ablation effects"], "effects",
             ["Contrast (A − B)", "Δ [95 % CI]", "Verdict", "paired percentile bootstrap"])
        page("plot_ablation_effects", ["Plots", "ablation effects"], "effects", [], image="ablation_effects.png")
    finally:
        browser.close()
    return pages


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path)
    p.add_argument("--outdir", type=Path, required=True, help="one PNG per visited page")
    p.add_argument("--tasks", nargs="*", default=None, help="task pages to visit (default: every paper task)")
    p.add_argument("--size", default="1600,1000", help="window WIDTH,HEIGHT")
    a = p.parse_args(argv)
    if not a.report.is_file():
        raise SystemExit(f"error: {a.report}: no such report")
    width, height = (int(v) for v in a.size.split(","))
    if a.tasks is None:
        from plus.tasks.registry import TASKS

        a.tasks = list(TASKS)
    pages = walk(a.report, a.outdir, a.tasks, width, height)
    for row in pages:
        print(json.dumps(row))
    bad = [row["page"] for row in pages if row["missing"] or not row["bytes"]]
    if bad:
        print(f"error: pages not rendered as expected: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
