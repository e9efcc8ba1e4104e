"""Training curves (loss and firing rate per layer) from a run's log.jsonl, as a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_path

BASE_KEYS = {"step", "loss", "loss_avg", "rates", "elapsed_s"}


def read_log(log_path: str | Path, max_step: int | None = None) -> list:
    """The records of a log.jsonl, one per step in step order (the last record of a step wins: a run killed
    and resumed writes its steps again), at most ``max_step``; torn or foreign lines are skipped."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    by_step = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not (isinstance(record, dict) and isinstance(record.get("step"), int)
                and isinstance(record.get("rates"), dict)
                and all(isinstance(record.get(k), (int, float)) for k in ("loss", "loss_avg"))):
            continue
        if max_step is None or record["step"] <= max_step:
            by_step[record["step"]] = record
    return [by_step[k] for k in sorted(by_step)]


def plot_training_log(log_path: str | Path, png_path: str | Path, loss_name: str = "MSE loss",
                      title: str = "denoising loss") -> Path | None:
    """Write the plot atomically; returns None when the log has no records yet. Numbers a stage logs beside
    the loss (reconstruction error, codes in use, accuracy) get a panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    if not records:
        return None
    steps = [r["step"] for r in records]
    extras = [k for k, v in records[-1].items() if k not in BASE_KEYS and isinstance(v, (int, float))]
    fig, axes = plt.subplots(1, 2 + len(extras), figsize=(5 * (2 + len(extras)), 3.6), constrained_layout=True)
    ax_loss, ax_rate = axes[:2]
    ax_loss.plot(steps, [r["loss"] for r in records], color="0.75", lw=0.8, label="batch")
    ax_loss.plot(steps, [r["loss_avg"] for r in records], color="C0", lw=1.6, label="running mean")
    ax_loss.set(xlabel="step", ylabel=loss_name, yscale="log", title=title)
    ax_loss.legend(frameon=False)
    layers = list(records[-1]["rates"])
    many = len(layers) > 10  # a U-Net has dozens: one color each from a colormap, the legend beside the panel
    for i, layer in enumerate(layers):
        ax_rate.plot(steps, [r["rates"].get(layer, float("nan")) for r in records], lw=1.2, label=layer,
                     color=plt.get_cmap("turbo")(i / (len(layers) - 1)) if many else None)
    ax_rate.set(xlabel="step", ylabel="spikes per neuron per SNN step", title="firing rate", ylim=(0, None))
    if many:
        ax_rate.legend(frameon=False, fontsize=7, ncol=-(-len(layers) // 16), loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        ax_rate.legend(frameon=False, fontsize=8)
    for ax, key in zip(axes[2:], extras):
        ax.plot(steps, [r.get(key, float("nan")) for r in records], color="C2", lw=1.2)
        ax.set(xlabel="step", title=key.replace("_", " "))
    try:
        with atomic_path(png_path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return Path(png_path)
