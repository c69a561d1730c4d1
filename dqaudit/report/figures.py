"""Report figures: matplotlib -> SVG text, one style, greyscale-safe, deterministic bytes."""

from __future__ import annotations

import io

import numpy as np

INK = "#222222"
DARK = "#1f4e79"   # flagged / dqaudit
LIGHT = "#9fb7cc"  # everything else
HATCH_GREY = "#7f7f7f"


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.hashsalt": "dqaudit",  # stable element ids -> byte-identical SVGs
        "svg.fonttype": "none",
        "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
        "axes.edgecolor": INK, "axes.labelcolor": INK, "xtick.color": INK, "ytick.color": INK,
        "axes.spines.top": False, "axes.spines.right": False, "font.family": "DejaVu Sans",
    })
    return plt


def svg_text(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog so it inlines into HTML


def plain(names: list[str]) -> list[str]:
    """Class names as literal text: matplotlib reads ``$...$`` as mathtext, so a class called
    ``$\\frac{$`` would crash the figure; every ``$`` is escaped."""
    return [str(n).replace("$", r"\$") for n in names]


def class_distribution(classes: list[str], counts: list[int], flagged: list[int]) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.28 * len(classes) + 0.9))
    y = np.arange(len(classes))
    clean = np.array(counts) - np.array(flagged)
    ax.barh(y, clean, color=LIGHT, edgecolor=INK, linewidth=0.4, label="not flagged")
    ax.barh(y, flagged, left=clean, color=DARK, edgecolor=INK, linewidth=0.4, hatch="///",
            label="suspected label error")
    ax.set_yticks(y, plain(classes))
    ax.invert_yaxis()
    ax.set_xlabel("samples (given label)")
    ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8)
    return svg_text(fig)


def priority_histogram(priority: np.ndarray, flagged: np.ndarray, *, unit: str) -> str:
    """Histogram of relabel priority, flagged samples hatched; ``unit``: the scores' unit."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.4))
    bins = np.linspace(priority.min(), priority.max(), 41) if priority.size else 10
    ax.hist(priority[~flagged], bins=bins, color=LIGHT, edgecolor=INK, linewidth=0.3,
            label="not flagged")
    ax.hist(priority[flagged], bins=bins, color=DARK, edgecolor=INK, linewidth=0.3,
            hatch="///", label="suspected label error")
    ax.set_yscale("log")
    ax.set_xlabel(f"relabel priority = noisiness - ambiguity ({unit})")
    ax.set_ylabel("samples (log scale)")
    ax.legend(frameon=False, fontsize=8)
    return svg_text(fig)


def transition_heatmap(classes: list[str], matrix: list[list[float]]) -> str:
    plt = pyplot()
    m = np.array(matrix)
    size = 0.42 * len(classes) + 1.6
    fig, ax = plt.subplots(figsize=(size + 0.8, size))
    im = ax.imshow(m, cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), plain(classes), rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), plain(classes))
    ax.set_xlabel("likely true label")
    ax.set_ylabel("given label")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if m[i, j] >= 0.005:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                        color="white" if m[i, j] > 0.5 else INK)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the given label's samples")
    ax.spines[:].set_visible(True)
    return svg_text(fig)


def relabel_plan(plan: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    b = plan["budgets"]
    ax.plot(b, plan["expected_corrections_priority"], color=DARK, lw=2,
            label="review order (dqaudit)")
    ax.plot(b, plan["expected_corrections_random"], color=HATCH_GREY, lw=1.5, ls="--",
            label="review in random order")
    ax.axhline(plan["estimated_errors"], color=INK, lw=0.8, ls=":",
               label="estimated label errors")
    ax.set_xlabel("review budget (samples reviewed)")
    ax.set_ylabel("expected corrected labels")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    return svg_text(fig)


def clr_curves(curves: dict, metric: str = "accuracy") -> str:
    """Metric against injected corrupted-label ratio, mean with a ±1 std band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    x = 100 * np.array(curves["ratios"])
    mean = np.array(curves[metric]["mean"])
    std = np.array(curves[metric]["std"])
    ax.fill_between(x, mean - std, mean + std, color=LIGHT, label="±1 std over repeats")
    ax.plot(x, mean, color=DARK, lw=2, marker="o", ms=3, label=f"mean {metric}")
    ax.set_xlabel("injected corrupted-label ratio (%)")
    ax.set_ylabel(f"held-out {metric}")
    ax.legend(frameon=False, fontsize=8)
    return svg_text(fig)


def evaluation(models: list[dict]) -> str:
    """Per model: accuracy against the given labels (open marker) and corrected (filled) with
    its 95% interval or gold-free range."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(models) + 0.9))
    y = np.arange(len(models))
    for i, m in enumerate(models):
        a = m["accuracy"]
        ax.plot([100 * a["ci_low"], 100 * a["ci_high"]], [i, i], color=DARK, lw=2.5,
                solid_capstyle="butt")
        ax.plot(100 * a["estimate"], i, "o", color=DARK, ms=7,
                label="corrected" if i == 0 else None)
        ax.plot(100 * m["observed_accuracy"], i, "o", mfc="white", mec=INK, ms=7,
                label="against your labels" if i == 0 else None)
    ax.set_yticks(y, plain([m["name"] for m in models]))
    ax.invert_yaxis()
    ax.set_ylim(len(models) - 0.4, -0.6)
    ax.set_xlabel("accuracy (%)")
    ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8)
    return svg_text(fig)
