"""The two pictures of ``edgeft optimize``: the Pareto plot (latency vs val drop of every candidate) and the
per-layer INT8 sensitivity plot. matplotlib, Agg backend, written atomically."""
from __future__ import annotations

from pathlib import Path

KIND_STYLE = {"float": ("#4c72b0", "o"), "ptq": ("#dd8452", "s"), "mixed": ("#55a868", "D"),
              "pruned": ("#c44e52", "^"), "qat": ("#8172b3", "v"), "peer": ("#7f7f7f", "X")}


def _save(fig, path: Path) -> Path:
    from ..utils.io import atomic_write_with

    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    return path


def pareto_plot(cands: list[dict], max_drop: float, chosen: str | None, front: set[str], path: Path,
                title: str = "", subtitle: str = "") -> Path:
    """x: p50 latency (ms, log) with the per-window p50 range; y: val drop in points (lower is better) with the
    accuracy CI; the budget as a line; the front joined; the chosen bundle ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [c for c in cands if c.get("p50_ms") is not None and c.get("val_drop") is not None]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    for c in pts:
        color, marker = KIND_STYLE.get(c["kind"], ("k", "o"))
        x, y = c["p50_ms"], c["val_drop"]
        xerr = [[max(x - c.get("p50_lo", x), 0.0)], [max(c.get("p50_hi", x) - x, 0.0)]]
        yerr = [[max(y - c.get("val_drop_lo", y), 0.0)], [max(c.get("val_drop_hi", y) - y, 0.0)]]
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, color=color, ms=7, capsize=2, lw=0.8,
                    alpha=0.95 if c["name"] in front else 0.55)
    ubs = [c for c in pts if c.get("val_drop_ub95") is not None]
    if ubs:   # the selection rule: the paired upper bound of the drop must be under the budget line
        ax.scatter([c["p50_ms"] for c in ubs], [c["val_drop_ub95"] for c in ubs], marker="_", s=160, color="#111",
                   lw=1.5, label="paired 95% upper bound of the drop (what must be within the budget)")
    for i, c in enumerate(sorted(pts, key=lambda c: (c["p50_ms"], c["val_drop"]))):
        # neighbours alternate above/below so labels of (nearly) coincident points stay readable
        ax.annotate(c["name"], (c["p50_ms"], c["val_drop"]), textcoords="offset points",
                    xytext=(6, 5 if i % 2 == 0 else -11), fontsize=7)
    on = sorted((c for c in pts if c["name"] in front), key=lambda c: c["p50_ms"])
    if len(on) > 1:
        ax.plot([c["p50_ms"] for c in on], [c["val_drop"] for c in on], "--", color="#333", lw=0.8,
                label="Pareto front (faster or more accurate than every other)")
    ax.axhline(max_drop, color="#c44e52", lw=1, ls=":", label=f"budget: {max_drop:g} points")
    ax.axhline(0, color="#999", lw=0.6)
    for c in pts:
        if c["name"] == chosen:
            ax.scatter([c["p50_ms"]], [c["val_drop"]], s=260, facecolors="none", edgecolors="#111", lw=1.6,
                       label=f"chosen: {chosen}")
    for kind, (color, marker) in KIND_STYLE.items():
        if any(c["kind"] == kind for c in pts):
            ax.scatter([], [], color=color, marker=marker, label=kind)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("p50 latency per sample, ms (log; bars: range of the per-window p50s)")
    ax.set_ylabel("val top-1 drop vs PyTorch FP32, points (bars: 95% CI)")
    ax.set_title((title or "edgeft optimize: candidates on the target") + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    p = _save(fig, path)
    plt.close(fig)
    return p


def sensitivity_plot(sens: dict, path: Path, kept_float: list[str] | None = None, title: str = "") -> Path:
    """One bar per quantized layer in network order: the share of the INT8 model's output error that running
    that layer alone in float removes; the layers a mixed-precision candidate keeps in float are red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(sens["layers"], key=lambda r: r["index"])
    total = sens["int8"]["nmse"] or 1.0
    vals = [100.0 * r["gain"] / total for r in layers]
    kept = set(kept_float or [])
    colors = ["#c44e52" if r["node"] in kept else "#4c72b0" for r in layers]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.16 * len(layers) + 3), 4.8))
    ax.bar(range(len(layers)), vals, color=colors)
    ax.axhline(0, color="#333", lw=0.6)
    step = max(1, len(layers) // 40)
    ax.set_xticks(range(0, len(layers), step))
    ax.set_xticklabels([_short(layers[i]["node"]) for i in range(0, len(layers), step)], rotation=90, fontsize=6)
    ax.set_ylabel("INT8 output error removed, % (layer alone in float)")
    ax.set_xlabel(f"quantized layers in network order ({len(layers)}); red: kept in float by the mixed candidate")
    ax.set_title(title or f"per-layer INT8 sensitivity ({sens['samples']} val samples, ONNX Runtime)")
    ax.grid(True, axis="y", alpha=0.25)
    p = _save(fig, path)
    plt.close(fig)
    return p


def _short(name: str) -> str:
    parts = [p for p in name.strip("/").split("/") if p]
    return "/".join(parts[-2:]) if len(parts) > 1 else name
