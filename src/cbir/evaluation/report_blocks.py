"""The report as a list of blocks (headings, text, tables, figures, example grids), rendered
once as HTML and once as Markdown from the same blocks, so the two never disagree.

Every string a block holds is plain text: the renderers escape all of it (HTML: `html.escape`
on text and attributes, URL-quoting on paths; Markdown: table pipes and HTML's <, >, &), so a
class name or a run folder named `<script>` shows as written. Paths are relative to the report
folder: the report opens from disk and can be moved as a whole.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Heading:
    level: int  # 1..3
    text: str

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.text.lower()).strip("-") or "section"


@dataclass
class Text:
    text: str
    muted: bool = False  # a note rather than a finding


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Cell:
    text: str
    strong: bool = False  # the best value of its column
    title: str = ""  # a tooltip (HTML only)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    numeric: set[int] = field(default_factory=set)  # right-aligned column positions


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


@dataclass
class Thumb:
    path: str  # relative to the report folder
    caption: str
    relevant: bool | None = None  # None for a query
    badge: str = ""  # e.g. "near-duplicate"
    pixelated: bool = False  # a tiny image shown larger: keep its pixels sharp


@dataclass
class ExampleGrid:
    rows: list[tuple[Thumb, list[Thumb]]]  # (query, its results in rank order)


Block = Heading | Text | Bullets | Table | Figure | ExampleGrid

# --- HTML --------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2329;
  margin: 0 auto; max-width: 1180px; padding: 20px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #e3e7eb; }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0; } p.muted, li { color: #4a5560; } ul { margin: 4px 0; padding-left: 22px; }
nav { background: #f4f6f8; padding: 8px 12px; border-radius: 6px; font-size: 14px; }
nav a { margin-right: 14px; color: #0b5cad; text-decoration: none; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 13.5px; }
th, td { padding: 5px 9px; border-bottom: 1px solid #e3e7eb; text-align: left;
  vertical-align: top; }
th { background: #f4f6f8; font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
figure { margin: 10px 0 16px; } figure img { max-width: 100%; border: 1px solid #e3e7eb; }
figcaption { font-size: 13px; color: #4a5560; margin-top: 4px; max-width: 760px; }
.grid { display: grid; grid-template-columns: 100px repeat(var(--k), 92px); gap: 8px 4px;
  margin: 10px 0 18px; align-items: start; }
.thumb { text-align: center; font-size: 11px; line-height: 1.2; color: #4a5560; }
.thumb img { width: 80px; height: 80px; object-fit: contain; display: block; margin: 0 auto 2px;
  border: 3px solid #c5ccd3; background: #f4f6f8; }
.thumb img.px { image-rendering: pixelated; }
.thumb.query img { border-color: #1d2329; } .thumb.query { font-weight: 600; color: #1d2329; }
.thumb.yes img { border-color: #2e7d32; } .thumb.no img { border-color: #c62828; }
.mark { font-weight: 700; } .yes .mark { color: #2e7d32; } .no .mark { color: #c62828; }
.badge { display: inline-block; background: #fff3cd; color: #6b4e00; border-radius: 3px;
  padding: 0 4px; font-weight: 400; margin-top: 2px; }
"""


def render_html(title: str, blocks: Sequence[Block]) -> str:
    anchors = _unique_anchors(blocks)
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    nav = " ".join(f'<a href="#{_attr(anchors[id(h)])}">{_esc(h.text)}</a>' for h in sections)
    body = "\n".join(_html_block(block, anchors) for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def _unique_anchors(blocks: Sequence[Block]) -> dict[int, str]:
    """Each heading's id, suffixed -2, -3.. where two headings read the same."""
    anchors: dict[int, str] = {}
    for block in blocks:
        if isinstance(block, Heading):
            anchor, n = block.anchor, 2
            while anchor in anchors.values():
                anchor, n = f"{block.anchor}-{n}", n + 1
            anchors[id(block)] = anchor
    return anchors


def _html_block(block: Block, anchors: dict[int, str]) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 2), 3)
        return f'<h{level} id="{_attr(anchors[id(block)])}">{_esc(block.text)}</h{level}>'
    if isinstance(block, Text):
        return (
            f'<p class="muted">{_esc(block.text)}</p>'
            if block.muted
            else f"<p>{_esc(block.text)}</p>"
        )
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_esc(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return (
            f'<figure><img src="{_url(block.path)}" alt="{_attr(block.caption)}">'
            f"<figcaption>{_esc(block.caption)}</figcaption></figure>"
        )
    return _html_grid(block)


def _html_table(table: Table) -> str:
    def cls(i: int) -> str:
        return ' class="num"' if i in table.numeric else ""

    head = "".join(f"<th{cls(i)}>{_esc(name)}</th>" for i, name in enumerate(table.columns))
    rows = []
    for row in table.rows:
        cells = []
        for i, cell in enumerate(row):
            text = f"<strong>{_esc(cell.text)}</strong>" if cell.strong else _esc(cell.text)
            title = f' title="{_attr(cell.title)}"' if cell.title else ""
            cells.append(f"<td{cls(i)}{title}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<div class="wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _html_grid(grid: ExampleGrid) -> str:
    k = max((len(results) for _, results in grid.rows), default=0)
    cells = []
    for query, results in grid.rows:
        cells.append(_html_thumb(query))
        cells += [_html_thumb(result) for result in results]
        cells += ["<div></div>"] * (k - len(results))
    return f'<div class="grid" style="--k: {k}">{"".join(cells)}</div>'


def _html_thumb(thumb: Thumb) -> str:
    kind = "query" if thumb.relevant is None else ("yes" if thumb.relevant else "no")
    mark = {"yes": "✓ ", "no": "✗ "}.get(kind, "")
    pixelated = ' class="px"' if thumb.pixelated else ""
    badge = f'<br><span class="badge">{_esc(thumb.badge)}</span>' if thumb.badge else ""
    return (
        f'<div class="thumb {kind}"><img{pixelated} src="{_url(thumb.path)}" '
        f'alt="{_attr(thumb.caption)}" loading="lazy"><span class="mark">{mark}</span>'
        f"{_esc(thumb.caption)}{badge}</div>"
    )


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def _attr(text: str) -> str:
    return html.escape(str(text), quote=True)


def _url(path: str) -> str:
    """A relative path as an attribute value: each segment percent-encoded, no scheme."""
    return _attr(urllib.parse.quote(path, safe="/"))


# --- Markdown ----------------------------------------------------------------------------------


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    parts = [f"# {_md(title)}"]
    parts += [_md_block(block) for block in blocks]
    return "\n\n".join(parts) + "\n"


def _md_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * min(max(block.level, 2), 3)} {_md(block.text)}"
    if isinstance(block, Text):
        return f"*{_md(block.text)}*" if block.muted else _md(block.text)
    if isinstance(block, Bullets):
        return "\n".join(f"- {_md(item)}" for item in block.items)
    if isinstance(block, Table):
        return _md_table(block.columns, [[_md_cell(c) for c in row] for row in block.rows], block)
    if isinstance(block, Figure):
        return f"![{_md(block.caption)}]({_md_url(block.path)})\n\n*{_md(block.caption)}*"
    k = max((len(results) for _, results in block.rows), default=0)
    columns = ["query", *(str(rank) for rank in range(1, k + 1))]
    rows = [[_md_thumb(query)] + [_md_thumb(r) for r in results] for query, results in block.rows]
    return _md_table(columns, rows, None)


def _md_table(columns: list[str], rows: list[list[str]], table: Table | None) -> str:
    numeric = table.numeric if table else set()
    align = ["---:" if i in numeric else "---" for i in range(len(columns))]
    lines = ["| " + " | ".join(_md(c) for c in columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row + [""] * (len(columns) - len(row))) + " |" for row in rows]
    return "\n".join(lines)


def _md_cell(cell: Cell) -> str:
    return f"**{_md(cell.text)}**" if cell.strong else _md(cell.text)


def _md_thumb(thumb: Thumb) -> str:
    mark = "" if thumb.relevant is None else ("✓ " if thumb.relevant else "✗ ")
    badge = f" ({_md(thumb.badge)})" if thumb.badge else ""
    return f"![{_md(thumb.caption)}]({_md_url(thumb.path)})<br>{mark}{_md(thumb.caption)}{badge}"


def _md(text: str) -> str:
    """Plain text in Markdown: HTML's specials as entities, pipes and newlines tamed (a table
    cell is one line), Markdown's own emphasis and link characters escaped."""
    text = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", text)


def _md_url(path: str) -> str:
    return urllib.parse.quote(path, safe="/")
