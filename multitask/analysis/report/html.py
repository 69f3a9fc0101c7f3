"""The report as data (sections of text, tables, figures, thumbnail galleries) and its two renderings.

    section = Section(id="head-age", title="Head: age")
    section.text("Macro F1 0.71 on 412 labelled images.")
    section.table(["class", "f1"], [["<30", 0.8]], caption="Per class")
    section.figure("age_confusion", png_bytes, caption="Confusion matrix")
    html = render_html("Error report", sections)             # one self-contained file: images inline as base64
    md = render_markdown("Error report", sections, out_dir)  # images written as files next to it

Analysis code builds sections; nothing here knows about heads or metrics, so both outputs always hold the same content.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from ...utils.io import write_bytes
from ...utils.text import fmt, is_number, md_table


@dataclass
class Figure:
    name: str          # file stem in the markdown folder and the tracker key; unique within a report
    png: bytes
    caption: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    caption: str = ""
    collapsed: bool = False  # big tables (18x18 counts) fold away in HTML
    inline: bool = False     # small tables sit side by side in HTML


@dataclass
class Tile:
    png: bytes
    lines: list[str]   # caption lines under the thumbnail; the first is the id (selectable in HTML)
    bad: bool = False  # highlight (a wrong prediction, a suspect label)


@dataclass
class Gallery:
    name: str
    tiles: list[Tile]
    caption: str = ""


@dataclass
class Text:
    body: str
    kind: str = "p"  # "p", or "note" for things skipped / caveats


@dataclass
class Section:
    id: str
    title: str
    level: int = 2
    blocks: list = field(default_factory=list)
    children: list["Section"] = field(default_factory=list)

    def text(self, body: str) -> None:
        self.blocks.append(Text(body))

    def note(self, body: str) -> None:
        self.blocks.append(Text(body, kind="note"))

    def table(self, columns, rows, *, caption: str = "", collapsed: bool = False, inline: bool = False) -> None:
        self.blocks.append(Table(list(columns), [list(r) for r in rows], caption, collapsed, inline))

    def figure(self, name: str, png: bytes, *, caption: str = "") -> None:
        self.blocks.append(Figure(name, png, caption))

    def gallery(self, name: str, tiles: list[Tile], *, caption: str = "") -> None:
        self.blocks.append(Gallery(name, tiles, caption))

    def sub(self, id: str, title: str) -> "Section":
        child = Section(id=id, title=title, level=self.level + 1)
        self.children.append(child)
        return child

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


# ----------------------------------------------------------------------------------------------------- HTML
CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#dfe3ea; --bg:#f7f8fa; --accent:#2f6fdb; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 80px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 22px; margin: 44px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 17px; margin: 28px 0 6px; }
h4 { font-size: 15px; margin: 20px 0 4px; color: var(--muted); }
p { margin: 6px 0 10px; max-width: 80ch; }
p.note { color: #7a5b00; background: #fff8e1; border-left: 3px solid #f0c040; padding: 6px 10px; }
.subtitle { color: var(--muted); margin-bottom: 18px; }
nav.toc { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px;
          columns: 2; column-gap: 36px; font-size: 14px; }
nav.toc ul { margin: 0; padding-left: 16px; } nav.toc > ul { padding-left: 0; list-style: none; }
nav.toc li { break-inside: avoid; } nav.toc a { color: var(--accent); text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 8px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; background: var(--bg); }
.card .v { font-size: 22px; font-weight: 600; } .card .k { font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; white-space: nowrap; }
th { background: var(--bg); font-weight: 600; } td.n { text-align: right; }
tr:nth-child(even) td { background: #fbfcfd; }
.scroll { overflow-x: auto; max-width: 100%; } .scroll.inline { display: inline-block; vertical-align: top;
  margin-right: 28px; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: 13px; padding: 2px 0; }
figure { margin: 10px 0 18px; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
details summary { cursor: pointer; color: var(--accent); font-size: 13px; margin: 4px 0; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 18px; }
.tile { width: 118px; font-size: 11px; line-height: 1.3; color: var(--muted); }
.tile img { display: block; height: 72px; max-width: 118px; border: 2px solid var(--line); border-radius: 3px; }
.tile.bad img { border-color: var(--bad); } .tile .id { color: var(--ink); font-family: ui-monospace, monospace;
  word-break: break-all; user-select: all; }
"""


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = "".join(f'<td class="n">{html.escape(fmt(v))}</td>' if is_number(v)
                        else f"<td>{html.escape(fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    cls = "scroll inline" if table.inline else "scroll"
    out = (f'<div class="{cls}"><table>{caption}<thead><tr>{head}</tr></thead>'
           f'<tbody>{"".join(body)}</tbody></table></div>')
    if table.collapsed:
        out = f"<details><summary>{html.escape(table.caption or 'table')} (click to show)</summary>{out}</details>"
    return out


def _html_block(block) -> str:
    if isinstance(block, Text):
        cls = ' class="note"' if block.kind == "note" else ""
        return f"<p{cls}>{html.escape(block.body)}</p>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        alt = html.escape(block.caption or block.name, quote=True)
        cap = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return f'<figure><img src="{_png_uri(block.png)}" alt="{alt}">{cap}</figure>'
    if isinstance(block, Gallery):
        tiles = []
        for tile in block.tiles:
            first, rest = (tile.lines[0] if tile.lines else ""), tile.lines[1:]
            lines = "".join(f"<div>{html.escape(line)}</div>" for line in rest)
            cls = "tile bad" if tile.bad else "tile"
            tiles.append(f'<div class="{cls}"><img src="{_png_uri(tile.png)}" alt="{html.escape(first, quote=True)}">'
                         f'<div class="id">{html.escape(first)}</div>{lines}</div>')
        cap = f"<p>{html.escape(block.caption)}</p>" if block.caption else ""
        return f'{cap}<div class="gallery">{"".join(tiles)}</div>'
    raise TypeError(f"unknown report block {type(block).__name__}")


def _html_section(section: Section) -> str:
    level = min(section.level, 6)
    parts = [f'<section id="{section.id}"><h{level}>{html.escape(section.title)}</h{level}>']
    parts += [_html_block(b) for b in section.blocks]
    parts += [_html_section(c) for c in section.children]
    parts.append("</section>")
    return "\n".join(parts)


def _html_toc(sections: list[Section]) -> str:
    def items(nodes: list[Section], depth: int) -> str:
        lis = []
        for s in nodes:
            inner = items(s.children, depth + 1) if depth < 1 and s.children else ""
            lis.append(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>{inner}</li>')
        return f"<ul>{''.join(lis)}</ul>"
    return f'<nav class="toc" id="contents"><strong>Contents</strong>{items(sections, 0)}</nav>'


def render_html(title: str, sections: list[Section], *, subtitle: str = "",
                cards: list[tuple[str, str]] = ()) -> str:
    card_html = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div>'
                        f"</div>" for k, v in cards)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="subtitle">{html.escape(subtitle)}</div>' if subtitle else "",
        f'<div class="cards">{card_html}</div>' if cards else "",
        _html_toc(sections),
        *(_html_section(s) for s in sections),
        "</main></body></html>"])


# ----------------------------------------------------------------------------------------------------- Markdown
def _md_block(block, folder: Path) -> list[str]:
    if isinstance(block, Text):
        return [f"> **Note:** {block.body}" if block.kind == "note" else block.body, ""]
    if isinstance(block, Table):
        head = [f"*{block.caption}*", ""] if block.caption else []
        return head + md_table(block.columns, block.rows) + [""]
    if isinstance(block, Figure):
        write_bytes(folder / f"{block.name}.png", block.png)
        out = [f"![{block.caption or block.name}]({block.name}.png)"]
        return out + ([f"*{block.caption}*"] if block.caption else []) + [""]
    if isinstance(block, Gallery):
        thumbs = folder / "thumbs"
        thumbs.mkdir(exist_ok=True)
        cells = []
        for i, tile in enumerate(block.tiles):
            name = f"thumbs/{block.name}_{i:03d}.png"
            write_bytes(folder / name, tile.png)
            cells.append(f"![]({name})<br>" + "<br>".join(line.replace("|", "\\|") for line in tile.lines))
        per_row = 6
        rows = [cells[i:i + per_row] for i in range(0, len(cells), per_row)]
        lines = [block.caption, ""] if block.caption else []
        if rows:
            width = min(per_row, len(cells))
            lines += ["| " + " | ".join([""] * width) + " |", "|" + "|".join(["---"] * width) + "|"]
            lines += ["| " + " | ".join(row + [""] * (width - len(row))) + " |" for row in rows]
        return lines + [""]
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_markdown(title: str, sections: list[Section], folder: Path, *, subtitle: str = "",
                    cards: list[tuple[str, str]] = ()) -> str:
    """Markdown with the same sections; figures and thumbnails are written into `folder` as PNG files."""
    folder = Path(folder)
    lines = [f"# {title}", ""]
    if subtitle:
        lines += [subtitle, ""]
    if cards:
        lines += md_table([k for k, _ in cards], [[v for _, v in cards]]) + [""]
    lines += ["## Contents", ""]
    for top in sections:
        for s in top.walk():
            if s.level <= 3:
                lines.append("  " * (s.level - 2) + f"- [{s.title}](#{s.id})")
    lines.append("")
    for top in sections:
        for s in top.walk():
            lines += [f'<a id="{s.id}"></a>', "", "#" * min(s.level, 6) + " " + s.title, ""]
            for block in s.blocks:
                lines += _md_block(block, folder)
    return "\n".join(lines).rstrip() + "\n"
