"""HTML building blocks of the report: escaping, number formatting, tables, figures, pages.

Plain string formatting, no template engine: every page is a handful of sections. Pages
are self-contained (inline CSS, an inline vanilla-JS table sorter) and link only to
relative paths, so the report opens from disk in any browser, without a server or network.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Cell", "column_toggle", "data_value", "esc", "figure", "fmt_number", "link", "note",
           "page", "rel", "table", "verdict"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em 2em;color:#222;
max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}
th{background:#f0f0f0}th.sortable{cursor:pointer}th.sortable:after{content:" \\2195";color:#999}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.failed td{background:#fde8e8}tr.calibration td{color:#666}tr.pending td{background:#fff8e0}
.pass{color:#1a7f1a;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.note{background:#f6f6f6;border-left:4px solid #999;padding:.4em .8em;margin:.6em 0}
.warn{background:#fff4e5;border-left-color:#e69500}.error{background:#fde8e8;border-left-color:#c62828}
nav{margin:.5em 0 1em}nav a{margin-right:1.2em}
figure{margin:.8em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.85em;color:#555}
.table-wrap{overflow-x:auto;max-width:100%}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
.more-toggle:not(:checked)~.table-wrap .extra{display:none}
.with-extra th{white-space:normal;vertical-align:bottom}
.more-toggle+label{font-size:.85em;color:#333;cursor:pointer;margin-left:.2em}
td.clip{max-width:11em;overflow:hidden;text-overflow:ellipsis}
td.truth,th.truth{color:#555;font-style:italic}
"""

#: Sorts a table with class ``sortable`` on a header click, by each cell's ``data-value``
#: (numbers numerically, blanks and NaN last), toggling the direction on a second click.
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function(t){
 t.querySelectorAll("th").forEach(function(th,i){
  th.classList.add("sortable");
  th.addEventListener("click",function(){
   var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
   var dir=th.dataset.dir==="asc"?-1:1;th.dataset.dir=dir===1?"asc":"desc";
   function key(r){var c=r.cells[i],v=c.dataset.value!==undefined?c.dataset.value:c.textContent;
    var n=parseFloat(v);return isNaN(n)||v.trim()===""||!/^[-+0-9.eE]+$/.test(v.trim())
     ?{n:false,v:v}:{n:true,v:n};}
   rows.sort(function(a,b){var x=key(a),y=key(b);
    var xb=(!x.n&&(x.v===""||x.v==="nan")),yb=(!y.n&&(y.v===""||y.v==="nan"));
    if(xb!==yb)return xb?1:-1;
    if(x.n&&y.n)return dir*(x.v-y.v);
    return dir*String(x.v).localeCompare(String(y.v));});
   rows.forEach(function(r){body.appendChild(r);});
  });
 });
});
"""


def esc(text: Any) -> str:
    """HTML-escaped ``str(text)`` (quotes too, so it is safe in attributes)."""
    return escape(str(text), quote=True)


def fmt_number(value: Any, digits: int = 3) -> str:
    """A number for display: ``digits`` significant figures (all the integer digits of
    larger numbers), ``–`` when missing, masked or NaN; integers as integers."""
    if value is None or value is np.ma.masked:
        return "–"
    if isinstance(value, bool | int | np.integer):
        return str(int(value))
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "–"
    if v != 0 and (abs(v) >= 1e7 or abs(v) < 1e-3):
        return f"{v:.{digits - 1}e}"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


@dataclass(frozen=True)
class Cell:
    """One table cell."""

    text: str
    """Displayed text (escaped when rendered)."""
    value: str | None = None
    """``data-value`` attribute: the exact value, for sorting and for machine readers."""
    href: str | None = None
    """Relative link around the text."""
    numeric: bool = False
    """Right-aligned, tabular figures."""
    css: str | None = None
    """Class of the text (``pass``, ``fail``)."""
    raw_html: bool = False
    """``text`` is already HTML (trusted, built by this package)."""
    title: str | None = None
    """Tooltip (``title`` attribute): e.g. the full value of an abbreviated text."""


def data_value(value: Any) -> str:
    """Exact value of a cell for ``data-value`` (what a test or a script compares)."""
    if value is None:
        return ""
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, np.floating | float):
        return repr(float(value))
    return str(value)


def verdict(passed: bool | None) -> Cell:
    """A verification verdict: ``pass``, ``FAIL`` or ``not verified`` (None)."""
    if passed is None:
        return Cell("not verified")
    return Cell("pass" if passed else "FAIL", css="pass" if passed else "fail")


def rel(target: Path, start: Path) -> str:
    """Relative link from a page in ``start`` to ``target`` (POSIX separators)."""
    return Path(os.path.relpath(target, start)).as_posix()


def link(href: str, text: str) -> str:
    """An ``<a>`` element (both escaped)."""
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def _cell(cell: Cell | str, column_class: str | None = None) -> str:
    if not isinstance(cell, Cell):
        cell = Cell(str(cell))
    body = cell.text if cell.raw_html else esc(cell.text)
    if cell.css:
        body = f'<span class="{esc(cell.css)}">{body}</span>'
    if cell.href:
        body = f'<a href="{esc(cell.href)}">{body}</a>'
    classes = " ".join(c for c in ("num" if cell.numeric else None, column_class) if c)
    attrs = f' class="{esc(classes)}"' if classes else ""
    if cell.value is not None:
        attrs += f' data-value="{esc(cell.value)}"'
    if cell.title:
        attrs += f' title="{esc(cell.title)}"'
    return f"<td{attrs}>{body}</td>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Cell | str]], *,
          table_id: str | None = None, columns: Sequence[str] | None = None,
          row_classes: Sequence[str] | None = None, sortable: bool = False,
          column_classes: Sequence[str | None] | None = None) -> str:
    """An HTML table.

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : iterable of sequence of Cell or str
        Cells, one sequence per row.
    table_id : str, optional
        ``id`` of the table.
    columns : sequence of str, optional
        Machine names of the columns, as ``data-column`` of the headers.
    row_classes : sequence of str, optional
        Class of each row (e.g. its status).
    sortable : bool
        Click a header to sort (inline script of `page`).
    column_classes : sequence of str or None, optional
        Class of each column's header and cells (e.g. ``extra``: hidden until the reader
        asks for every column, `column_toggle`).
    """
    attrs = (f' id="{esc(table_id)}"' if table_id else "") + (' class="sortable"' if sortable
                                                              else "")
    col_cls = list(column_classes) if column_classes else [None] * len(headers)

    def th(i: int, h: str) -> str:
        a = f' data-column="{esc(columns[i])}"' if columns else ""
        a += f' class="{esc(col_cls[i])}"' if col_cls[i] else ""
        return f"<th{a}>{esc(h)}</th>"

    head = "".join(th(i, h) for i, h in enumerate(headers))
    lines = []
    for i, row in enumerate(rows):
        cls = f' class="{esc(row_classes[i])}"' if row_classes else ""
        lines.append(f"<tr{cls}>" + "".join(_cell(c, col_cls[j]) for j, c in enumerate(row))
                     + "</tr>")
    # Wide tables scroll sideways inside the page instead of widening it.
    return (f'<div class="table-wrap"><table{attrs}>\n<thead><tr>{head}</tr></thead>\n'
            "<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table></div>")


def column_toggle(toggle_id: str, label: str, table_html: str) -> str:
    """A table whose ``extra`` columns show only when a checkbox above it is ticked.

    Pure CSS (``:checked`` and the sibling combinator, rule in the page's style sheet): no
    script, no server, works from disk; the hidden cells are still in the page, with their
    ``data-value``, for a script or a test to read."""
    return (f'<div class="with-extra"><input type="checkbox" id="{esc(toggle_id)}" '
            f'class="more-toggle"><label for="{esc(toggle_id)}">{esc(label)}</label>\n'
            f"{table_html}</div>")


def figure(src: str, caption: str, *, href: str | None = None, alt: str | None = None) -> str:
    """An image with its caption, linked to ``href`` (default: the image itself)."""
    return (f'<figure><a href="{esc(href or src)}"><img src="{esc(src)}" '
            f'alt="{esc(alt or caption)}" loading="lazy"></a>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def note(text: str, kind: str = "") -> str:
    """A boxed sentence (``kind``: ``warn`` or ``error`` for colour)."""
    return f'<p class="note {esc(kind)}">{esc(text)}</p>'


def page(title: str, body: str, *, nav: str = "", sortable: bool = False, head: str = "",
         script: str = "") -> str:
    """A complete HTML document (inline CSS; the table sorter when ``sortable``; ``head``
    added to the head, ``script`` an inline script at the end of the body)."""
    scripts = "".join(f"<script>{js}</script>" for js in (_SORT_JS if sortable else "", script)
                      if js)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n{head}</head>\n<body>\n"
            f"{nav}\n<h1>{esc(title)}</h1>\n{body}\n{nav}\n{scripts}\n</body>\n</html>\n")
