"""The Models view's SVG charts: registry text is escaped, odd data degrades to a message, never an error."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from airflow_saga.core.model_story import timeline
from airflow_saga.ui import svg

EVIL = '<script>alert(1)</script>"&'


def _history():
    return [
        {
            "seq": 1,
            "at": "2026-01-01T00:00:00Z",
            "action": "promote",
            "alias": "champion",
            "from": None,
            "to": "1",
            "by": EVIL,
            "reason": EVIL,
        },
        {
            "seq": 2,
            "at": "2026-01-02T00:00:00.123Z",
            "action": "promote",
            "alias": "champion",
            "from": "1",
            "to": "2",
            "by": "bob",
            "reason": "better",
        },
        {
            "seq": 3,
            "at": "2026-01-03T00:00:00+00:00",
            "action": "rollback",
            "alias": "champion",
            "from": "2",
            "to": "1",
            "by": "carol",
            "reason": "drift",
        },
    ]


def test_timeline_is_valid_svg_with_one_holding_per_entry_and_escaped_text():
    tl = timeline(_history(), {"champion": "1"}, start="2025-12-31T00:00:00Z", end="2026-01-04T00:00:00Z")
    drawn = svg.timeline(tl)
    root = ET.fromstring(drawn)  # well-formed XML, so nothing in the reasons broke out of an attribute
    ns = {"s": "http://www.w3.org/2000/svg"}
    holdings = [g.get("data-version") for g in root.iterfind(".//s:g[@class='holding']", ns)]
    assert holdings == ["1", "2", "1"]
    assert [g.get("data-action") for g in root.iterfind(".//s:g[@class='event']", ns)] == [
        "promote",
        "promote",
        "rollback",
    ]
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn
    assert tl["unrecorded"] == [] and tl["start"] == "2025-12-31T00:00:00Z"


def test_timeline_flags_an_alias_the_history_does_not_explain():
    tl = timeline(_history(), {"champion": "3", "challenger": "2"})
    assert {u["alias"]: (u["registry"], u["history"]) for u in tl["unrecorded"]} == {
        "champion": ("3", "1"),
        "challenger": ("2", None),
    }


def test_charts_skip_missing_and_non_finite_values_and_say_when_empty():
    points = [("2026-01-01T00:00:00Z", 0.5), ("bad", 1.0), ("2026-01-02T00:00:00Z", math.nan)]
    line = svg.line_chart([{"name": EVIL, "points": points}], title="t")
    ET.fromstring(line)
    assert line.count("<circle") == 1 and "<script>" not in line
    assert "no data yet" in svg.line_chart([{"name": "a", "points": [(1, None)]}], title="x", x_kind="number")
    bars = svg.bar_chart(["p50", "p99"], {"a": [1.0, math.inf], "b": [None, 2.0]}, title="lat")
    ET.fromstring(bars)
    assert bars.count('class="bar"') == 2
    assert "no data yet" in svg.bar_chart([], {}, title="empty")
    assert "No aliases" in svg.timeline({"lanes": {}, "events": []})
