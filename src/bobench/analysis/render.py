"""A tiny document model (headings, paragraphs, tables, images, preformatted text) and its two renderers.

The report is built once as a list of blocks and rendered to self-contained HTML (CSS inline, images as
base64 data URIs, no scripts, no external resources, enforced by a Content-Security-Policy) and to
Markdown (images referenced as plots/<name>.png). Every piece of text is escaped for its target.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bobench.analysis.leaderboard import render_markdown_table


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    muted: bool = False


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    right: Sequence[bool]
    empty: str = "Nothing to show."


@dataclass(frozen=True)
class Image:
    file: str  # path relative to the report, e.g. "plots/overall.png"
    path: Path  # where the PNG is on disk (read and embedded in the HTML)
    title: str
    caption: str


@dataclass(frozen=True)
class Pre:
    summary: str
    text: str


Block = Heading | Para | Table | Image | Pre

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       margin: 0 auto; max-width: 1200px; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
h3 { font-size: 1.1rem; margin-top: 1.4rem; }
p.muted { color: #59636e; font-size: .9rem; }
.table-wrap { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #f9fafb; }
figure { margin: 1rem 0 1.6rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; border-radius: 4px; }
figcaption { color: #59636e; font-size: .88rem; margin-top: .3rem; }
details { margin: .3rem 0; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .82rem; border-radius: 4px; }
nav a { margin-right: .9rem; }
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A self-contained HTML page; a table of contents links every level-2 heading."""
    toc = " ".join(
        f'<a href="#{_slug(b.text)}">{html.escape(b.text)}</a>'
        for b in blocks
        if isinstance(b, Heading) and b.level == 2
    )
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<nav>{toc}</nav>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{_slug(block.text)}">{html.escape(block.text)}</h{block.level}>'
    if isinstance(block, Para):
        cls = ' class="muted"' if block.muted else ""
        return f"<p{cls}>{html.escape(block.text)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Image):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        name = html.escape(Path(block.file).name)
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{name}: {html.escape(block.title)}" '
            f'title="{name}" data-file="{html.escape(block.file)}">'
            f"<figcaption>{html.escape(block.title)}: {html.escape(block.caption)}</figcaption></figure>"
        )
    return f"<details><summary>{html.escape(block.summary)}</summary><pre>{html.escape(block.text)}</pre></details>"


def _html_table(table: Table) -> str:
    if not table.rows:
        return f'<p class="muted">{html.escape(table.empty)}</p>'

    def cell(tag: str, text: str, right: bool) -> str:
        return f"<{tag}{' class=num' if right else ''}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", h, r) for h, r in zip(table.headers, table.right, strict=True))
    rows = "\n".join(
        "<tr>" + "".join(cell("td", c, r) for c, r in zip(row, table.right, strict=True)) + "</tr>"
        for row in table.rows
    )
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table></div>'


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """The same document as GitHub-flavoured Markdown; images point at their PNG files."""
    parts = [f"# {_md_text(title)}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md_text(block.text)}")
        elif isinstance(block, Para):
            parts.append(f"*{_md_text(block.text)}*" if block.muted else _md_text(block.text))
        elif isinstance(block, Table):
            parts.append(
                render_markdown_table(block.headers, block.rows, block.right)
                if block.rows
                else f"*{block.empty}*"
            )
        elif isinstance(block, Image):
            parts.append(
                f"![{Path(block.file).name}: {_md_text(block.title)}]({block.file})\n\n*{_md_text(block.caption)}*"
            )
        else:
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", block.text)), default=0))
            parts.append(f"**{_md_text(block.summary)}**\n\n{fence}\n{block.text}\n{fence}")
    return "\n\n".join(parts) + "\n"


def _md_text(text: str) -> str:
    """Escape the characters that would turn names like `vit_base_patch16` into emphasis or links."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", text)
