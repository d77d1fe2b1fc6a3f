"""``lamina layers``: what each layer adds, changes and deletes, and the space it wastes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lamina.cli.args import Context, argument, command, echo, int_range, option, pass_context, path
from lamina.cli.format import human_size
from lamina.cli.main import store_of

_STYLE = {"added": ("+", "green"), "changed": ("~", "yellow"), "deleted": ("-", "red")}
DEFAULT_LIMIT = 20  # files per layer in the terminal; JSON lists all unless told
HTML_LIMIT = 1000   # a page with 100,000 rows is slow in any browser; the largest files are the ones kept


def render_terminal(report: Any, console: Any, limit: int) -> None:
    """The summary, a table of layers, each layer's largest changes as a tree, and the wasted files."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    from lamina.layerview import top_changes

    console.print(Text.assemble(("Image ", "bold"), (report.name or report.image, "bold cyan"), "  ",
                                (report.image.removeprefix("sha256:")[:12], "dim")))
    console.print(f"{len(report.layers)} layers, {human_size(report.size)}, wasted {human_size(report.wasted)},"
                  f" efficiency {report.efficiency:.2%}")
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, right in (("#", True), ("SIZE", True), ("ADDED", True), ("CHANGED", True), ("DELETED", True),
                        ("WASTED", True), ("INSTRUCTION", False)):
        table.add_column(name, justify="right" if right else "left", no_wrap=right,
                         overflow="fold" if not right else "ellipsis", ratio=1 if not right else None)
    for lay in report.layers:
        table.add_row(str(lay.index), human_size(lay.size), str(lay.count("added")), str(lay.count("changed")),
                      str(lay.count("deleted")), human_size(lay.wasted), lay.created_by)
    console.print(table)
    for lay in report.layers:
        tree = Tree(Text.assemble((f"layer {lay.index}", "bold"), f"  {human_size(lay.size)}  ",
                                  (lay.created_by, "cyan")))
        shown = top_changes(lay.changes, limit)
        for change in shown:
            mark, style = _STYLE[change.kind]
            tree.add(Text.assemble((f"{mark} {change.path}{'/' if change.is_dir else ''}", style),
                                   (_detail(change), "dim")))
        if len(lay.changes) > len(shown):
            tree.add(Text(f"… {len(lay.changes) - len(shown)} more (--limit 0 lists all)", "dim"))
        console.print(tree)
    if report.wasted_files:
        console.print("[bold]Wasted space[/bold]: files a later layer overwrites or deletes")
        wasted = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("SIZE", "PATH", "LAYER", "HIDDEN"):
            wasted.add_column(name, justify="right" if name in ("SIZE", "LAYER") else "left",
                              overflow="fold")
        shown_wasted = report.wasted_files[:limit] if limit > 0 else report.wasted_files
        for w in shown_wasted:
            wasted.add_row(human_size(w.size), w.path, str(w.layer), f"{w.how} in layer {w.hidden_by}")
        console.print(wasted)
        if len(report.wasted_files) > len(shown_wasted):
            console.print(f"[dim]… {len(report.wasted_files) - len(shown_wasted)} more[/dim]")


def _detail(change: Any) -> str:
    if change.link:
        return f"  → {change.link}"
    return "" if change.is_dir or (change.size == 0 and change.kind != "added") else f"  {human_size(change.size)}"


@command("layers")
@argument("name")
@option("--limit", type=int_range(min=0), default=None,
        help=f"Files listed per layer, the largest first (default {DEFAULT_LIMIT} in the terminal, "
             f"{HTML_LIMIT} in HTML, all in JSON; 0 = all).")
@option("--format", "fmt", choices=["table", "json"], default="table")
@option("--html", "html_path", type=path(dir_okay=False),
        help="Write a self-contained HTML report to this file instead.")
@pass_context
def layers(ctx: Context, name: str, limit: int | None, fmt: str, html_path: Path | None) -> None:
    """Show each layer's instruction, size and file changes, and the space wasted (like dive)."""
    from lamina.layerview import image_layers

    store = store_of(ctx)
    report = image_layers(store, store.resolve(name), name)
    if html_path is not None:
        from lamina.cli.layers_html import render_html

        tmp = html_path.with_name(f".{html_path.name}.partial")
        tmp.write_text(render_html(report, HTML_LIMIT if limit is None else limit), encoding="utf-8")
        tmp.replace(html_path)
        echo(f"Wrote {html_path}: {len(report.layers)} layers, {human_size(report.size)}, "
             f"efficiency {report.efficiency:.2%}")
        return
    if fmt == "json":
        echo(json.dumps(report.to_json(limit or 0), indent=2))
        return
    from rich.console import Console

    render_terminal(report, Console(highlight=False), DEFAULT_LIMIT if limit is None else limit)


COMMANDS = [layers]
