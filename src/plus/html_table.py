"""One HTML page holding one table: the form in which the Snakemake report shows tables inline (the report's
tables, the ablation effects and the leakage audit)."""

from __future__ import annotations

import html
from collections.abc import Sequence


def html_page(title: str | None, header: list[str], rows: list[list[str]], note: str | Sequence[str] = "",
              intro: Sequence[str | Sequence[str]] = (), text_columns: int = 2) -> str:
    """A self-contained HTML page holding one table (the Snakemake report shows HTML files inline), with
    optional blocks before it (`intro`: a string is a paragraph, a list of strings a bullet list) and note
    paragraphs after it; the first `text_columns` columns are left-aligned."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in row) + "</tr>" for row in rows)
    style = ("body{font-family:sans-serif;font-size:13px;margin:12px}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;white-space:nowrap}"
             "th{background:#f0f0f0;position:sticky;top:0}tr:nth-child(even){background:#fafafa}"
             f"td:nth-child(-n+{text_columns}),th:nth-child(-n+{text_columns}){{text-align:left}}"
             "p,ul{max-width:60em}")
    heading = f"<h2>{esc(title)}</h2>" if title else ""
    before = "".join(f"<p>{esc(b)}</p>" if isinstance(b, str)
                     else "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b) + "</ul>" for b in intro)
    notes = "".join(f"<p>{esc(p)}</p>" for p in ([note] if isinstance(note, str) else note) if p)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(title or 'table')}</title>"
            f"<style>{style}</style></head><body>{heading}{before}<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{notes}</body></html>\n")
