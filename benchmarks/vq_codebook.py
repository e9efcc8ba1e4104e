"""The VQ-SVAE of each spiking-vq model: how well it reconstructs test images through its codebook (the
ceiling of the sampler's quality), how much of the codebook the test set uses, and a grid of test images
above their reconstructions. With ``--fid N``: the reconstruction FID of the first N training images against
themselves (standard Inception features), through the codebook (the spiking-vq sampler's ceiling) and from the
continuous latents (the latent DDIM's ceiling: it decodes latents, not codes), float decoder.

Usage: python benchmarks/vq_codebook.py --out benchmarks/results/vq_codebook.md [-n 2000] [--fid 10000]
       [--model mnist-vq=runs/vq-mnist/model.pt ...] [--merge]   (default: the shipped spiking-vq models)
--merge keeps the rows of the table already at --out whose models this run does not measure (their own commands
are listed under the table); it refuses a table measured with another -n or --fid.
A run's VQ-stage checkpoint (runs/NAME/vq/model.pt, last.pt or resume.pt) is read too: its VQ-SVAE can be judged
before an SDID is trained on its tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _report import write_report
from model_table import kept_rows

from spikediff.checkpoint import SHIPPED_MODELS, load_model
from spikediff.data import load_images, to_model_range
from spikediff.images import save_grid


def load(ckpt: str):
    """(an object with the VQ-SVAE as ``.vq``, the checkpoint dict): a sampler, or a run's VQ-stage file (EMA)."""
    from types import SimpleNamespace

    from spikediff.checkpoint import load_raw, load_vq_stage, resolve

    if not str(load_raw(resolve(ckpt)).get("kind", "")).endswith(":vq"):
        model, _, raw = load_model(ckpt)
        return model, raw
    vq, raw = load_vq_stage(ckpt)
    return SimpleNamespace(vq=vq.requires_grad_(False)), {**raw, "train": raw.get("train") or raw["train_config"]}


@torch.no_grad()
def measure(model, data: str, n: int) -> dict:
    vq = model.vq
    x = to_model_range(load_images(data, "test", limit=n)[0])
    z = torch.cat([vq.encoder(x[i:i + 250]) for i in range(0, n, 250)])
    codes = vq.quantizer.indices(z)
    recon = torch.cat([vq.decode(codes[i:i + 250]) for i in range(0, n, 250)])
    counts = np.bincount(codes.reshape(-1).numpy(), minlength=vq.config.codebook_size)
    p = counts / counts.sum()
    return {"data": data, "n": n, "codebook_size": vq.config.codebook_size, "grid": list(codes.shape[1:]),
            "recon_mse": float(((recon - x) ** 2).mean()),  # images in [-1, 1]
            "recon_psnr_db": float(10 * np.log10(4.0 / ((recon - x) ** 2).mean(dim=(1, 2, 3))).mean()),
            "codes_used": int((counts > 0).sum()),
            "perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())),
            "quantization_mse": float(((vq.quantizer.lookup(codes) - z) ** 2).mean()),
            "_pair": torch.cat([x[:16], recon[:16]])}


@torch.no_grad()
def reconstruction_fid(model, data: str, n: int) -> dict:
    """FID and KID of the first n training images' reconstructions against those images: through the codebook
    and from the continuous latents."""
    from spikediff.metrics.fid import InceptionFeatures, reference_features, scores

    vq = model.vq
    x = to_model_range(load_images(data, "train", limit=n)[0])
    extractor = InceptionFeatures()
    reference = reference_features(data, "train", n, extractor=extractor)
    out = {}
    for how in ("codebook", "continuous"):
        parts = []
        for i in range(0, n, 250):
            z = vq.encoder(x[i:i + 250])
            z = vq.quantizer.lookup(vq.quantizer.indices(z)) if how == "codebook" else z
            parts.append(vq.decoder(z).clamp(-1, 1))
        recon = torch.cat(parts).numpy()
        feats = extractor((recon + 1) / 2, desc=f"inception features of {data} reconstructions ({how})")
        s = scores(feats, reference, kid_subsets=100)
        out[how] = {"fid": s["fid"], "kid": s["kid"]}
    return out


def check_sizes(rows: list, n: int, fid: int | None, path: Path) -> None:
    """--merge: the kept rows were measured with this run's -n and --fid, or the table would mix them."""
    for r in rows:
        had = (r["n"], (r.get("reconstruction_fid") or {}).get("n"))
        if had != (n, fid):
            sys.exit(f"--merge: {path}'s {r['model']} row was measured with -n {had[0]} and --fid {had[1]}, this run "
                     f"asks for -n {n} and --fid {fid}; measure it again or write another --out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/vq_codebook.md"))
    ap.add_argument("--model", action="append", metavar="NAME=CKPT")
    ap.add_argument("-n", type=int, default=2000, help="test images")
    ap.add_argument("--fid", type=int, help="also the reconstruction FID of this many training images")
    ap.add_argument("--merge", action="store_true", help="keep the table's rows of models this run does not measure")
    args = ap.parse_args()
    models = (dict(m.split("=", 1) for m in args.model) if args.model
              else {name: name for name in SHIPPED_MODELS if name.endswith("-vq")})
    rows, body = [], ["Reconstruction of the first N test images through the codebook (encode, nearest code, "
                      "spiking decoder; float model). PSNR with pixels in [-1, 1] (peak-to-peak 2). Perplexity: "
                      "exp(entropy) of the codes the test set uses.", "",
                      "| model | test images | MSE | PSNR | codes used | perplexity | quantization MSE |",
                      "|---|---:|---:|---:|---:|---:|---:|"]
    images_dir = args.out.parent / "vq_codebook"
    images_dir.mkdir(parents=True, exist_ok=True)
    for name, ckpt in models.items():
        model, raw = load(ckpt)
        r = measure(model, raw["train"]["data"], args.n)
        if args.fid:
            r["reconstruction_fid"] = {"n": args.fid, **reconstruction_fid(model, raw["train"]["data"], args.fid)}
        save_grid(r.pop("_pair"), images_dir / f"{name}.png", ncols=8)
        rows.append({"model": name, "checkpoint": str(ckpt), **r})
    if args.merge:
        kept = kept_rows(args.out, set(models), key=lambda r: r["model"])
        check_sizes(kept, args.n, args.fid, args.out.with_suffix(".json"))
        rows = kept + rows
        # a model already in the table keeps its place; the others follow
        order = {r["model"]: i for i, r in enumerate(json.loads(args.out.with_suffix(".json").read_text())["rows"])} \
            if kept else {}
        rows.sort(key=lambda r: order.get(r["model"], len(order)))
    for r in rows:
        body.append(f"| {r['model']} | {r['n']} | {r['recon_mse']:.4f} | {r['recon_psnr_db']:.1f} dB | "
                    f"{r['codes_used']} / {r['codebook_size']} | {r['perplexity']:.1f} | {r['quantization_mse']:.4f} |")
    if args.fid:
        body += ["", f"Reconstruction FID (KID x 1e-3) of the first {args.fid} training images against themselves, float "
                 "decoder: through the codebook (what the spiking-vq sampler can reach at best) and from the "
                 "continuous latents (what the latent DDIM sampler can reach at best):", "",
                 "| model | through the codebook | from the continuous latents |", "|---|---:|---:|"]
        for row in rows:
            f = row["reconstruction_fid"]
            body.append(f"| {row['model']} | {f['codebook']['fid']:.2f} ({f['codebook']['kid'] * 1e3:.2f}) | "
                        f"{f['continuous']['fid']:.2f} ({f['continuous']['kid'] * 1e3:.2f}) |")
    for row in rows:
        body += ["", f"{row['model']}: 16 test images (top two rows) and their reconstructions (bottom two):", "",
                 f"![{row['model']}](vq_codebook/{row['model']}.png)"]
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    if commands:
        body += ["", "Rows kept from earlier runs (--merge) were measured by:", ""] + [f"- `{c}`" for c in commands]
    write_report(args.out, "VQ-SVAE: reconstruction and codebook use", {"rows": rows}, body)


if __name__ == "__main__":
    main()
