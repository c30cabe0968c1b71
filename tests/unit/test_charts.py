"""Inline SVG charts: well-formed, escaped, proportional."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from kameng_storefront.web.charts import bar_chart, line_chart

NS = "{http://www.w3.org/2000/svg}"


def test_bar_chart_is_valid_svg_with_proportional_bars_and_escaped_labels():
    svg = str(bar_chart([("<script>", 50.0), ("b&c", 100.0)], title="GMV <x>", chart_id="c"))
    root = ET.fromstring(svg)  # well-formed: nothing a tenant named broke the markup
    assert "<script>" not in svg
    bars = root.findall(f"{NS}rect")
    widths = [int(b.get("width")) for b in bars]
    assert widths[1] == 2 * widths[0]


def test_empty_charts_render():
    ET.fromstring(str(bar_chart([], title="x")))
    ET.fromstring(str(line_chart([], [], title="x")))


def test_line_chart_has_one_polyline_per_series():
    svg = str(line_chart(["2026-01-01", "2026-01-02"], [("a", [1, 2]), ("b", [0, 0])],
                         title="t"))
    root = ET.fromstring(svg)
    assert len(root.findall(f"{NS}polyline")) == 2
