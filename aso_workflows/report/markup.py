"""HTML pieces the report and the web GUI's campaign page share: the style sheet, numbers, tables, images."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

__all__ = ["CSS", "fmt", "img", "table"]

CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 9px;text-align:right}th{background:#f3f3f3}"
    "td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:0.3em 0}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}"
    ".muted{color:#777;font-size:90%}"
)
"""The style sheet of the report and the campaign page."""


def fmt(v: object, spec: str = ".4g") -> str:
    """A number as the tables show it (``–`` for none or not finite); text escaped."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(v)
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return html.escape(str(v))


def img(path: Path, alt: str) -> str:
    """A PNG embedded as an ``<img>`` (the page needs no other file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def table(
    headers: list[str], rows: list[list], left: frozenset[int] | set[int] = frozenset(), css_id: str = ""
) -> str:
    """An HTML table; columns in ``left`` aligned left (text), the others right (numbers)."""
    ident = f" id='{css_id}'" if css_id else ""
    head = "".join(f"<th class='l'>{h}</th>" if i in left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = []
    for r in rows:
        cells = "".join(f"<td class='l'>{c}</td>" if i in left else f"<td>{c}</td>" for i, c in enumerate(r))
        body.append(f"<tr>{cells}</tr>")
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
