"""Render the charts of a run as one hand-written SVG file.

The left panel plots requests/s against connections for each server in the throughput
scenario, with the spawn ceiling as a dashed line. The right panel plots the peak RSS against
body size in the large-body scenario. Each point is the median over repetitions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from bench.settings import size_label

_PANEL_WIDTH = 460
_PANEL_HEIGHT = 340
_MARGIN_LEFT = 70
_MARGIN_RIGHT = 20
_MARGIN_TOP = 40
_MARGIN_BOTTOM = 60
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
_REFERENCE_COLOR = "#7f7f7f"
_GRID_COLOR = "#dddddd"


def _nice_ceiling(value: float) -> float:
    """Return the smallest of 1, 2, 2.5, 5 times a power of ten that is >= value."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power:
            return step * power
    return 10.0 * power


def _text(x: float, y: float, content: str, **attributes: str) -> str:
    extra = "".join(f' {name.replace("_", "-")}="{value}"' for name, value in attributes.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def _panel(
    left: float,
    title: str,
    x_title: str,
    y_title: str,
    categories: Sequence[str],
    series: dict[str, list[float | None]],
    reference: tuple[str, float] | None = None,
) -> list[str]:
    """Return the SVG elements of one line chart whose x axis is a list of categories."""
    plot_left = left + _MARGIN_LEFT
    plot_right = left + _PANEL_WIDTH - _MARGIN_RIGHT
    plot_top = _MARGIN_TOP
    plot_bottom = _PANEL_HEIGHT - _MARGIN_BOTTOM
    values = [value for points in series.values() for value in points if value is not None]
    if reference is not None:
        values.append(reference[1])
    y_max = _nice_ceiling(max(values, default=0.0))

    def x_of(index: int) -> float:
        # Each category gets an equal slot and its point sits in the slot's middle.
        return plot_left + (index + 0.5) * (plot_right - plot_left) / max(len(categories), 1)

    def y_of(value: float) -> float:
        return plot_bottom - value / y_max * (plot_bottom - plot_top)

    elements = [_text(left + _PANEL_WIDTH / 2, 22, title, text_anchor="middle", font_size="15")]
    for tick in range(5):
        value = y_max * tick / 4
        y = y_of(value)
        elements.append(
            f'<line x1="{plot_left}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" '
            f'stroke="{_GRID_COLOR}"/>'
        )
        elements.append(_text(plot_left - 6, y + 4, f"{value:g}", text_anchor="end"))
    for index, category in enumerate(categories):
        elements.append(_text(x_of(index), plot_bottom + 18, category, text_anchor="middle"))
    elements.append(
        _text((plot_left + plot_right) / 2, plot_bottom + 40, x_title, text_anchor="middle")
    )
    y_middle = (plot_top + plot_bottom) / 2
    elements.append(
        _text(
            left + 16,
            y_middle,
            y_title,
            text_anchor="middle",
            transform=f"rotate(-90 {left + 16:.1f} {y_middle:.1f})",
        )
    )
    elements.append(
        f'<rect x="{plot_left}" y="{plot_top}" width="{plot_right - plot_left}" '
        f'height="{plot_bottom - plot_top}" fill="none" stroke="#999999"/>'
    )

    legend_y = plot_top + 16
    if reference is not None:
        label, value = reference
        y = y_of(value)
        elements.append(
            f'<line x1="{plot_left}" y1="{y:.1f}" x2="{plot_right}" y2="{y:.1f}" '
            f'stroke="{_REFERENCE_COLOR}" stroke-dasharray="6 4"/>'
        )
        elements.append(
            _text(plot_right - 4, y - 5, label, text_anchor="end", fill=_REFERENCE_COLOR)
        )
    for number, (name, points) in enumerate(series.items()):
        color = _COLORS[number % len(_COLORS)]
        coordinates = [
            (x_of(index), y_of(value)) for index, value in enumerate(points) if value is not None
        ]
        if len(coordinates) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            elements.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        for x, y in coordinates:
            elements.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
        elements.append(
            f'<rect x="{plot_left + 10}" y="{legend_y - 9}" width="12" height="12" fill="{color}"/>'
        )
        elements.append(_text(plot_left + 28, legend_y + 1, name))
        legend_y += 18
    return elements


def server_name(command: Sequence[str]) -> str:
    """Return a short name for a server command: the program, or the script or module run
    by a Python interpreter."""
    program = command[0].rsplit("/", 1)[-1]
    if not program.startswith("python"):
        return program
    arguments = list(command[1:])
    if "-m" in arguments[:-1]:
        return arguments[arguments.index("-m") + 1]
    scripts = [argument for argument in arguments if not argument.startswith("-")]
    return scripts[0].rsplit("/", 1)[-1] if scripts else program


def _medians(summary: dict[str, Any], scenario: str, key: str, names: list[str]) -> list[Any]:
    figures = summary.get(scenario, {}).get(key, {})
    return [(figures.get(name) or {}).get("median") for name in names]


def render_svg(document: dict[str, Any]) -> str:
    """Return an SVG document with the throughput and large-body charts of a results document."""
    summary = document["summary"]
    settings = document["settings"]
    labels = {
        key: f"{key}: {server_name(server['command'])}"
        for key, server in document["servers"].items()
    }

    connections = settings["connections"]
    throughput = {
        labels[key]: _medians(
            summary, "throughput", key, [f"c{count}.requests_per_s" for count in connections]
        )
        for key in document["servers"]
    }
    ceiling = _medians(summary, "spawn-ceiling", "machine", ["spawns_per_s"])[0]
    reference = None if ceiling is None else ("spawn ceiling", float(ceiling))

    sizes = [size_label(size) for size in settings["large_body_sizes"]]
    rss = {
        labels[key]: _medians(
            summary, "large-body", key, [f"{size}.peak_rss_mib" for size in sizes]
        )
        for key in document["servers"]
    }

    width = 2 * _PANEL_WIDTH
    elements = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_PANEL_HEIGHT}" '
        f'viewBox="0 0 {width} {_PANEL_HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{_PANEL_HEIGHT}" fill="white"/>',
        *_panel(
            0,
            f"Throughput (cat, {size_label(settings['body_size'])} bodies)",
            "connections",
            "requests/s",
            [str(count) for count in connections],
            throughput,
            reference,
        ),
        *_panel(
            _PANEL_WIDTH,
            "Large body through cat",
            "body size",
            "peak RSS of the watchdog (MiB)",
            sizes,
            rss,
        ),
        "</svg>",
    ]
    return "\n".join(elements) + "\n"
