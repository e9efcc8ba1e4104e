"""ONNX for conventional runtimes: any spiking network of a sampler (a denoiser, a decoder) unrolled over its T
steps, and its ANN twin.

Both take the network's host input (for a denoiser: the image or latent channels plus time planes, its
``make_input``) and return the flat readout (the host reads it as the other backends do), so the same host
code drives them. The unrolled SNN writes the LIF as plain tensor ops (the surrogate gradient only matters in
training), which is snnTorch's zero-reset ``Leaky`` step for step. The ANN twin has the same layers with
ReLU instead of LIF and runs once per denoiser call: the conventional network the SNN is measured
against (in MACs and images/s); a recurrent synapse has no place in one pass and is left out. It carries
the SNN's weights, so its outputs mean nothing; only its cost does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import SpikediffError


class UnrolledSNN(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.model.run_graph(inp, lif_step=self._lif_step)

    def _lif_step(self, population: str, drive: torch.Tensor, mem: torch.Tensor) -> tuple:
        """snnTorch's zero-reset ``Leaky`` step as plain tensor ops."""
        lif = self.model.lif[population]
        v = lif.beta * mem + drive
        spk = (v > lif.threshold).to(v.dtype)
        return spk, v * (1 - spk)


class AnnTwin(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        m = self.model
        act = {"input": inp}
        for target, synapses in m.graph.items():  # one pass: no time, so no recurrent synapses
            drive = sum(m._synapse(syn, act[src], target == "readout") for syn, src in synapses if src != target)
            act[target] = drive if target == "readout" else torch.relu(drive)
        return act["readout"]


def example_input(model, batch: int = 1) -> torch.Tensor:
    x = model.example_input()
    return x.expand(batch, *x.shape[1:]).contiguous()


def export_onnx(model, path, twin: bool = False) -> Path:
    """Write the unrolled SNN (or its ANN twin) as ONNX with a dynamic batch axis, checked by onnx.checker;
    written atomically."""
    import onnx

    from ..atomic import atomic_path

    net = (AnnTwin if twin else UnrolledSNN)(model).eval()
    path = Path(path)
    if path.suffix != ".onnx":
        raise SpikediffError(f"output {path}: must end in .onnx")
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(net, (example_input(model),), str(tmp), input_names=["input"], output_names=["readout"],
                          dynamic_axes={"input": {0: "batch"}, "readout": {0: "batch"}}, opset_version=17,
                          dynamo=False)
        onnx.checker.check_model(onnx.load(str(tmp)), full_check=True)
    return path


def run_onnx(path, inputs, threads: int | None = None):
    """Run an exported network in onnxruntime on CPU: (N, C + time features, H, W) -> (N, readout size)."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.asarray(inputs, dtype=np.float32)})[0]
