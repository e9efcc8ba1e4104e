"""Figures of a hardware report: energy breakdown, spike raster, activity per denoising step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path

CATEGORY_COLORS = {"synaptic": "#4c72b0", "input synaptic": "#8da0cb", "input MAC": "#8da0cb",
                   "input messages": "#b3b3cc", "neuron": "#55a868", "routing": "#dd8452", "chip-to-chip": "#c44e52",
                   "static": "#937860"}


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def plot_energy(costs: list, path: Path) -> Path:
    """One panel per profile: energy per image by layer, stacked by category (static as its own bar)."""
    fig, axes = _figure(1, len(costs), figsize=(4.6 * len(costs), 3.6), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        layers = list(cost["by_layer_J"])
        rows = layers + (["(static)"] if "static" in cost["by_category_J"] else [])
        left = np.zeros(len(rows))
        for cat, color in CATEGORY_COLORS.items():
            vals = np.array([cost["by_layer_J"].get(k, {}).get(cat, 0.0) for k in layers]
                            + ([cost["by_category_J"]["static"] if cat == "static" else 0.0]
                               if "static" in cost["by_category_J"] else [])) * 1e6
            if vals.any():
                ax.barh(rows, vals, left=left, color=color, label=cat)
                left += vals
        ax.invert_yaxis()
        ax.set_xlabel("energy per image (µJ)")
        lo, hi = cost.get("range", {}).get("energy_per_image_J", (None, None))
        bounds = f" [{lo * 1e3:.3g}, {hi * 1e3:.3g}]" if lo is not None else ""
        ax.set_title(f"{cost['profile']}: {cost['energy_per_image_J'] * 1e3:.3g}{bounds} mJ/image", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_raster(raster: dict, num_steps: int, path: Path, per_layer: int = 8, steps_shown: int = 3) -> Path:
    """Spikes of a few neurons of each layer (image 0, first denoising steps), picked at evenly spaced ranks
    of activity among the neurons that fire at all, so that quiet and busy ones both show."""
    fig, ax = _figure(figsize=(9, 0.11 * (per_layer + 1) * len(raster) + 1.2))
    row, ticks, labels = 0, [], []
    span = num_steps * steps_shown
    for i, (name, spikes) in enumerate(raster.items()):
        spikes = np.asarray(spikes)[:span]
        counts = spikes.sum(0)
        firing = np.argsort(counts, kind="stable")[np.sort(counts) > 0]
        top = firing[np.unique(np.linspace(0, len(firing) - 1, min(per_layer, len(firing))).round().astype(int))] \
            if len(firing) else np.array([], int)
        for j, neuron in enumerate(top):
            t = np.nonzero(spikes[:, neuron])[0]
            ax.scatter(t, np.full(len(t), row + j), s=10, marker="|", color=f"C{i}")
        ticks.append(row + (len(top) - 1) / 2)
        labels.append(name)
        row += len(top) + 1
    for k in range(1, steps_shown):
        ax.axvline(k * num_steps - 0.5, color="0.7", lw=0.8)
    ax.set_yticks(ticks, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"SNN step (T = {num_steps} per denoising step; first {steps_shown} denoising steps, image 0)")
    ax.set_xticks(np.arange(0, span + 1, max(1, num_steps // 2)))
    ax.set_title(f"spike raster: {per_layer} neurons per layer, from the quietest to the busiest that fire",
                 fontsize=10)
    return _save(fig, path)


def plot_activity(events, path: Path) -> Path:
    """Firing rate of each layer at each denoising step (mean over images)."""
    fig, ax = _figure(figsize=(6.4, 3.6))
    for name, per_step in events.spikes_per_step.items():
        rate = np.asarray(per_step) / (events.neurons[name] * events.num_steps)
        ax.plot(np.arange(1, len(rate) + 1), rate, marker=".", label=name)
    ax.set_xlabel("denoising step (from pure noise)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("spikes per neuron per SNN step")
    ax.set_title("activity per denoising step", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
