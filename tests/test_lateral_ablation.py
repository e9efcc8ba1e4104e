"""benchmarks/lateral_ablation.py: a given checkpoint is measured as a variant only if it was trained with the
ablation's budget and that variant's model (a wrong file must be refused by name, not measured as another row),
and its plot compares variants only at one N."""

import sys
from pathlib import Path

import pytest

from spikediff import SpikediffError
from spikediff.checkpoint import resolve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import lateral_ablation as ablation  # noqa: E402

BOTH = ROOT / "benchmarks" / "checkpoints" / "fashion-mnist-both.pt"


def _cfg(name: str, steps: int = 3000, data: str = "fashion-mnist"):
    return ablation.variant_config(data, name, steps)


def test_committed_and_shipped_checkpoints_pass_as_their_own_variants():
    assert ablation.check_variant("both", BOTH, _cfg("both")) == BOTH
    shipped = resolve("fashion-mnist")
    assert ablation.check_variant("base", shipped, _cfg("base")) == shipped


def test_a_checkpoint_of_another_variant_or_budget_is_refused_with_what_differs():
    with pytest.raises(SpikediffError, match=r"--checkpoint base=.*model lateral True \(ablation: False\)"):
        ablation.check_variant("base", BOTH, _cfg("base"))
    with pytest.raises(SpikediffError, match=r"model selection False \(ablation: True\)"):
        ablation.check_variant("selection", resolve("fashion-mnist"), _cfg("selection"))
    with pytest.raises(SpikediffError, match=r"trained 3000 steps \(ablation: 2000\)"):
        ablation.check_variant("both", BOTH, _cfg("both", steps=2000))
    with pytest.raises(SpikediffError, match=r"data 'fashion-mnist' \(ablation: 'mnist'\)"):
        ablation.check_variant("both", BOTH, _cfg("both", data="mnist"))
    # the shipped mnist is a U-Net since 7 December 2026: the ablation's MNIST base is mnist-patch
    with pytest.raises(SpikediffError, match=r"--checkpoint base=.*a spiking U-Net \(small\), not the ablation's"):
        ablation.check_variant("base", resolve("mnist"), _cfg("base", data="mnist"))
    assert ablation.check_variant("base", resolve("mnist-patch"), _cfg("base", data="mnist")) == resolve("mnist-patch")


@pytest.mark.parametrize("pairs, base, message", [
    (["both"], None, "expected VARIANT=CKPT"),
    (["all=x.pt"], None, "expected VARIANT=CKPT with VARIANT one of base, lateral, selection, both"),
    (["both="], None, "expected VARIANT=CKPT"),
    (["base=x.pt"], "mnist", "a checkpoint for base is already given"),
])
def test_checkpoint_options_that_cannot_be_read_name_the_option(pairs, base, message):
    with pytest.raises(SpikediffError, match=message):
        ablation.given_checkpoints(pairs, base)


def test_checkpoint_options_map_variants_to_files():
    assert ablation.given_checkpoints([f"both={BOTH}"], "fashion-mnist") == {"base": "fashion-mnist", "both": str(BOTH)}


def test_the_plot_compares_variants_only_at_an_n_that_all_of_them_have(tmp_path):
    import json

    rows = json.loads((ROOT / "benchmarks" / "results" / "lateral_ablation_fashion-mnist.json").read_text())["rows"]
    assert ablation.plotted_n(rows) == 10000
    assert ablation.plot_fid_energy(rows, tmp_path / "fid_energy.png")
    assert (tmp_path / "fid_energy.png").stat().st_size > 0
    without = [r for r in rows if not (r["model"].endswith("-both") and r["n"] == 10000)]
    assert ablation.plotted_n(without) == 1000
    only_one_each = [r for r in rows if r["backend"] == "sim" and (r["n"] == 10000) != r["model"].endswith("-both")]
    assert ablation.plotted_n(only_one_each) is None
    assert not ablation.plot_fid_energy(only_one_each, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
