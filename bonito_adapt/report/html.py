"""`report/index.html`: the report as one self-contained page (no file beside it needed): the same content
as `index.md` and the Generated tasks pages, images inline, and every generated task in a table that a
search box filters. Markdown is rendered with `markdown` (its `tables` extension)."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

__all__ = ["write_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 3px; }
#task-search { width: 30em; padding: 4px; font-size: 1em; }
"""

# After the page has loaded, how many images decoded (what a person sees), for the headless-browser test.
_SCRIPT = """
function filterTasks() {
  const needle = document.getElementById('task-search').value.toLowerCase();
  let shown = 0;
  for (const row of document.querySelectorAll('#all-tasks tbody tr')) {
    const match = row.textContent.toLowerCase().includes(needle);
    row.style.display = match ? '' : 'none';
    if (match) shown++;
  }
  document.getElementById('task-count').textContent = shown;
}
window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.dataset.imagesShown = images.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = images.length;
});
"""


def _inline_images(markdown_text: str, folder: Path) -> str:
    def data_uri(match: re.Match) -> str:
        alt, target = match.group(1), match.group(2)
        path = folder / target
        if not path.is_file():
            return match.group(0)
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{alt}](data:image/png;base64,{encoded})"

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)", data_uri, markdown_text)


def _task_table(tasks: list[dict[str, Any]], run: str) -> str:
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(task.get(key, '')))}</td>" for key in ("source_id", "input", "output"))
        + "</tr>" for task in tasks)
    return (f"<h2 id=\"all-tasks-heading\">All generated tasks — {html.escape(run)}</h2>"
            f"<p><input id=\"task-search\" placeholder=\"Filter tasks\" oninput=\"filterTasks()\"> "
            f"<span id=\"task-count\">{len(tasks)}</span> of {len(tasks)} tasks</p>"
            f"<table id=\"all-tasks\"><thead><tr><th>source</th><th>input</th><th>output</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def write_html(out: Path, index_markdown: str, pages: list[str], runs: list[dict[str, Any]]) -> Path:
    """Write `out/index.html` from the report's Markdown (index + generated-task pages, in `out`)."""
    import markdown

    from ..rundir import atomic_write_text

    parts = [index_markdown, *((out / page).read_text(encoding="utf-8") for page in pages)]
    body = []
    for number, text in enumerate(parts):
        text = _inline_images(text, out)
        for page in pages:  # links to the pages become links within this one
            text = text.replace(f"]({page})", f"](#{page.removesuffix('.md')})")
        anchor = f"<a id=\"{pages[number - 1].removesuffix('.md')}\"></a>" if number else ""
        body.append(anchor + markdown.markdown(text, extensions=["tables"]))
    for run_info in runs:
        path = Path(run_info["dir"]) / "generate" / "tasks.jsonl"
        if path.is_file():
            tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            body.append(_task_table(tasks, run_info["name"]))
            break  # one searchable table (the first run's); the other runs' pages are above
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Adaptation report</title>"
            f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>{''.join(body)}</body></html>")
    atomic_write_text(out / "index.html", page)
    return out / "index.html"
