"""Each problem the compat module fixes, shown to exist and shown fixed, plus a real Lava run."""

import subprocess
import sys

import numpy as np
import pytest
import torch


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the dataclass problem is specific to Python 3.11+")
def test_var_model_fails_without_the_fix_and_imports_with_it():
    plain = _python("import lava.magma.compiler.var_model")
    assert plain.returncode != 0 and "mutable default" in plain.stderr
    fixed = _python(
        "from spikediff import lava_compat; lava_compat.apply()\n"
        "from lava.magma.compiler.var_model import CoreEncoder, ByteEncoder\n"
        "a, b = CoreEncoder(), CoreEncoder()\n"
        "assert a.x == ByteEncoder() and a == b\n"
        "print('ok')"
    )
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "ok"


def test_netx_imports_without_torchvision_and_opencv():
    code = (
        "import importlib.util, sys\n"
        "from spikediff import lava_compat\n"
        "netx = lava_compat.import_netx()\n"
        "assert hasattr(netx.hdf5, 'Network')\n"
        "from lava.lib.dl import slayer\n"
        "try:\n"
        "    slayer.obd.YOLOBase\n"
        "except ImportError as e:\n"
        "    print('placeholder:', e)\n"
        "print('torchvision' in sys.modules, 'cv2' in sys.modules)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert "placeholder:" in out.stdout and "needs torchvision and OpenCV" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_lava_lif_spikes_equal_the_snntorch_neuron():
    """Our snnTorch LIF configuration and Lava's floating-point LIF give the same spikes, step for step."""
    from spikediff import lava_compat
    from spikediff.models.neurons import lava_lif

    lava_compat.import_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer
    from lava.proc.lif.process import LIF

    n, steps, beta = 32, 24, 0.75
    bias = np.random.default_rng(1).uniform(0.0, 0.7, n)
    lif = LIF(shape=(n,), du=1.0, dv=1.0 - beta, vth=1.0, bias_mant=bias)
    sink = RingBuffer(shape=(n,), buffer=steps)
    lif.s_out.connect(sink.a_in)
    try:
        lif.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="floating_pt"))
        lava_spikes = sink.data.get()
    finally:
        lif.stop()

    neuron = lava_lif(beta, 1.0)
    mem = torch.zeros(n, dtype=torch.float64)
    ours = []
    for _ in range(steps):
        spk, mem = neuron(torch.tensor(bias), mem)
        ours.append(spk.numpy())
    ours = np.stack(ours, axis=1)
    assert lava_spikes.sum() > n  # the comparison is not vacuous
    np.testing.assert_array_equal(lava_spikes, ours)


def test_lava_imports_after_the_start_method_was_fixed_elsewhere():
    setup = "import multiprocessing as mp\nmp.get_start_method()  # fixes the default context, as some libraries do\n"
    plain = _python(setup + "from spikediff import lava_compat\nlava_compat._PATCHES.pop(lava_compat.MP_INFRASTRUCTURE)\n"
                    "lava_compat.import_lava()")
    assert plain.returncode != 0 and "context has already been set" in plain.stderr
    fixed = _python(setup + "from spikediff import lava_compat\nlava_compat.import_lava()\n"
                    "print(mp.get_start_method())")
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.strip() == "fork"
