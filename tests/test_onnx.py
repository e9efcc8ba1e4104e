"""ONNX: the spiking denoiser unrolled over T and its ANN twin, checked by onnx.checker and run in
onnxruntime against PyTorch."""

import numpy as np
import pytest
import torch
from conftest import run_cli

from spikediff.export.onnx_export import AnnTwin, UnrolledSNN, export_onnx, run_onnx
from spikediff.models import DenoiserConfig, SpikingDenoiser


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(0)
    model = SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16)).eval()
    x, t = torch.randn(5, 1, 8, 8), torch.tensor([999, 700, 400, 100, 0])
    return model, x, t, model.make_input(x, t)


def test_unrolled_snn_is_the_model_and_onnxruntime_agrees(trained_like, tmp_path):
    model, x, t, inp = trained_like
    with torch.no_grad():
        ref = model.readout_current(x, t)
        assert torch.equal(UnrolledSNN(model)(inp), ref)  # the same arithmetic, op for op
    path = export_onnx(model, tmp_path / "snn.onnx")
    out = run_onnx(path, inp.numpy())
    assert out.shape == tuple(ref.shape) and np.abs(ref.numpy()).max() > 0
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)


def test_ann_twin_exports_and_runs(trained_like, tmp_path):
    model, _x, _t, inp = trained_like
    with torch.no_grad():
        ref = AnnTwin(model)(inp)
    out = run_onnx(export_onnx(model, tmp_path / "twin.onnx", twin=True), inp.numpy())
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # it is a different network: ReLU activations, one pass
        assert not torch.allclose(ref, model.readout_current(_x, _t))


def test_cli_export_writes_onnx_and_rejects_bad_names(tmp_path):
    r = run_cli("export", "-o", tmp_path / "d.nir", "--onnx", tmp_path / "snn.onnx", "--onnx-twin", tmp_path / "t.onnx")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "snn.onnx").stat().st_size > 0 and (tmp_path / "t.onnx").stat().st_size > 0
    assert "onnx.checker passed" in r.stdout
    r = run_cli("export", "-o", tmp_path / "e.nir", "--onnx", tmp_path / "snn.txt")
    assert r.returncode == 2 and "snn.txt: must end in .onnx" in r.stderr and not (tmp_path / "e.nir").exists()


def test_sdid_with_feedback_exports_and_onnxruntime_agrees(tmp_path):
    """The SDID's feedback (a dense layer written as convolutions onto a 1 x 1 map and back) in ONNX too."""
    from spikediff.models import SpikingTokenDenoiser, TokenDenoiserConfig

    torch.manual_seed(0)
    sdid = SpikingTokenDenoiser(TokenDenoiserConfig(codebook_size=6, grid=3, channels=8, hidden=16, feedback=True))
    torch.nn.init.normal_(sdid.fc_gu.weight, 0, 1.0)
    inp = sdid.make_input(torch.randint(0, 7, (4, 3, 3)), torch.rand(4))
    with torch.no_grad():
        ref = sdid.run_graph(inp)
    out = run_onnx(export_onnx(sdid, tmp_path / "sdid.onnx"), inp.numpy())
    assert np.abs(ref.numpy()).max() > 0
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)
