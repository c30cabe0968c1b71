"""Server-rendered charts as inline SVG: no script, no CDN, works offline and in a
screenshot. Pure functions of the numbers; every text is escaped (site and category names
come from tenants' data)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

PALETTE = ("#1f6feb", "#d29922", "#2da44e", "#cf222e", "#8250df", "#bf8700", "#0a7ea4")


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, width: int = 430,
              unit: str = "", chart_id: str = "") -> Markup:
    """Horizontal bars, one per (label, value), longest = the largest value."""
    row, label_w, pad = 22, 130, 8
    height = pad * 2 + 20 + row * max(len(bars), 1)
    top = max((v for _, v in bars), default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart"'
           f' id="{escape(chart_id)}" width="{width}" height="{height}"'
           f' viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
           f'<title>{escape(title)}</title>',
           f'<text x="{pad}" y="{pad + 12}" font-size="13" font-weight="bold">'
           f'{escape(title)}</text>']
    span = width - label_w - pad * 2 - 60
    for i, (label, value) in enumerate(bars):
        y = pad + 20 + i * row
        w = max(int(span * value / top), 1 if value else 0)
        out.append(f'<text x="{pad}" y="{y + 14}" font-size="12">{escape(label[:18])}</text>')
        out.append(f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w}" height="{row - 6}"'
                   f' fill="{PALETTE[i % len(PALETTE)]}" data-value="{value}"/>')
        out.append(f'<text x="{label_w + w + 4}" y="{y + 14}" font-size="12">'
                   f'{escape(_fmt(value))}{escape(unit)}</text>')
    if not bars:
        out.append(f'<text x="{pad}" y="{pad + 36}" font-size="12" fill="#666">—</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above is escaped


def line_chart(xs: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *,
               title: str, width: int = 880, height: int = 220, unit: str = "",
               chart_id: str = "") -> Markup:
    """One polyline per (name, values) over the x labels ``xs`` (e.g. days), with a legend."""
    # Room for the largest y label on the left and the last day's label on the right.
    left, right, top_pad, bottom = 72, 28, 28, 36
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    top = max((v for _, vs in series for v in vs), default=0) or 1
    n = max(len(xs), 1)

    def x(i: int) -> float:
        return left + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top_pad + plot_h - plot_h * v / top

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart"'
           f' id="{escape(chart_id)}" width="{width}" height="{height}"'
           f' viewBox="0 0 {width} {height}" aria-label="{escape(title)}">',
           f'<title>{escape(title)}</title>',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}"'
           f' y2="{top_pad + plot_h}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>',
           f'<text x="{left - 4}" y="{top_pad + 4}" font-size="11" text-anchor="end">'
           f'{escape(_fmt(top))}{escape(unit)}</text>',
           f'<text x="{left - 4}" y="{top_pad + plot_h}" font-size="11" text-anchor="end">0</text>']
    step = max(1, len(xs) // 6)
    for i, label in enumerate(xs):
        if i % step == 0 or i == len(xs) - 1:
            out.append(f'<text x="{x(i):.1f}" y="{height - bottom + 16}" font-size="10"'
                       f' text-anchor="middle">{escape(label[-5:])}</text>')
    for k, (name, values) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        out.append(f'<polyline class="series" data-name="{escape(name)}" fill="none"'
                   f' stroke="{color}" stroke-width="2" points="{pts}"/>')
        for i, v in enumerate(values):
            if v:
                out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{color}"/>')
        lx = left + k * 110
        out.append(f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="{height - 5}" font-size="11">'
                   f'{escape(name[:14])}</text>')
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above is escaped
