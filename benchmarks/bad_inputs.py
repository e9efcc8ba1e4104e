"""Generated bad inputs run through every command: how many give a clean error.

A clean error is: exit status 2, exactly one line on stderr starting ``spikediff: error:``, no traceback, and
nothing written: no ``.part`` file and no output, the work folder exactly as it was. The inputs are
generated per class (truncated, random and text files, wrong types and missing entries in otherwise valid
checkpoints of all three kinds and of their resume files, non-finite weights and options, huge declared sizes,
the wrong file of a run, FIFOs and other special files, bad numbers and choices on the command line, outputs
that cannot be written, bad hardware profiles), from a seeded generator, and each is run through the commands
that read it (``sample``, ``export``, ``report``, ``eval``, ``train``): in this process through
``spikediff.cli.main``, a share of them in a fresh interpreter (``python -m spikediff``).

    python benchmarks/bad_inputs.py                  # the committed results: benchmarks/results/bad_inputs.md
    python benchmarks/bad_inputs.py --per-class 3    # a small set (what tests/test_reliability_fuzz.py runs)

``tests/test_reliability_fuzz.py`` imports the generators from here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from spikediff.checkpoint import SHIPPED_MODELS  # noqa: E402
from spikediff.cli import main as cli_main  # noqa: E402

HUGE = (10 ** 9, 10 ** 12, 10 ** 30)  # widths no machine holds; every one is far above any RAM
# options whose size scales the weights (num_steps and blocks do not, or only through Python loops: left out)
SIZE_OPTIONS = {"fsddim": ("channels", "hidden", "time_features", "image_size"),
                "vq": ("channels", "codebook_size", "code_dim", "image_size"),
                "sdid": ("channels", "hidden", "grid", "codebook_size"),
                "denoiser": ("channels", "hidden", "latent_channels", "time_channels", "grid")}


@dataclass
class Case:
    """One bad input run through one command: ``argv`` for ``spikediff``, in work folder ``work``."""

    cls: str
    name: str
    argv: list
    work: Path
    subprocess: bool = False
    expect: str = ""  # a word the error line must hold (empty: any clean error)


@dataclass
class Result:
    case: Case
    status: int
    stderr: str
    seconds: float
    problems: list = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


# -- sources: valid checkpoints of every kind, which the generators break ----------------------------------


def make_sources(folder: Path) -> dict:
    """Valid inputs to break: a 2-step fsddim run on digits (model.pt, last.pt, resume.pt), the shipped
    spiking-vq sampler, and a small latent-ddim sampler on the shipped autoencoder (and its resume.pt)."""
    from spikediff.models import DenoiserConfig
    from spikediff.train import TrainConfig, train

    folder.mkdir(parents=True, exist_ok=True)
    run = folder / "fsddim-run"
    train(TrainConfig(data="digits", steps=2, batch_size=4, model=DenoiserConfig(channels=4, hidden=16)), run,
          progress=False, log=lambda _m: None)
    shutil.copy(SHIPPED_MODELS["mnist-vq"], folder / "spiking-vq.pt")
    latent = _latent_checkpoint()
    torch.save(latent, folder / "latent-ddim.pt")
    resume = {k: v for k, v in latent.items() if k != "train"}
    half = {k: v.half() if v.is_floating_point() else v for k, v in latent["model"].items()}
    torch.save({**resume, "model": half, "ema_half": dict(half), "ema_updates": 2, "generator": torch.Generator().get_state(),
                "step": 2, "train_config": {}}, folder / "latent-resume.pt")
    return {"fsddim": run / "model.pt", "fsddim-last": run / "last.pt", "fsddim-resume": run / "resume.pt",
            "spiking-vq": folder / "spiking-vq.pt", "latent-ddim": folder / "latent-ddim.pt",
            "latent-resume": folder / "latent-resume.pt"}


def _latent_checkpoint() -> dict:
    from spikediff.checkpoint import FORMAT, VERSION
    from spikediff.models.latent_denoiser import LatentDenoiserConfig, SpikingLatentDenoiser

    vq = torch.load(SHIPPED_MODELS["mnist-vq"], weights_only=True)
    vcfg = vq["model_config"]["vq"]
    grid = vcfg["image_size"] // 4
    cfg = LatentDenoiserConfig(latent_channels=vcfg["code_dim"], grid=grid, channels=8, blocks=1, hidden=16,
                               time_channels=8)
    torch.manual_seed(0)
    model = SpikingLatentDenoiser(cfg)
    return {"format": FORMAT, "version": VERSION, "kind": "latent-ddim",
            "model_config": {"vq": vcfg, "denoiser": cfg.to_dict()},
            "diffusion": {"num_train_timesteps": 1000, "prediction_type": "v_prediction"},
            "latent": {"mean": [0.0] * cfg.latent_channels, "std": [1.0] * cfg.latent_channels, "snap": False,
                       "autoencoder": "mnist-vq"},
            "autoencoder": vq["model"]["vq"], "model": model.state_dict(), "train": {"data": "mnist", "step": 0}}


# -- bad checkpoints ---------------------------------------------------------------------------------------


def _floating(state: dict, prefix: str = "") -> list:
    """(path of keys, tensor) of every floating-point tensor in a nested state dict."""
    found = []
    for k, v in state.items():
        if isinstance(v, dict):
            found += [((k, *p), t) for p, t in _floating(v)]
        elif isinstance(v, torch.Tensor) and v.is_floating_point() and v.numel():
            found.append(((k,), v))
    return found


def _configs(ckpt: dict) -> list:
    """(label, dict) of every model config in a checkpoint (fsddim: one; spiking-vq, latent-ddim: two)."""
    cfg = ckpt["model_config"]
    if ckpt.get("kind") is None:
        return [("fsddim", cfg)]
    return [(k, v) for k, v in cfg.items() if isinstance(v, dict)]


#: entry -> values of a type it can never have (checked in every checkpoint that holds the entry, or gains it)
WRONG_TYPES = {**{key: ["cosine", [1, 2], 7, 2.5, None] for key in (
    "model_config", "diffusion", "model", "train", "ema_full", "ema_half", "latent", "autoencoder", "optimizer",
    "train_config")},
    "kind": [7, [1], 2.5, "bogus-kind"], "step": ["x", -1, 2.5, None], "ema_updates": ["x", -3],
    "generator": ["x", 3], "format": ["nir", None, 1], "version": [2, "1", None, 0]}


def checkpoint_variants(sources: dict, rng: random.Random, n: int) -> list:
    """(class, name, builder) triples; a builder writes the bad checkpoint to a path. ``n`` random variants of
    each random class."""
    out = []
    kinds = [k for k in sources if not k.endswith(("-last", "-resume"))]
    for _ in range(n):
        src = sources[rng.choice(list(sources))]
        data = src.read_bytes()
        cut = rng.randrange(0, len(data))
        out.append(("checkpoint: truncated", f"{src.name} cut at {cut}/{len(data)}", _writer(data[:cut])))
        junk = rng.randbytes(rng.randrange(1, 4096))
        out.append(("checkpoint: random bytes, text, empty", f"{len(junk)} random bytes", _writer(junk)))
    out.append(("checkpoint: random bytes, text, empty", "empty", _writer(b"")))
    out.append(("checkpoint: random bytes, text, empty", "text", _writer(b"hello, I am not a checkpoint\n" * 20)))
    out.append(("checkpoint: random bytes, text, empty", "zip header only", _writer(b"PK\x03\x04" + b"\0" * 40)))
    for name, payload in (("plain pickle (protocol 4)", pickle.dumps({"model": [1.0]}, protocol=4)),
                          ("plain pickle (protocol 2)", pickle.dumps({"model": [1.0]}, protocol=2)),
                          ("torch list", _torch_bytes([1, 2, 3])), ("torch tensor", _torch_bytes(torch.zeros(3))),
                          ("torch dict without format", _torch_bytes({"model": {}, "model_config": {}})),
                          ("other format", _torch_bytes({"format": "nir", "version": 1}))):
        out.append(("checkpoint: not a spikediff file", name, _writer(payload)))

    def mutated(kind, mutate, desc, cls):
        ckpt = torch.load(sources[kind], weights_only=True)
        mutate(ckpt)
        out.append((cls, f"{kind}: {desc}", _writer(_torch_bytes(ckpt))))

    for _ in range(n):
        kind = rng.choice(kinds + ["fsddim-last", "fsddim-resume", "latent-resume"])
        ckpt = torch.load(sources[kind], weights_only=True)
        # wrong type of an entry
        key = rng.choice(sorted(WRONG_TYPES))
        value = rng.choice(WRONG_TYPES[key])
        mutated(kind, lambda c, k=key, v=value: c.__setitem__(k, v), f"{key} = {value!r}",
                "checkpoint: wrong type of an entry")
        # a missing entry
        key = rng.choice(["model_config", "diffusion", "model"] + (["latent", "autoencoder"] if kind.startswith(
            "latent") else []))
        mutated(kind, lambda c, k=key: c.pop(k), f"no {key}", "checkpoint: missing entry")
        # a model option of the wrong type, or impossible
        label, cfg = rng.choice(_configs(ckpt))
        option = rng.choice(sorted(cfg))
        bad = _bad_option_value(option, cfg[option], rng)
        mutated(kind, lambda c, lb=label, o=option, b=bad: _set_option(c, lb, o, b), f"{label}.{option} = {bad!r}",
                "checkpoint: impossible model option")
        # a non-finite weight
        path, tensor = rng.choice(_floating(ckpt["model"]))
        where = tuple(rng.randrange(s) for s in tensor.shape)
        number = rng.choice([math.nan, math.inf, -math.inf])
        mutated(kind, lambda c, p=path, w=where, x=number: _set_weight(c, p, w, x),
                f"model.{'.'.join(p for p in path)}{list(where)} = {number}", "checkpoint: non-finite weight")
        # a huge declared size
        label, cfg = rng.choice(_configs(ckpt))
        option = rng.choice([o for o in SIZE_OPTIONS[label] if o in cfg])
        size = rng.choice(HUGE)
        size = size - size % 4 if option == "image_size" else size - size % 2 if option == "time_features" else size
        mutated(kind, lambda c, lb=label, o=option, s=size: _set_option(c, lb, o, s), f"{label}.{option} = {size:.0e}",
                "checkpoint: huge declared size")
        # weights that do not fit the declared model
        path, tensor = rng.choice(_floating(ckpt["model"]))
        how = rng.choice(["shape", "missing", "extra", "not a tensor"])
        mutated(kind, lambda c, p=path, h=how: _break_weights(c, p, h), f"model.{'.'.join(path)}: {how}",
                "checkpoint: weights that do not fit")
    return out


def _bad_option_value(option: str, value, rng: random.Random):
    """A value option ``option`` (now ``value``) can never take."""
    if isinstance(value, bool):
        return rng.choice([1, "yes", None, 0.5])
    if isinstance(value, int):
        return rng.choice(["12", 2.5, True, None, [value], -abs(value) - 1, 0] if option not in (
            "time_features",) else ["12", 2.5, 3, -2, None])
    if isinstance(value, float):
        bad = [math.nan, math.inf, -math.inf, "0.5", True, None]
        if option in ("threshold", "max_period"):
            bad += [0.0, -1.0]
        if option in ("beta", "readout_alpha"):
            bad += [1.5, -0.25, 0.7]
        if option in ("local_weight", "lateral_decay", "commitment"):
            bad += [-1.0]
        return rng.choice(bad)
    return rng.choice([7, None, [1]])


def _set_option(ckpt: dict, label: str, option: str, value) -> None:
    cfg = ckpt["model_config"] if label == "fsddim" else ckpt["model_config"][label]
    cfg[option] = value


def _set_weight(ckpt: dict, path: tuple, where: tuple, value: float) -> None:
    state = ckpt["model"]
    for k in path[:-1]:
        state = state[k]
    state[path[-1]][where] = value


def _break_weights(ckpt: dict, path: tuple, how: str) -> None:
    """Break one weight, in the raw weights and in the EMA copy a sampler would take instead."""
    states = [ckpt["model"]] + [s for s in (ckpt.get("ema_full", {}).get("module"), ckpt.get("ema_half")) if s]
    for state in states:
        for k in path[:-1]:
            state = state[k]
        name = path[-1]
        if how == "shape":
            state[name] = torch.zeros([s + 1 for s in state[name].shape] or [2])
        elif how == "missing":
            del state[name]
        elif how == "extra":
            state["surplus.weight"] = torch.zeros(3)
        else:
            state[name] = "weights"


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _writer(data: bytes):
    def write(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return write


# -- commands ----------------------------------------------------------------------------------------------


def checkpoint_commands(ckpt: Path, out: Path) -> list:
    """Every command that reads a checkpoint, its outputs in ``out`` (which must stay empty)."""
    return [["sample", ckpt, "-n", "1", "--steps", "1", "-o", out / "grid.png"],
            ["export", ckpt, "-o", out / "model.nir"],
            ["report", ckpt, "-n", "1", "--steps", "1", "--no-float", "-o", out / "report"],
            ["eval", ckpt, "-n", "1", "--ref-n", "1", "--steps", "1", "-o", out / "eval"]]


def train_commands(ckpt: Path, out: Path) -> list:
    """The ways ``train`` reads a checkpoint: a run's last.pt, and latent-ddim's three inputs."""
    run = out / "run"
    return [["train", "--data", "digits", "--channels", "4", "--hidden", "16", "--batch-size", "4", "--steps", "3",
             "--out", run, "--quiet", "@last.pt", ckpt],
            ["train", "--model", "latent-ddim", "--data", "mnist", "--autoencoder", ckpt, "--out", run, "--quiet"],
            ["train", "--model", "latent-ddim", "--data", "mnist", "--init", ckpt, "--out", run, "--quiet"],
            ["train", "--model", "latent-ddim", "--data", "mnist", "--resume-from", ckpt, "--out", run, "--quiet"]]


def checkpoint_cases(folder: Path, sources: dict, rng: random.Random, n: int) -> list:
    """Every bad checkpoint through every command that reads one."""
    cases = []
    for i, (cls, name, write) in enumerate(checkpoint_variants(sources, rng, n)):
        work = folder / f"ckpt-{i:04d}"
        (work / "in").mkdir(parents=True)
        path = write(work / "in" / "bad.pt")
        for argv in checkpoint_commands(path, work / "out") + train_commands(path, work / "out"):
            cases.append(Case(cls, name, argv, work))
    cases += special_file_cases(folder / "special", sources)
    cases += wrong_file_cases(folder / "wrong-file", sources)
    return cases


def special_file_cases(folder: Path, sources: dict) -> list:
    """FIFOs (which would block an open), a socket, a device, a directory, symbolic links to them."""
    folder.mkdir(parents=True)
    fifo = folder / "fifo.pt"
    os.mkfifo(fifo)
    sock = folder / "socket.pt"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()  # the file stays
    (folder / "dir.pt").mkdir()
    (folder / "link-to-fifo.pt").symlink_to(fifo)
    (folder / "broken-link.pt").symlink_to(folder / "nowhere.pt")
    fifo_toml = folder / "fifo.toml"
    os.mkfifo(fifo_toml)
    cases = []
    for name in ("fifo.pt", "socket.pt", "dir.pt", "link-to-fifo.pt", "broken-link.pt", "/dev/zero", "/dev/null"):
        path = folder / name if not name.startswith("/") else Path(name)
        work = folder / f"work-{name.strip('/').replace('/', '-')}"
        work.mkdir()
        for argv in checkpoint_commands(path, work / "out") + train_commands(path, work / "out"):
            if "@last.pt" in argv:
                continue  # a run's last.pt is the trainer's own file
            cases.append(Case("special file as input", name, argv, work))
    work = folder / "work-profile"
    work.mkdir()
    cases.append(Case("special file as input", "fifo.toml profile",
                      ["report", sources["fsddim"], "--profile", fifo_toml, "-o", work / "out"], work))
    return cases


def wrong_file_cases(folder: Path, sources: dict) -> list:
    """A run's files swapped: a sampler or resume file where last.pt is expected, another model's last.pt,
    a last.pt or another model's resume.pt where --resume-from wants a latent-ddim resume.pt, a sampler of
    another kind for --init or --autoencoder."""
    cases = []
    for i, (what, source) in enumerate((("model.pt as last.pt", "fsddim"), ("resume.pt as last.pt", "fsddim-resume"),
                                        ("spiking-vq sampler as last.pt", "spiking-vq"),
                                        ("latent-ddim sampler as last.pt", "latent-ddim"),
                                        ("latent resume.pt as last.pt", "latent-resume"))):
        work = folder / f"last-{i}"
        (work / "in").mkdir(parents=True)
        path = work / "in" / "last.pt"
        shutil.copy(sources[source], path)
        cases.append(Case("checkpoint: wrong file of a run", what, train_commands(path, work / "out")[0], work))
    for i, (what, option, source) in enumerate((
            ("last.pt as --resume-from", "--resume-from", "fsddim-last"),
            ("fsddim resume.pt as --resume-from", "--resume-from", "fsddim-resume"),
            ("latent sampler as --resume-from", "--resume-from", "latent-ddim"),
            ("fsddim sampler as --init", "--init", "fsddim"), ("spiking-vq sampler as --init", "--init", "spiking-vq"),
            ("fsddim sampler as --autoencoder", "--autoencoder", "fsddim"),
            ("latent sampler as --autoencoder", "--autoencoder", "latent-ddim"))):
        work = folder / f"option-{i}"
        work.mkdir(parents=True)
        cases.append(Case("checkpoint: wrong file of a run", what,
                          ["train", "--model", "latent-ddim", "--data", "mnist", option, sources[source], "--out",
                           work / "out", "--quiet"], work))
    return cases


#: option -> values it can never take (per kind of option)
POSITIVE_INT = ["0", "-1", "1.5", "nan", "abc", "", "1e3"]
BAD_NUMBERS = {
    "positive int": POSITIVE_INT, "non-negative int": ["-1", "2.5", "abc"],
    "seed": ["-1", str(2 ** 64), "1.5", "abc"],
    "positive float": ["0", "-1", "nan", "inf", "-inf", "abc", "1e999"],
    "non-negative float": ["-1", "nan", "inf", "-1e-9"],
    "(0, 1)": ["0", "1", "nan", "inf", "2", "-0.1"], "[0, 1)": ["1", "-0.1", "nan", "inf"],
    "decay": ["0.7", "1.5", "-0.25", "nan", "inf"],
}
OPTIONS = {  # command -> [(option, kind of value)]
    "train": [("--steps", "positive int"), ("--batch-size", "positive int"), ("--lr", "(0, 1)"),
              ("--warmup", "non-negative int"), ("--ema-decay", "[0, 1)"), ("--channels", "positive int"),
              ("--hidden", "positive int"), ("--snn-steps", "positive int"), ("--time-features", "positive int"),
              ("--beta", "decay"), ("--threshold", "positive float"), ("--readout-alpha", "decay"),
              ("--vq-steps", "positive int"), ("--codebook-size", "positive int"), ("--code-dim", "positive int"),
              ("--sdid-channels", "positive int"), ("--blocks", "positive int"), ("--decay-steps", "positive int"),
              ("--lr-min", "[0, 1)"), ("--groups", "positive int"), ("--local-weight", "non-negative float"),
              ("--lateral-decay", "non-negative float"), ("--seed", "seed"), ("--data-limit", "positive int"),
              ("--checkpoint-every", "positive int")],
    "sample": [("-n", "positive int"), ("--steps", "positive int"), ("--temperature", "positive float"),
               ("--seed", "seed"), ("--batch-size", "positive int")],
    "export": [],
    "report": [("-n", "positive int"), ("--steps", "positive int"), ("--batch-size", "positive int"),
               ("--seed", "seed")],
    "eval": [("-n", "positive int"), ("--steps", "positive int"), ("--ref-n", "positive int"), ("--seed", "seed"),
             ("--temperature", "positive float")],
}
CHOICES = {"train": ["--model", "--data", "--prediction", "--mask-schedule"], "sample": ["--backend", "--lava-target"],
           "eval": ["--backend", "--data", "--ref-split"], "report": [], "export": []}


def _base(command: str, sources: dict, out: Path) -> list:
    ckpt = sources["fsddim"]
    return {"train": ["train", "--data", "digits", "--out", out / "run"],
            "sample": ["sample", ckpt, "-o", out / "grid.png"], "export": ["export", ckpt, "-o", out / "m.nir"],
            "report": ["report", ckpt, "-o", out / "report"], "eval": ["eval", ckpt, "-o", out / "eval"]}[command]


def option_cases(folder: Path, sources: dict, rng: random.Random, n: int) -> list:
    """Bad numbers and choices for every option of every command (``n`` values per option at most), huge
    sizes, malformed usage; the rest of the command line valid."""
    cases, i = [], 0

    def add(cls, name, command, extra, subprocess_run=False):
        nonlocal i
        work = folder / f"opt-{i:04d}"
        work.mkdir(parents=True)
        i += 1
        cases.append(Case(cls, name, _base(command, sources, work / "out") + extra, work, subprocess_run))

    for command, options in OPTIONS.items():
        for option, kind in options:
            for value in rng.sample(BAD_NUMBERS[kind], min(n, len(BAD_NUMBERS[kind]))):
                add("option: bad number", f"{command} {option} {value!r}", command, [option, value])
        for option in CHOICES[command]:
            add("option: bad choice or usage", f"{command} {option} bogus", command, [option, "bogus"])
    for command, extra in (("train", ["--channels", "100000000"]), ("train", ["--hidden", str(10 ** 12)]),
                           ("train", ["--model", "spiking-vq", "--codebook-size", str(10 ** 10)]),
                           ("train", ["--model", "latent-ddim", "--data", "mnist", "--channels", str(10 ** 9)]),
                           ("train", ["--batch-size", str(10 ** 13)]), ("sample", ["-n", str(10 ** 13)]),
                           ("report", ["-n", str(10 ** 13)]), ("eval", ["-n", str(10 ** 13)])):
        add("option: huge size", f"{command} {' '.join(extra)}", command, extra)
    for command, extra in (("sample", ["--bogus"]), ("sample", ["-n"]), ("export", ["a.pt", "b.pt"]),
                           ("train", ["--lateral", "--model", "spiking-vq"]), ("train", ["--init", "x.pt"]),
                           ("sample", ["--fixed-point"]), ("sample", ["--temperature", "0.5"]),
                           ("train", ["--device", "bogus"]), ("sample", ["--device", "cuda:7"])):
        add("option: bad choice or usage", " ".join([command] + extra), command, extra)
    for name, argv in (("no command", []), ("unknown command", ["bogus"]), ("train without --out", ["train"]),
                       ("data without subcommand", ["data"])):
        work = folder / f"opt-{i:04d}"
        work.mkdir(parents=True)
        i += 1
        cases.append(Case("option: bad choice or usage", name, argv, work))
    return cases


def output_cases(folder: Path, sources: dict) -> list:
    """Outputs that cannot be written, checked before any work: a directory where a file goes, a file where a
    folder goes or on the way, an unwritable folder, a wrong suffix."""
    ckpt = sources["fsddim"]
    cases = []
    for i, (name, make) in enumerate((
            ("sample -o an existing directory named .png", lambda w: ["sample", ckpt, "-o", _mkdir(w / "x.png")]),
            ("sample -o under a file", lambda w: ["sample", ckpt, "-o", _file(w / "f") / "x.png"]),
            ("sample -o a folder under a file", lambda w: ["sample", ckpt, "-o", _file(w / "f") / "sub"]),
            ("sample -o in an unwritable folder", lambda w: ["sample", ckpt, "-o", _unwritable(w) / "x.png"]),
            ("sample -o .jpg", lambda w: ["sample", ckpt, "-o", w / "x.jpg"]),
            ("sample --backend lava, its counters path a directory",
             lambda w: ["sample", ckpt, "--backend", "lava", "-o", _mkdir(w / "x.counters.json").parent / "x.png"]),
            ("export -o a directory named .nir", lambda w: ["export", ckpt, "-o", _mkdir(w / "m.nir")]),
            ("export -o .txt", lambda w: ["export", ckpt, "-o", w / "m.txt"]),
            ("export --onnx .nir", lambda w: ["export", ckpt, "-o", w / "m.nir", "--onnx", w / "m.nir"]),
            ("export --netx-dir a file", lambda w: ["export", ckpt, "-o", w / "m.nir", "--netx-dir", _file(w / "f")]),
            ("export --onnx-twin in an unwritable folder",
             lambda w: ["export", ckpt, "-o", w / "m.nir", "--onnx-twin", _unwritable(w) / "t.onnx"]),
            ("report -o a file", lambda w: ["report", ckpt, "-o", _file(w / "f")]),
            ("report -o under a file", lambda w: ["report", ckpt, "-o", _file(w / "f") / "r"]),
            ("eval -o a file", lambda w: ["eval", ckpt, "-o", _file(w / "f")]),
            ("eval -o in an unwritable folder", lambda w: ["eval", ckpt, "-o", _unwritable(w) / "e"]),
            ("train --out a file", lambda w: ["train", "--data", "digits", "--out", _file(w / "f")]),
            ("train --out under a file", lambda w: ["train", "--data", "digits", "--out", _file(w / "f") / "run"]))):
        work = folder / f"out-{i:03d}"
        work.mkdir(parents=True)
        cases.append(Case("output path", name, make(work), work))
    return cases


def profile_cases(folder: Path, sources: dict) -> list:
    """Hardware profiles (``report --profile``, ``--set``) with impossible numbers or a bad form."""
    ckpt = sources["fsddim"]
    head = 'name = "mine"\n'
    bodies = {"NaN value": "value = nan", "infinite value": "value = inf", "negative power": "value = -0.5",
              "value a string": 'value = "1"', "value a table": "value = {a = 1}"}
    cases = []
    for i, (name, line) in enumerate(bodies.items()):
        work = folder / f"profile-{i:03d}"
        work.mkdir(parents=True)
        path = work / "mine.toml"
        path.write_text(head + f'[quantity.static_power]\n{line}\nunit = "W"\nsource = "me"\n')
        cases.append(Case("profile: bad file or --set", f"profile with a {name}",
                          ["report", ckpt, "--profile", path, "-o", work / "out"], work))
    forms = {"zero cores per chip": "[quantity.cores_per_chip]\nvalue = 0\nunit = \"cores\"\nsource = \"me\"\n",
             "half a neuron per core": "[quantity.max_neurons_per_core]\nvalue = 0.5\nunit = \"neurons\"\n"
                                       "source = \"me\"\n",
             "quantity not a table": "quantity = 5\n", "name missing": None, "not TOML": "= = =\n",
             "binary file": b"\xff\xfe\x00 binary"}
    for j, (name, body) in enumerate(forms.items()):
        work = folder / f"profile-form-{j:03d}"
        work.mkdir(parents=True)
        path = work / "mine.toml"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text("" if body is None else head + body)
        cases.append(Case("profile: bad file or --set", f"profile: {name}",
                          ["report", ckpt, "--profile", path, "-o", work / "out"], work))
    for k, setting in enumerate(("loihi2.static_power=-1", "loihi2.static_power=nan", "loihi2.static_power=inf",
                                 "loihi2.cores_per_chip=0", "loihi2.cores_per_chip=1.5", "loihi2.bogus=1",
                                 "static_power=1", "loihi2.static_power=", "nope.static_power=1")):
        work = folder / f"set-{k:03d}"
        work.mkdir(parents=True)
        cases.append(Case("profile: bad file or --set", f"--set {setting}",
                          ["report", ckpt, "--set", setting, "-o", work / "out"], work))
    return cases


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file(path: Path) -> Path:
    path.write_text("a file\n")
    return path


def _unwritable(work: Path) -> Path:
    """A folder no file can be created in: /proc for root (whom permissions do not stop), else mode 0o500."""
    if os.geteuid() == 0:
        return Path("/proc/spikediff-bad-inputs")
    folder = _mkdir(work / "read-only")
    folder.chmod(0o500)
    return folder


def all_cases(folder: Path, rng: random.Random, per_class: int) -> tuple:
    """(sources, cases): every generator, ``per_class`` random variants of each random class."""
    sources = make_sources(folder / "sources")
    cases = (checkpoint_cases(folder / "checkpoints", sources, rng, per_class)
             + option_cases(folder / "options", sources, rng, per_class)
             + output_cases(folder / "outputs", sources) + profile_cases(folder / "profiles", sources))
    return sources, cases


# -- running and judging -----------------------------------------------------------------------------------


def _argv(case: Case) -> list:
    """The command line, with ``@last.pt FILE`` (train on a run holding FILE as its last.pt) set up."""
    argv = [str(a) for a in case.argv]
    if "@last.pt" in argv:
        at = argv.index("@last.pt")
        source = Path(argv[at + 1])
        run = Path(argv[argv.index("--out") + 1])
        run.mkdir(parents=True, exist_ok=True)
        if source.exists() and not source.is_dir():
            shutil.copy(source, run / "last.pt")
        (run / ".lock").write_text("")
        del argv[at:at + 2]
    return argv


def snapshot(folder: Path) -> dict:
    """relative path -> content digest of every file under ``folder`` (special files by their kind; a lock
    file's content, the pid of its last holder, left out)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink() or not path.exists():
            found[rel] = "link"
        elif path.is_dir():
            found[rel] = "dir"
        elif not path.is_file():
            found[rel] = "special"
        elif path.name == ".lock":
            found[rel] = "lock"
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_in_process(argv: list, timeout: float = 60.0) -> tuple:
    """(status, stdout, stderr) of ``spikediff.cli.main(argv)`` here; SIGALRM ends a call that blocks."""
    out, err = io.StringIO(), io.StringIO()

    def too_long(signum, frame):
        raise TimeoutError(f"blocked for {timeout} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                status = cli_main(argv)
            except BaseException as exc:  # noqa: BLE001 - any escape is what we are counting
                import traceback

                traceback.print_exc()
                status = f"raised {type(exc).__name__}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return status, out.getvalue(), err.getvalue()


def run_subprocess(argv: list, timeout: float = 120.0) -> tuple:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        res = subprocess.run([sys.executable, "-m", "spikediff", *argv], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timed out", "", f"blocked for {timeout} s"
    return res.returncode, res.stdout, res.stderr


def run_case(case: Case, timeout: float = 60.0) -> Result:
    argv = _argv(case)
    before = snapshot(case.work)
    start = time.perf_counter()
    status, _out, err = (run_subprocess if case.subprocess else run_in_process)(argv, timeout)
    seconds = time.perf_counter() - start
    problems = []
    lines = err.strip().splitlines()
    if status != 2:
        problems.append(f"exit status {status}")
    if len(lines) != 1 or not lines[0].startswith("spikediff: error: "):
        problems.append(f"stderr is not one error line: {err.strip()[:300]!r}")
    if "Traceback" in err:
        problems.append("traceback")
    if case.expect and case.expect not in err:
        problems.append(f"error does not say {case.expect!r}")
    after = snapshot(case.work)
    written = sorted(set(after.items()) - set(before.items()))
    if written:
        problems.append(f"wrote {', '.join(p for p, _ in written[:3])}")
    if any(p.endswith(".part") for p in after):
        problems.append("left a .part file")
    return Result(case, status, lines[0] if len(lines) == 1 else err.strip()[:300], seconds, problems)


def run_all(cases: list, subprocess_share: float, rng: random.Random, progress: bool = False) -> list:
    for case in cases:
        if rng.random() < subprocess_share:
            case.subprocess = True
    results = []
    for i, case in enumerate(cases):
        results.append(run_case(case))
        if progress and (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(cases)} cases", file=sys.stderr)
    return results


def summary(results: list) -> dict:
    """class -> distinct inputs, runs (an input through each command that reads it), clean runs, runs in a
    fresh interpreter, seconds."""
    by_class, inputs = {}, {}
    for r in results:
        row = by_class.setdefault(r.case.cls, {"inputs": 0, "tried": 0, "clean": 0, "in_subprocess": 0,
                                                "seconds": 0.0})
        inputs.setdefault(r.case.cls, set()).add((r.case.name, str(r.case.work)))
        row["inputs"] = len(inputs[r.case.cls])
        row["tried"] += 1
        row["clean"] += r.clean
        row["in_subprocess"] += r.case.subprocess
        row["seconds"] += r.seconds
    return by_class


def main(argv: list | None = None) -> int:
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _report import write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40, help="random variants of each random class")
    parser.add_argument("--subprocess-share", type=float, default=0.05,
                        help="share of the cases run in a fresh interpreter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bad_inputs.md")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="spikediff-bad-inputs-") as tmp:
        t0 = time.perf_counter()
        _sources, cases = all_cases(Path(tmp), rng, args.per_class)
        results = run_all(cases, args.subprocess_share, rng, progress=True)
        total_s = time.perf_counter() - t0
        for r in results:  # messages name files in the temporary folder: keep the part below it
            r.stderr = r.stderr.replace(f"{tmp}/", "")
    by_class = summary(results)
    failures = [{"class": r.case.cls, "input": r.case.name, "command": " ".join(map(str, r.case.argv[:1])),
                 "status": str(r.status), "stderr": r.stderr, "problems": r.problems} for r in results if not r.clean]
    tried, clean = len(results), sum(r.clean for r in results)
    messages = {}
    for r in results:
        if r.clean:
            messages.setdefault(r.case.cls, r.stderr)
    n_inputs = sum(row["inputs"] for row in by_class.values())
    body = [f"{n_inputs} generated bad inputs, each run through every command that reads it: {tried} runs, "
            f"{clean} gave a clean error ({100 * clean / max(1, tried):.1f} %), in {total_s:.0f} s. "
            f"{sum(r.case.subprocess for r in results)} runs in a fresh interpreter (`python -m spikediff`), the "
            f"rest through `spikediff.cli.main` in one process. Seed {args.seed}, {args.per_class} random variants "
            f"per random class.", "",
            "A clean error: exit status 2, exactly one line on stderr starting `spikediff: error:`, no traceback, "
            "nothing written (the work folder byte for byte as before: no `.part` file, no output).", "",
            "| class of bad input | inputs | runs | clean errors | in a fresh process | an example message |",
            "|---|---:|---:|---:|---:|---|"]
    for cls, row in by_class.items():
        example = messages.get(cls, "").replace("|", "\\|")
        example = example if len(example) < 160 else example[:157] + "..."
        body.append(f"| {cls} | {row['inputs']} | {row['tried']} | {row['clean']} | {row['in_subprocess']} | "
                    f"`{example}` |")
    body += ["", f"**Total: {clean} of {tried} runs clean.**", ""]
    if failures:
        body += ["## Not clean", ""] + [f"- {f['class']}: {f['input']} (`spikediff {f['command']}`): "
                                        f"{'; '.join(f['problems'])}" for f in failures]
    write_report(args.out, "Bad inputs: generated, run through every command",
                 {"inputs": n_inputs, "tried": tried, "clean": clean, "seconds": total_s, "seed": args.seed,
                  "per_class": args.per_class, "classes": by_class, "failures": failures}, body)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
