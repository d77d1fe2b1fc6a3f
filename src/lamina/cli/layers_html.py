"""``lamina layers --html``: one self-contained page (inline CSS, JS and SVG; nothing fetched).

Every number is printed for people and kept exact in ``data-*`` attributes, so a
test (or a curious reader) can check the page against the image.
"""

from __future__ import annotations

from html import escape

from lamina.cli.format import human_size
from lamina.layerview import LayersReport, LayerView, top_changes

_CSS = """
:root { --fg:#1d2430; --muted:#667085; --bg:#fff; --panel:#f4f6f9; --line:#d9dee7; --bar:#3b82c4;
        --waste:#d9534f; --add:#2e7d32; --chg:#b7791f; --del:#c62828; }
@media (prefers-color-scheme: dark) {
  :root { --fg:#e6e9ef; --muted:#98a2b3; --bg:#14181f; --panel:#1d232d; --line:#2f3846; --bar:#5aa2e0; }
}
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 2rem 0 .6rem; }
code, .mono, td.path { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
.muted { color: var(--muted); }
#summary { display: flex; flex-wrap: wrap; gap: .8rem; margin: 1rem 0; padding: 0; }
#summary div { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: .5rem .9rem; }
#summary dt { font-size: 12px; color: var(--muted); } #summary dd { margin: 0; font-size: 1.2rem; font-weight: 600; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; white-space: nowrap; }
td.instr { word-break: break-word; }
details.layer { border: 1px solid var(--line); border-radius: 8px; margin: .5rem 0; background: var(--panel); }
details.layer > summary { cursor: pointer; padding: .5rem .8rem; }
details.layer > div { padding: 0 .8rem .6rem; background: var(--bg); }
.added { color: var(--add); } .changed { color: var(--chg); } .deleted { color: var(--del); }
svg text { fill: var(--fg); font-size: 12px; } svg .bar { fill: var(--bar); } svg .waste { fill: var(--waste); }
#filter { padding: .35rem .6rem; width: 22rem; max-width: 100%; border: 1px solid var(--line);
          border-radius: 6px; background: var(--bg); color: var(--fg); }
.hidden { display: none; }
"""

_JS = """
const box = document.getElementById('filter');
function filter() {
  const q = box.value.toLowerCase();
  for (const row of document.querySelectorAll('tr.file')) {
    row.classList.toggle('hidden', q !== '' && !row.dataset.path.toLowerCase().includes(q));
  }
  for (const layer of document.querySelectorAll('details.layer')) {
    if (q !== '') layer.open = layer.querySelector('tr.file:not(.hidden)') !== null;
  }
}
box.addEventListener('input', filter);
if (location.hash.startsWith('#q=')) { box.value = decodeURIComponent(location.hash.slice(3)); filter(); }
"""

_MARK = {"added": "+", "changed": "~", "deleted": "−"}


def _size(n: int) -> str:
    """A human size, with the exact bytes on hover."""
    return f'<span title="{n:,} bytes">{escape(human_size(n))}</span>'


def _chart(report: LayersReport) -> str:
    """Horizontal bars of layer sizes (uncompressed), each with its wasted bytes in red."""
    rows = report.layers
    if not rows:
        return "<p class='muted'>This image has no layers.</p>"
    largest = max(max(lay.size for lay in rows), 1)
    left, width, step = 70, 760, 26
    parts = [f'<svg id="chart" role="img" aria-label="layer sizes" viewBox="0 0 {left + width + 170} '
             f'{step * len(rows) + 10}" width="100%">']
    for lay in rows:
        y = 5 + lay.index * step
        bar = max(1.0, width * lay.size / largest) if lay.size else 0.0
        waste = min(bar, width * lay.wasted / largest)
        parts.append(
            f'<g class="layer-bar" data-layer="{lay.index}" data-size="{lay.size}" data-wasted="{lay.wasted}">'
            f"<title>layer {lay.index}: {escape(human_size(lay.size))}, wasted {escape(human_size(lay.wasted))}"
            f" — {escape(lay.created_by[:200])}</title>"
            f'<text x="0" y="{y + 15}">layer {lay.index}</text>'
            f'<rect class="bar" x="{left}" y="{y}" width="{bar:.1f}" height="{step - 8}" rx="3"/>'
            f'<rect class="waste" x="{left}" y="{y}" width="{waste:.1f}" height="{step - 8}" rx="3"/>'
            f'<text x="{left + bar + 8:.1f}" y="{y + 15}">{escape(human_size(lay.size))}'
            f'{escape(f" ({human_size(lay.wasted)} wasted)") if lay.wasted else ""}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def _summary(report: LayersReport) -> str:
    items = [("size", "Image size", human_size(report.size), report.size),
             ("layers", "Layers", str(len(report.layers)), len(report.layers)),
             ("wasted", "Wasted", human_size(report.wasted), report.wasted),
             ("efficiency", "Efficiency", f"{report.efficiency:.2%}", f"{report.efficiency:.6f}")]
    cells = "".join(f'<div><dt>{label}</dt><dd id="{key}" data-value="{value}">{escape(shown)}</dd></div>'
                    for key, label, shown, value in items)
    return f'<dl id="summary">{cells}</dl>'


def _layers_table(report: LayersReport) -> str:
    head = ("<tr><th class='num'>#</th><th class='num'>Size</th><th class='num'>Blob</th>"
            "<th class='num'>Added</th><th class='num'>Changed</th><th class='num'>Deleted</th>"
            "<th class='num'>Wasted</th><th>Instruction</th></tr>")
    rows = []
    for lay in report.layers:
        rows.append(
            f'<tr class="layer-row" data-layer="{lay.index}" data-size="{lay.size}" '
            f'data-blob-size="{lay.blob_size}" data-wasted="{lay.wasted}">'
            f'<td class="num"><a href="#layer-{lay.index}">{lay.index}</a></td>'
            f'<td class="num">{_size(lay.size)}</td><td class="num">{_size(lay.blob_size)}</td>'
            f'<td class="num added">{lay.count("added")}</td><td class="num changed">{lay.count("changed")}</td>'
            f'<td class="num deleted">{lay.count("deleted")}</td><td class="num">{_size(lay.wasted)}</td>'
            f'<td class="instr mono">{escape(lay.created_by)}</td></tr>')
    return f"<table id='layers'>{head}{''.join(rows)}</table>"


def _layer_details(lay: LayerView, limit: int) -> str:
    shown = top_changes(lay.changes, limit)
    rows = "".join(
        f'<tr class="file {c.kind}" data-path="{escape(c.path)}" data-kind="{c.kind}" data-size="{c.size}">'
        f'<td>{_MARK[c.kind]}</td><td class="num">{_size(c.size) if not c.is_dir else ""}</td>'
        f'<td class="path">{escape(c.path)}{"/" if c.is_dir else ""}'
        f'{" → " + escape(c.link) if c.link else ""}</td></tr>' for c in shown)
    more = len(lay.changes) - len(shown)
    note = f"<p class='muted more'>… and {more} more (the largest are shown; --limit 0 lists all)</p>" if more else ""
    body = f"<table class='files'>{rows}</table>{note}" if shown else "<p class='muted'>No file changes.</p>"
    return (f'<details class="layer" id="layer-{lay.index}" data-layer="{lay.index}" '
            f'data-digest="{escape(lay.digest)}" data-files="{len(lay.changes)}">'
            f"<summary><b>Layer {lay.index}</b> · {escape(human_size(lay.size))} · "
            f'<span class="added">+{lay.count("added")}</span> <span class="changed">~{lay.count("changed")}</span> '
            f'<span class="deleted">−{lay.count("deleted")}</span> · <code>{escape(lay.created_by[:160])}</code>'
            f"</summary><div><p class='muted mono'>{escape(lay.digest)}</p>{body}</div></details>")


def _wasted_table(report: LayersReport, limit: int) -> str:
    if not report.wasted_files:
        return "<p class='muted'>No file is overwritten or deleted by a later layer.</p>"
    shown = report.wasted_files[:limit] if limit > 0 else report.wasted_files
    rows = "".join(
        f'<tr class="file wasted-file" data-path="{escape(w.path)}" data-size="{w.size}">'
        f'<td class="num">{_size(w.size)}</td><td class="path">{escape(w.path)}</td>'
        f'<td class="num">{w.layer}</td><td>{w.how} in layer {w.hidden_by}</td></tr>' for w in shown)
    more = len(report.wasted_files) - len(shown)
    note = f"<p class='muted more'>… and {more} more</p>" if more else ""
    return ("<table id='wasted'><tr><th class='num'>Size</th><th>Path</th><th class='num'>Layer</th>"
            f"<th>Hidden</th></tr>{rows}</table>{note}")


def render_html(report: LayersReport, limit: int = 0) -> str:
    """The whole page; ``limit`` caps the files listed per layer and in the wasted table (0: all)."""
    title = escape(report.name or report.image)
    details = "".join(_layer_details(lay, limit) for lay in report.layers)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Layers of {title}</title><style>{_CSS}</style></head>
<body data-image="{escape(report.image)}">
<h1>Layers of {title}</h1>
<p class="muted mono">{escape(report.image)}</p>
{_summary(report)}
<h2>Layer sizes</h2>
<p class="muted">Bytes of files in each layer; the red part is what a later layer overwrites or deletes.</p>
{_chart(report)}
<h2>Layers</h2>
{_layers_table(report)}
<h2>Files per layer</h2>
<p><input id="filter" type="search" placeholder="Filter paths…" aria-label="Filter paths"></p>
{details}
<h2>Wasted space</h2>
<p class="muted">Files that a later layer overwrites or deletes: shipped in the image, never seen in a
container. Efficiency = 1 − wasted ÷ image size (sizes count files' bytes, as docker does).</p>
{_wasted_table(report, limit)}
<p class="muted">Made by lamina layers.</p>
<script>{_JS}</script>
</body></html>
"""
