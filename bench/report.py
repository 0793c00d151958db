"""Medians, ranges, ratios and targets: from the samples of every round to the tables we publish."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PEERS = ("peer_tutorial", "peer_shared")
CEILINGS = ("tornado_hello", "tornado_302_hmac", "sqlite")


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 0


class Samples:
    """metric key → server → one value per round, in the order measured."""

    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}
        self.values: dict[str, dict[str, list[float]]] = {}

    def add(self, metric: Metric, server: str, value: float | None) -> None:
        self.metrics.setdefault(metric.key, metric)
        if value is not None:
            self.values.setdefault(metric.key, {}).setdefault(server, []).append(float(value))

    def median(self, key: str, server: str) -> float | None:
        values = self.values.get(key, {}).get(server)
        return statistics.median(values) if values else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, metric in self.metrics.items():
            per_server = {}
            for server, values in self.values.get(key, {}).items():
                per_server[server] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "samples": values,
                }
            out[key] = {
                "workload": metric.workload,
                "label": metric.label,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "servers": per_server,
            }
        return out


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def cell(samples: Samples, key: str, server: str) -> str:
    values = samples.values.get(key, {}).get(server)
    if not values:
        return "–"
    digits = samples.metrics[key].digits
    med = fmt(statistics.median(values), digits)
    if len(values) == 1:
        return med
    return f"{med} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    if b == 0:
        return "∞" if a else "–"
    r = a / b
    return f"{r:.2f}×" if r < 10 else f"{r:.1f}×"


LABELS = {
    "linkd": "linkd",
    "linkd_b": "linkd (--compare-src)",
    "peer_tutorial": "peer, client per call",
    "peer_shared": "peer, shared client",
}


def main_table(samples: Samples, servers: list[str]) -> str:
    """Servers as columns, then linkd ÷ each peer (and the compared linkd ÷ linkd, when there is one)."""
    order = [s for s in ("linkd", "linkd_b", "peer_tutorial", "peer_shared") if s in servers]
    peers = [s for s in order if s.startswith("peer")]
    ratios = [("linkd", p, f"linkd ÷ {LABELS[p].removeprefix('peer, ')}") for p in peers]
    if "linkd_b" in order:
        ratios.append(("linkd_b", "linkd", "compared ÷ linkd"))
    head = ["workload", "metric", *(LABELS[s] for s in order), *(r[2] for r in ratios)]
    rows = [
        "| " + " | ".join(head) + " |",
        "| --- | --- |" + " ---: |" * (len(order) + len(ratios)),
    ]
    for key, metric in samples.metrics.items():
        if metric.workload == "ceiling" or not any(s in samples.values.get(key, {}) for s in order):
            continue
        cells = [cell(samples, key, s) for s in order]
        cells += [ratio(samples.median(key, a), samples.median(key, b)) for a, b, _ in ratios]
        rows.append(f"| {metric.workload} | {metric.label} ({metric.unit}) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def ceiling_table(samples: Samples, pairs: Iterable[tuple[str, str, str]]) -> str:
    """`pairs`: (ceiling metric key, ceiling server, the linkd metric key it bounds)."""
    rows = ["| ceiling | measured | linkd's figure | linkd ÷ ceiling |", "| --- | ---: | ---: | ---: |"]
    for key, server, linkd_key in pairs:
        if key not in samples.metrics or server not in samples.values.get(key, {}):
            continue
        metric = samples.metrics[key]
        linkd = samples.median(linkd_key, "linkd") if linkd_key else None
        rows.append(
            f"| {metric.label} ({metric.unit}) | {cell(samples, key, server)} | "
            f"{cell(samples, linkd_key, 'linkd') if linkd_key else '–'} | "
            f"{ratio(linkd, samples.median(key, server)) if linkd_key else '–'} |"
        )
    return "\n".join(rows)


@dataclass
class Target:
    text: str
    measured: str
    ok: bool | None  # None: not measured in this run


def stronger_peer(samples: Samples, key: str) -> tuple[str, float] | None:
    """The peer variant that did better on `key` (higher or lower, as the metric says)."""
    metric = samples.metrics.get(key)
    found = [(p, v) for p in PEERS if (v := samples.median(key, p)) is not None]
    if metric is None or not found:
        return None
    pick = max if metric.higher_is_better else min
    return pick(found, key=lambda pv: pv[1])


def targets(samples: Samples, ceiling_key: str, login_key: str, flow_key: str, cpu_key: str) -> list[Target]:
    out: list[Target] = []
    med = samples.median

    def where(key: str) -> str:
        return samples.metrics[key].workload if key in samples.metrics else key

    def at_least(text: str, a: float | None, b: float | None, factor: float, how: str) -> None:
        if a is None or b is None:
            out.append(Target(text, "not measured", None))
            return
        shown = f"{a / b:.2f}×" if b else "∞ (the other figure is 0)"
        out.append(Target(text, f"{shown} ({how})", a >= factor * b))

    peer = stronger_peer(samples, login_key)
    at_least(
        f"login ≥ 2× the stronger peer's requests/s ({where(login_key)})",
        med(login_key, "linkd"),
        peer[1] if peer else None,
        2,
        f"vs {peer[0]}" if peer else "",
    )
    at_least(
        "login ≥ 60 % of the raw Tornado 302+HMAC ceiling",
        med(login_key, "linkd"),
        med(ceiling_key, "tornado_302_hmac"),
        0.6,
        "of the ceiling",
    )
    at_least(
        f"flows ≥ 10× the tutorial-style peer ({where(flow_key)})",
        med(flow_key, "linkd"),
        med(flow_key, "peer_tutorial"),
        10,
        "vs peer_tutorial",
    )
    at_least(
        f"flows ≥ 3× the shared-client peer ({where(flow_key)})",
        med(flow_key, "linkd"),
        med(flow_key, "peer_shared"),
        3,
        "vs peer_shared",
    )
    cpu = med(cpu_key, "linkd")
    out.append(
        Target(
            f"≤ 5 ms of server CPU per flow ({where(cpu_key)})",
            f"{cpu:.1f} ms" if cpu is not None else "not measured",
            cpu <= 5 if cpu is not None else None,
        )
    )
    peer = stronger_peer(samples, "store.create.p1")
    at_least(
        "store creates ≥ 5× the peer's (one process)",
        med("store.create.p1", "linkd"),
        peer[1] if peer else None,
        5,
        "vs the peer's SessionStorage",
    )
    errors = samples.values.get("store.errors.p4", {}).get("linkd")
    out.append(
        Target(
            "store: 4 processes on one database with 0 errors",
            f"{int(sum(errors))} errors" if errors is not None else "not measured",
            sum(errors) == 0 if errors is not None else None,
        )
    )
    for key, text, factor in (
        ("footprint.rss_idle", "RSS idle ≤ the peer's", 1.0),
        ("footprint.rss_after", "RSS after the flow workload ≤ half the peer's", 0.5),
        ("footprint.start", "start to first 200 no slower than the peer", 1.0),
    ):
        a = med(key, "linkd")
        peer = stronger_peer(samples, key)
        if a is None or peer is None:
            out.append(Target(text, "not measured", None))
        else:
            shown = f"{a / peer[1]:.2f}×" if peer[1] else "–"
            out.append(Target(text, f"{shown} (vs {peer[0]})", a <= factor * peer[1]))
    return out


def targets_table(items: list[Target]) -> str:
    rows = ["| target | measured | met |", "| --- | --- | --- |"]
    for t in items:
        mark = "–" if t.ok is None else ("yes" if t.ok else "**no**")
        rows.append(f"| {t.text} | {t.measured} | {mark} |")
    return "\n".join(rows)
