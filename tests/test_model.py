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
    """With one SNN step and alpha irrelevant, the output is exactly the readout drive of that step."""
    torch.manual_seed(0)
    model = tiny(num_steps=1)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    inp = model.make_input(x, t)
    s_in, _ = model.lif_in(model.conv_in(inp), torch.zeros(2, 4, 8, 8))
    s_1, _ = model.lif_1(model.conv_1(s_in), torch.zeros(2, 4, 8, 8))
    s_d1, _ = model.lif_d1(model.down_1(s_1), torch.zeros(2, 8, 4, 4))
    s_d2, _ = model.lif_d2(model.down_2(s_d1), torch.zeros(2, 8, 2, 2))
    s_g, _ = model.lif_g(model.fc_1(s_d2.flatten(1)), torch.zeros(2, 16))
    drive = model.fc_out(s_g) + model.conv_out(s_1).flatten(1)
    torch.testing.assert_close(model(x, t), drive.reshape(2, 1, 8, 8))


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
])
def test_bad_options_are_named(bad, match):
    with pytest.raises(SpikediffError, match=match):
        DenoiserConfig(**bad).validate()


def test_wrong_input_shape_is_named():
    with pytest.raises(SpikediffError, match=r"\(N, 1, 8, 8\)"):
        tiny()(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]))
