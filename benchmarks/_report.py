"""What every benchmark writes: a JSON file and a markdown page, both naming the command and the machine; and the
`--model` option of the benchmarks that measure one pixel denoiser."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


def machine_name(info: dict) -> str:
    """The CPU and its cores, as a report's header names the machine (``machine_info``'s dict)."""
    return f"{info['cpu']}, {info['cores']} cores"


def write_report(out: Path, title: str, payload: dict, body: list[str]) -> None:
    """out.json = {command, machine, **payload}; out (markdown) = title, command, machine, then body lines."""
    command = "python " + " ".join(sys.argv)
    machine = machine_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, **payload}, indent=2) + "\n")
    head = [f"# {title}", "", f"Command: `{command}`  ",
            f"Machine: {machine_name(machine)}, Python {machine['python']}, torch {machine['torch']}",
            ""]
    out.write_text("\n".join(head + body) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def add_pixel_model_option(parser) -> None:
    """``--model``: the pixel denoiser a benchmark measures. Its default is the one the committed results were
    measured on, the patch denoiser (the shipped ``mnist`` until it became the U-Net), so their commands still
    reproduce them."""
    parser.add_argument("--model", default="mnist-patch",
                        help="the pixel denoiser measured (a shipped name or a file; the committed results: mnist-patch)")
