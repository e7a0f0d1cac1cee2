"""A report's sections as pages: report.md (GitHub-flavoured markdown, figures beside it) and
report.html (self-contained: figures embedded)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from lrsweep.numbers import short
from lrsweep.report.captions import caption
from lrsweep.report.sections import Section


def markdown(name: str, sections: list[Section], figures: list[Path], folder: Path) -> str:
    lines = [f"# lrsweep report: {name}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        lines += [p + "\n" for p in section.paragraphs if p]
        if section.table is not None and not section.table.empty:
            lines += [_markdown_table(section.table), ""]
        lines += [_markdown_figure(p, folder) for p in section.figures]
        if section.code:
            lines += ["<details><summary>study file</summary>", "", "```toml",
                      section.code.strip(), "```", "", "</details>", ""]
    lines += ["## Figures", ""]
    lines += [_markdown_figure(p, folder) for p in figures]
    return "\n".join(lines)


def _markdown_figure(path: Path, folder: Path) -> str:
    return f"![{path.stem}]({path.relative_to(folder)})\n\n*{caption(path)}*\n"


def _markdown_table(frame: pd.DataFrame) -> str:
    cells = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    return "\n".join([header, rule] + ["| " + " | ".join(r) + " |" for r in cells])


def _cell(value) -> str:
    return short(value).replace("|", "\\|")  # a pipe would end the markdown cell


def html_page(name: str, sections: list[Section], figures: list[Path]) -> str:
    def para(text: str) -> str:
        escaped = html.escape(text)
        parts = escaped.split("**")  # the one piece of markdown the text uses
        escaped = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
        parts = escaped.split("`")
        return "<p>" + "".join(f"<code>{p}</code>" if i % 2 else p
                               for i, p in enumerate(parts)) + "</p>"

    body = [f"<h1>lrsweep report: {html.escape(name)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body += [para(p) for p in section.paragraphs if p]
        if section.table is not None and not section.table.empty:
            body.append(section.table.to_html(index=False, na_rep="–", float_format="{:.4g}".format,
                                              border=0, classes="t"))
        body += [_html_figure(p) for p in section.figures]
        if section.code:
            body.append(f"<details><summary>study file</summary><pre>{html.escape(section.code)}"
                        "</pre></details>")
    body.append("<h2>Figures</h2>")
    body += [_html_figure(p) for p in figures]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
             "color:#222}table.t{border-collapse:collapse;font-size:13px}"
             "table.t td,table.t th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}"
             "img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lrsweep: "
            f"{html.escape(name)}</title><style>{style}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def _html_figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()  # embedded: the page stands alone
    return (f'<figure><img alt="{path.stem}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption(path))}</figcaption></figure>")
