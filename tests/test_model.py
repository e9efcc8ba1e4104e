import pytest
import torch

from spikediff import SpikediffError
from spikediff.models import DenoiserConfig, SpikingDenoiser


def tiny(**kw):
    return SpikingDenoiser(DenoiserConfig(image_size=8, channels=4, hidden=16, **kw))


def test_output_shape_and_spike_statistics():
    torch.manual_seed(0)
    model = tiny()
    stats = {}
    out = model(torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999]), stats=stats)
    assert out.shape == (3, 1, 8, 8)
    counts = model.neuron_counts()
    assert set(stats) == set(counts)
    for name, spikes in stats.items():
        rate = spikes / (counts[name] * 3 * model.config.num_steps)
        assert 0.0 < rate < 1.0, f"{name} firing rate {rate} at init"


def test_time_step_changes_the_prediction():
    torch.manual_seed(0)
    model = tiny()
    x = torch.randn(1, 1, 8, 8)
    assert not torch.equal(model(x, torch.tensor([10])), model(x, torch.tensor([900])))


def test_readout_is_the_mean_synaptic_current():
    """With one SNN step the output is exactly the readout drive of that step, in 4x4 patch layout."""
    torch.manual_seed(0)
    model = tiny(num_steps=1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])

    def lif(name, current):
        return model.lif[name](current, torch.zeros_like(current))[0]

    e0 = lif("e0", model.conv_in(model.make_input(x, t)))
    e1 = lif("e1", model.conv_e1(e0))
    d2 = lif("d2", model.down_2(lif("d1", model.down_1(e1))))
    g = lif("g", model.fc_1(d2.flatten(1)))
    u = lif("u", model.conv_u(d2))
    drive = model.fc_out(g) + model.conv_ro(u).flatten(1) + model.skip_px(e1).flatten(1)
    # flat patch order: channel dy*4+dx, then patch row i, patch column j -> pixel (4i+dy, 4j+dx)
    expected = drive.reshape(2, 4, 4, 2, 2).permute(0, 3, 1, 4, 2).reshape(2, 1, 8, 8)
    torch.testing.assert_close(model(x, t), expected)


def test_depths_are_the_lava_latencies():
    depths = tiny().depths()
    assert depths == {"input": 0, "e0": 1, "e1": 2, "d1": 3, "d2": 4, "g": 5, "u": 5, "readout": 6}


def test_gradients_reach_every_layer_through_the_surrogate():
    torch.manual_seed(0)
    model = tiny()
    model(torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("bad, match", [
    (dict(beta=0.7), "beta=0.7 must be"),
    (dict(readout_alpha=1.5), "readout_alpha"),
    (dict(time_features=3), "time_features"),
    (dict(channels=0), "channels"),
    (dict(image_size=30), "multiple of 4"),
])
def test_bad_options_are_named(bad, match):
    with pytest.raises(SpikediffError, match=match):
        DenoiserConfig(**bad).validate()


def test_wrong_input_shape_is_named():
    with pytest.raises(SpikediffError, match=r"\(N, 1, 8, 8\)"):
        tiny()(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
