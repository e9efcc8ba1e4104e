"""The lateral-selection ablation: the FSDDIM-style denoiser as it is, with the lateral matrix, with the
selection network, and with both, each trained with the same budget and options on one dataset, then
measured like the headline table (FID/KID of the deployed fixed-point model and the float one, spikes,
synaptic ops and energy per image, cores; speeds with --speeds, as they mean little while other jobs share
the machine, and the headline table has them).

Usage: python benchmarks/lateral_ablation.py --data mnist [--steps 3000] [--runs runs/ablation]
       [-n 1000 10000 --ref-n 5000 10000] [--backends sim torch] [--variants base lateral selection both]
       [--base CKPT] [--checkpoint VARIANT=CKPT ...] [--merge] [--speeds] [--device auto]
       [--out benchmarks/results/lateral_ablation_mnist.md]
       python benchmarks/lateral_ablation.py --data mnist --rewrite   (the table again from its JSON, measuring
       nothing: after a change in how tables are written)
Training resumes from what --runs holds (spikediff run directories, one per variant: <data>-<variant>), so
an interrupted ablation continues where it stopped; samples and features are cached as for the table, so a
rerun with a larger -n only generates what is missing. --checkpoint VARIANT=CKPT measures a checkpoint as that
variant instead of training it, after checking that it was trained with exactly the ablation's budget and the
variant's model (e.g. benchmarks/checkpoints/fashion-mnist-both.pt, committed so that its 10k row can be
measured again without an hour of training); --base CKPT is --checkpoint base=CKPT (e.g. the shipped model).
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from dataclasses import replace
from pathlib import Path

from model_table import kept_rows, measure, row_key, write_table

from spikediff import SpikediffError
from spikediff.checkpoint import load_raw, resolve
from spikediff.data.datasets import image_size
from spikediff.models import DenoiserConfig
from spikediff.train import TrainConfig, train

VARIANTS = {"base": {}, "lateral": {"lateral": True}, "selection": {"selection": True},
            "both": {"lateral": True, "selection": True}}
# what --base must share with the ablation's own base run (the rest, e.g. device or logging, does not
# change the model)
SAME_BUDGET = ("data", "steps", "batch_size", "lr", "warmup", "grad_clip", "ema_decay", "prediction_type",
               "num_train_timesteps", "seed", "data_limit")


def variant(row: dict) -> str:
    """The variant a row measures, from its model name ``<data>-<variant>``."""
    return row["model"].rsplit("-", 1)[1]


def variant_config(data: str, name: str, steps: int, batch_size: int = TrainConfig.batch_size,
                   device: str = "auto") -> TrainConfig:
    """How the ablation trains variant ``name``: the one budget, the variant's model flags."""
    return TrainConfig(data=data, steps=steps, batch_size=batch_size, device=device,
                       model=DenoiserConfig(**VARIANTS[name]))


def check_variant(name: str, path: Path, cfg: TrainConfig) -> Path:
    """``path`` if it was trained as ``cfg`` (``variant_config(..., name, ...)``) would train it; else a clear
    error."""
    raw = load_raw(path)
    option = f"--checkpoint {name}={path}"
    if raw.get("kind") is not None:
        raise SpikediffError(f"{option}: a {raw['kind']} checkpoint, not an FSDDIM denoiser")
    if isinstance(raw.get("model_config"), dict) and "arch" in raw["model_config"]:
        raise SpikediffError(f"{option}: a spiking U-Net ({raw['model_config']['arch']}), not the ablation's patch "
                             "denoiser (the shipped one is mnist-patch)")
    done = raw.get("train")
    if not isinstance(done, dict):
        raise SpikediffError(f"{option}: no record of its training run (the model.pt of a spikediff train run)")
    differ = [f"{k} {done.get(k)!r} (ablation: {getattr(cfg, k)!r})" for k in SAME_BUDGET
              if done.get(k) != getattr(cfg, k)]
    if done.get("step") != cfg.steps:
        differ.append(f"trained {done.get('step')} steps (ablation: {cfg.steps})")
    model = DenoiserConfig.from_dict(raw["model_config"]).effective()
    expected = replace(cfg.model, image_size=image_size(cfg.data)).effective()  # as train() sizes it
    differ += [f"model {k} {model.get(k)!r} (ablation: {v!r})" for k, v in expected.items() if model.get(k) != v]
    if differ:
        raise SpikediffError(f"{option}: not trained with the ablation's budget and options: " + ", ".join(differ))
    return path


def given_checkpoints(pairs: list, base: str | None) -> dict:
    """{variant: checkpoint} from ``--checkpoint VARIANT=CKPT`` pairs and ``--base CKPT``."""
    given = {"base": base} if base else {}
    for pair in pairs:
        name, sep, ckpt = pair.partition("=")
        if not sep or not ckpt or name not in VARIANTS:
            raise SpikediffError(f"--checkpoint {pair!r}: expected VARIANT=CKPT with VARIANT one of "
                                 + ", ".join(VARIANTS))
        if name in given:
            raise SpikediffError(f"--checkpoint {pair!r}: a checkpoint for {name} is already given")
        given[name] = ckpt
    return given


def plotted_n(rows: list) -> int | None:
    """The largest N at which every variant has a fixed-point FID: points at different N are not comparable."""
    sim = [r for r in rows if r["backend"] == "sim"]
    variants = {r["model"] for r in sim}
    common = [n for n in {r["n"] for r in sim} if {r["model"] for r in sim if r["n"] == n} == variants]
    return max(common) if common else None


def plot_fid_energy(rows: list, path: Path) -> bool:
    """Quality against cost, one point per variant: FID of the deployed model (sim) at the largest N that
    every measured variant has, against its Loihi 2 energy per image. False if there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = plotted_n(rows)
    if n is None:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 4))
    points = sorted((r for r in rows if r["backend"] == "sim" and r["n"] == n),
                    key=lambda r: r["energy_per_image_J"]["loihi2"])
    for i, r in enumerate(points):  # labels alternate above-left and below-right: neighbours may share a FID
        energy = r["energy_per_image_J"]["loihi2"] * 1e3
        ax.scatter(energy, r["fid"], s=40, color=f"C{list(VARIANTS).index(variant(r))}")
        above = i % 2 == 1
        ax.annotate(variant(r), (energy, r["fid"]), textcoords="offset points", xytext=(-5, 5) if above else (5, -13),
                    ha="right" if above else "left")
    ax.set_xlabel("energy per image on Loihi 2 (mJ, 20 DDIM steps)")
    ax.set_ylabel(f"FID, fixed point (N = {n})")
    ax.set_title(f"{points[0]['data']}: lower left is better")
    ax.margins(0.2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--steps", type=int, default=3000, help="training steps, the same for every variant")
    ap.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="train and measure only these (with --merge, their rows join the table's others)")
    ap.add_argument("--base", help="checkpoint (or shipped model name) to use as the base variant")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="VARIANT=CKPT",
                    help="measure CKPT as VARIANT instead of training it (checked against the ablation's options)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("-n", type=int, nargs="+", default=[1000], help="samples per FID (several: a row for each)")
    ap.add_argument("--ref-n", type=int, nargs="+", default=[5000], help="reference training images, one per -n")
    ap.add_argument("--backends", nargs="+", default=["sim", "torch"])
    ap.add_argument("--speeds", action="store_true",
                    help="also time every runtime (only meaningful on an otherwise idle machine)")
    ap.add_argument("--n-lava", type=int, default=2, help="images timed on Lava (with --speeds)")
    ap.add_argument("--merge", action="store_true", help="keep the table's rows that this run does not measure again")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/lateral_ablation_<data>.md")
    ap.add_argument("--rewrite", action="store_true", help="write the table again from its JSON; measure nothing")
    args = ap.parse_args()
    if len(args.n) != len(args.ref_n):
        ap.error(f"-n has {len(args.n)} values and --ref-n {len(args.ref_n)}: give one reference size per -n")
    out = args.out or Path(f"benchmarks/results/lateral_ablation_{args.data}.md")
    command = "python " + " ".join(sys.argv)

    checkpoints = {}
    if args.rewrite:
        if not out.with_suffix(".json").is_file():
            sys.exit(f"error: --rewrite: no {out.with_suffix('.json')} to write the table from")
        args.merge, args.variants = True, []
    try:
        given = given_checkpoints(args.checkpoint, args.base)
        for name in args.variants:
            cfg = variant_config(args.data, name, args.steps, args.batch_size, args.device)
            if name in given:
                print(f"== {name}: {check_variant(name, resolve(given[name]), cfg)}")
                checkpoints[name] = given[name]  # as given: a shipped model's name, not this machine's path
                continue
            print(f"== {name}: spikediff train --data {args.data} --steps {args.steps} "
                  + " ".join(f"--{k}" for k in VARIANTS[name]))
            checkpoints[name] = train(cfg, args.runs / f"{args.data}-{name}")
    except SpikediffError as exc:
        sys.exit(f"error: {exc}")
    rows, grids = [], {}
    for name, ckpt in checkpoints.items():
        got, images = measure(f"{args.data}-{name}", ckpt, args.n, args.ref_n, 20, args.backends, args.n_lava,
                              command, timing=args.speeds)
        rows, grids = rows + got, {**grids, **images}
    args.runs.mkdir(parents=True, exist_ok=True)
    with open(args.runs / f"{out.stem}.lock", "w") as lock:  # two ablation runs (variants in parallel) merge in turn
        fcntl.flock(lock, fcntl.LOCK_EX)
        if args.merge:
            rows = kept_rows(out, {row_key(r) for r in rows}) + rows
        rows.sort(key=lambda r: (list(VARIANTS).index(variant(r)), r["backend"], r["n"]))
        plot = out.parent / out.stem / "fid_energy.png"
        extra = ["", f"![FID against energy per image]({out.stem}/{plot.name})"] if plot_fid_energy(rows, plot) else []
        write_table(out, rows, grids, command,
                    f"Lateral-selection ablation, {args.data}, {args.steps} training steps each", extra)


if __name__ == "__main__":
    main()
