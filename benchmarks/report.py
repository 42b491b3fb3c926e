"""Markdown tables and PNG plots of benchmark results (matplotlib imported only to plot)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _s(value: Any, unit: str = " s") -> str:
    return "n/a" if value is None else f"{value}{unit}"


def _pair(values: dict[str, Any] | None, unit: str = " s") -> str:
    if not values:
        return "n/a"
    return f"{_s(values.get('p50'), unit)} / {_s(values.get('p99'), unit)}"


def _rate(per_minute: dict[str, float]) -> str:
    return ", ".join(f"{verb} {rate}" for verb, rate in per_minute.items()) or "none"


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) rows of one run; the same rows for ours and KEDA."""
    scenario = result["scenario"]
    if "error" in result:
        return [("error", result["error"])]
    startup, steady, reaction = result["startup"], result["steady"], result["reaction"]
    connections = steady["connections"]["total"]
    writes = {
        verb: rate
        for verb, rate in steady["api_requests_per_minute"].items()
        if verb in ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")
    }
    out = [
        (
            "operator",
            f"{scenario['operator']} x {scenario['replicas']}"
            + (f", {scenario['shards']} shards" if scenario["shards"] else ""),
        ),
        (
            "ScaledObjects / pollingInterval",
            f"{scenario['objects']} / {scenario['polling_interval']} s",
        ),
        ("objects created per second (harness)", str(result["setup"]["creations_per_second"])),
        ("time until every object was polled once", _s(startup["first_poll_of_all_s"])),
        ("time until every object had a status", _s(startup["first_status_of_all_s"])),
        (
            "polls per second (steady; expected N / interval)",
            f"{_s(steady['polls_per_second'], '')} "
            f"({steady.get('expected_polls_per_second', 'n/a')})",
        ),
        ("failed polls in the steady window", str(steady.get("poll_errors", "n/a"))),
        ("tick lateness p50 / p99", _pair(steady["lateness_s"])),
        (
            "operator CPU, share of one core (without the harness's scrapes)",
            f"{steady['cpu_share_of_one_core']} ({steady.get('cpu_share_without_scrapes', 'n/a')})",
        ),
        ("CPU seconds per 1,000 polls", _s(steady["cpu_seconds_per_1000_polls"], "")),
        (
            "RSS total / per object",
            f"{steady['rss_mib']} MiB / {steady['rss_per_object_kib']} KiB",
        ),
        ("API requests per minute while nothing changes", _rate(steady["api_requests_per_minute"])),
        ("API writes per minute while nothing changes (all clients)", _rate(writes)),
        (
            "connections: Redis / Kafka / Prometheus / kube-apiserver",
            " / ".join(
                str(connections[n]) for n in ("redis", "kafka", "prometheus", "kube-apiserver")
            ),
        ),
    ]
    scrape = steady.get("metrics_scrape")
    if scrape:
        out.append(
            (
                "one /metrics scrape: size, time, operator CPU",
                f"{round(scrape['bytes'] / 2**20, 2)} MiB, {scrape['seconds']} s, "
                f"{scrape['operator_cpu_s']} s",
            )
        )
    for phase, title in (("activation", "0 -> 1"), ("scale_out", "1 -> 4")):
        figures = reaction.get(phase)
        if figures:
            out.append(
                (
                    f"reaction {title}: backlog -> replicas p50 / p99 (reacted/missed)",
                    f"{_pair(figures)} ({figures['reacted']}/{figures['missed']})",
                )
            )
    return out


def markdown(result: dict[str, Any]) -> str:
    scenario = result["scenario"]
    lines = [
        f"### {scenario['objects']} ScaledObjects, {scenario['operator']}"
        + (f" ({result['label']})" if result.get("label") else ""),
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {value} |" for name, value in rows(result)]
    lines += ["", *footer(result)]
    return "\n".join(lines) + "\n"


def footer(result: dict[str, Any]) -> list[str]:
    machine = result.get("machine", {})
    git = result.get("git", {})
    out = []
    if machine:
        out.append(
            f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
            f"{machine['memory_gib']} GiB, load average at start "
            f"{' '.join(str(x) for x in machine['load_average_at_start'])}; "
            f"Python {machine['python']}."
        )
    if git:
        out.append(
            f"Commit: {git['commit'][:12]}{' (with local changes)' if git['dirty'] else ''}."
        )
    if result.get("command"):
        out.append(f"Command: `{result['command']}`")
    return [line + "  " for line in out] + [""]


def compare_markdown(ours: dict[str, Any], keda: dict[str, Any]) -> str:
    """One table: ours, KEDA, and KEDA / ours for the figures both report."""
    scenario = ours["scenario"]
    lines = [
        f"### {scenario['objects']} ScaledObjects: ours and KEDA, one invocation",
        "",
    ]
    if "error" in keda:
        lines += [f"KEDA did not run: {keda['error']}", "", markdown(ours)]
        return "\n".join(lines)
    if "error" in ours:
        lines += [f"Ours did not run: {ours['error']}", "", markdown(keda)]
        return "\n".join(lines)

    def figures(result: dict[str, Any]) -> dict[str, float | None]:
        steady = result["steady"]
        connections = steady["connections"]["total"]
        per_minute = steady["api_requests_per_minute"]
        return {
            "operator CPU (share of one core)": steady["cpu_share_of_one_core"],
            "RSS (MiB)": steady["rss_mib"],
            "API requests per minute, all verbs": round(sum(per_minute.values()), 1),
            "API GET per minute": per_minute.get("GET", 0.0),
            "API writes per minute": round(
                sum(v for k, v in per_minute.items() if k in ("POST", "PUT", "PATCH", "DELETE")),
                1,
            ),
            "connections to Redis": connections["redis"],
            "connections to Kafka": connections["kafka"],
            "connections to Prometheus": connections["prometheus"],
            "connections to kube-apiserver": connections["kube-apiserver"],
            "activation 0 -> 1 p50 (s)": result["reaction"]["activation"]["p50"],
            "activation 0 -> 1 p99 (s)": result["reaction"]["activation"]["p99"],
            "time until every object was polled once (s)": result["startup"]["first_poll_of_all_s"],
            "time until every object had a status (s)": result["startup"]["first_status_of_all_s"],
        }

    a, b = figures(ours), figures(keda)
    lines += ["| figure | ours | KEDA | KEDA / ours |", "| --- | --- | --- | --- |"]
    for name in a:
        x, y = a[name], b[name]
        ratio = f"{y / x:.2f}" if x and y is not None else "n/a"
        lines.append(f"| {name} | {_s(x, '')} | {_s(y, '')} | {ratio} |")
    lines += [
        "",
        "API requests include the apiserver's own (the same in both runs); KEDA's lateness is its "
        "per-object scale-loop deviation gauge, ours a histogram of every tick, so they are "
        "listed in the per-run tables only.",
        "",
        *footer(ours),
        markdown(ours),
        markdown(keda),
    ]
    return "\n".join(lines)


def plots(result: dict[str, Any], directory: Path, stem: str) -> list[str]:
    """Tick lateness over the steady window and reaction latency over time, as PNGs."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(no plots: matplotlib is not installed; pip install -e .[bench])"]
    scenario = result["scenario"]
    title = (
        f"{scenario['operator']}, {scenario['objects']} objects, {scenario['polling_interval']} s"
    )
    written = []

    timeline = result["steady"]["timeline"]
    figure, axes = plt.subplots(figsize=(8, 4))
    for key, label in (("lateness_p50", "p50"), ("lateness_p99", "p99")):
        points = [(w["t"], w[key]) for w in timeline if w.get(key) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), marker="o", label=label)
    axes.set_xlabel("seconds into the steady window")
    axes.set_ylabel("tick lateness (s)")
    axes.set_title(f"Tick lateness per scrape interval: {title}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    name = f"{stem}-lateness.png"
    figure.tight_layout()
    figure.savefig(directory / name, dpi=100)
    plt.close(figure)
    written.append(name)

    samples = [s for s in result["reaction"]["samples"] if s["latency_s"] is not None]
    figure, axes = plt.subplots(figsize=(8, 4))
    markers = {"redis": "o", "kafka": "s", "prometheus": "^"}
    colours = {"activation": "tab:blue", "scale_out": "tab:orange"}
    for phase in ("activation", "scale_out"):
        for source, marker in markers.items():
            points = [
                (s["t"], s["latency_s"])
                for s in samples
                if s["phase"] == phase and s["source"] == source
            ]
            if points:
                axes.scatter(
                    [x for x, _ in points],
                    [y for _, y in points],
                    marker=marker,
                    color=colours[phase],
                    s=14,
                    label=f"{phase.replace('_', ' ')}, {source}",
                )
    axes.axhline(scenario["polling_interval"], color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("seconds since the first backlog")
    axes.set_ylabel("backlog -> replicas changed (s)")
    axes.set_title(f"Reaction latency: {title}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    name = f"{stem}-reaction.png"
    figure.tight_layout()
    figure.savefig(directory / name, dpi=100)
    plt.close(figure)
    written.append(name)
    return written
