import pytest
import torch

from vitq.errors import VitqError
from vitq.quant.config import QuantConfig, parse_bits
from vitq.quant.observers import IntRange, make_observer
from vitq.recipe import Recipe, make_recipe


def rows():
    x = torch.randn(1, 20000)
    x[0, 0] = 40.0  # one outlier: 0.005 % of the values
    return x


def test_minmax_covers_everything_percentile_and_mse_clip():
    grid = IntRange.for_bits(4, symmetric=True)
    scales = {}
    for name in ("minmax", "percentile", "mse"):
        obs = make_observer(name)
        obs.update(rows())
        scales[name], zp = obs.compute(grid)
        assert zp.item() == 0
    assert scales["minmax"].item() == pytest.approx(40.0 / 7)
    assert scales["percentile"] < scales["minmax"]
    assert scales["mse"] < scales["minmax"]


@pytest.mark.parametrize("percentile", [99.9, 99.99, 99.999])
def test_percentile_is_exact_over_all_batches(percentile):
    """Clipping points equal the percentile of every value seen (not of a random sample), per row."""
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 200_000, generator=gen) * (1 + 0.2 * i) for i in range(5)]  # later batches wider
    obs = make_observer("percentile", percentile=percentile)
    for b in batches:
        obs.update(b)
    grid = IntRange.for_bits(8, symmetric=False)
    scale, zp = obs.compute(grid)
    every = torch.cat(batches, dim=1)
    rank = int((every.shape[1] - 1) * (1 - percentile / 100)) + 1
    hi, lo = every.topk(rank, dim=1).values[:, -1], every.topk(rank, dim=1, largest=False).values[:, -1]
    expected_scale = (hi - lo) / 255
    assert torch.allclose(scale, expected_scale, rtol=1e-6)
    assert torch.equal(zp, (-lo / expected_scale).round())


def test_percentile_warns_when_one_batch_holds_the_tail(caplog):
    obs = make_observer("percentile", percentile=99.9)
    obs.update(torch.full((1, 100_000), 100.0) + torch.arange(100_000.0))  # all of the top 0.1 % are here
    obs.update(torch.zeros(1, 900_000))
    with caplog.at_level("WARNING"):
        obs.compute(IntRange.for_bits(8, symmetric=True))
    assert "approximate" in caplog.text
    caplog.clear()
    ties = make_observer("percentile", percentile=99.9)  # every kept value equal to the threshold: exact
    ties.update(torch.ones(1, 100_000))
    ties.update(torch.ones(1, 900_000))
    with caplog.at_level("WARNING"):
        ties.compute(IntRange.for_bits(8, symmetric=False))
    assert "approximate" not in caplog.text


def test_asymmetric_zero_point_is_integer_and_in_range():
    obs = make_observer("minmax")
    obs.update(torch.rand(1, 1000) * 5 + 1)  # all positive: range widened to include 0
    scale, zp = obs.compute(IntRange.for_bits(8, symmetric=False))
    assert zp.item() == 0 and scale.item() == pytest.approx(6 / 255, rel=1e-2)
    obs = make_observer("minmax")
    obs.update(torch.linspace(-1, 3, 100)[None])
    scale, zp = obs.compute(IntRange.for_bits(8, symmetric=False))
    assert zp.item() == round(1 / (4 / 255)) and 0 <= zp.item() <= 255


def test_unknown_observer_lists_known():
    with pytest.raises(VitqError, match="minmax, mse, percentile"):
        make_observer("nope")


@pytest.mark.parametrize("spec, expected", [("W4A4", (4, 4)), ("w8a6", (8, 6)), (" W3A3 ", (3, 3))])
def test_parse_bits(spec, expected):
    assert parse_bits(spec) == expected


@pytest.mark.parametrize("spec", ["W9A8", "W1A1", "8", "W4", "A4W4"])
def test_parse_bits_rejects(spec):
    with pytest.raises(VitqError):
        parse_bits(spec)


def test_config_roundtrip_and_validation():
    cfg = QuantConfig(w_bits=4, a_bits=6, overrides={"blocks.0.*": {"bits": 8}})
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.bits == "W4A6"
    assert cfg.override_for("blocks.0.attn.qkv.input_quant") == {"bits": 8}
    assert cfg.override_for("blocks.1.attn.qkv.input_quant") == {}
    with pytest.raises(VitqError, match="unknown format keys"):
        QuantConfig.from_dict({"w_bit": 4})
    with pytest.raises(VitqError, match="unknown keys"):
        QuantConfig(overrides={"*": {"bitz": 4}})
    with pytest.raises(VitqError):
        QuantConfig(w_bits=12)
    with pytest.raises(VitqError, match="weight_observer must be one of"):
        QuantConfig(weight_observer="median")
    with pytest.raises(VitqError, match="conv_layout must be one of inputs, integer"):
        QuantConfig(conv_layout="outputs")


def test_format_is_never_rewritten():
    """A QuantConfig holds exactly what it was given: defaults that depend on bits come from make_recipe."""
    cfg = QuantConfig(w_bits=4, a_bits=4)
    assert (cfg.weight_observer, cfg.softmax_quantizer, cfg.percentile) == ("minmax", "uniform", 99.999)


def observers(recipe) -> tuple[str, str]:
    return recipe.format.weight_observer, recipe.format.activation_observer


def test_weight_observer_replaces_only_the_weight_observer():
    assert observers(make_recipe("W8A8", "percentile")) == ("minmax", "percentile")
    assert observers(make_recipe("W8A8", "percentile", {"weight_observer": "mse"})) == ("mse", "percentile")
    assert observers(make_recipe("W8A8", "pfcr", {"calibration": "percentile", "weight_observer": "mse"})) == ("mse", "percentile")


def test_low_bit_recipe_applies_to_percentile_calibration_only_and_is_recorded_as_derived():
    low = make_recipe("W4A4", "percentile")
    assert (low.format.weight_observer, low.format.softmax_bits, low.format.percentile) == ("mse", 8, 99.9)
    assert observers(low) == ("mse", "percentile")
    assert {"format.weight_observer", "format.softmax_bits", "format.percentile"} <= set(low.derived)
    recon = make_recipe("W3A3", "pfcr")  # starts from percentile calibration
    assert (recon.format.weight_observer, recon.format.softmax_quantizer, recon.format.percentile) == ("mse", "uniform", 99.5)
    assert recon.derived["calibration"] == "pfcr starts from percentile calibration"
    mixed = make_recipe("W4A8", "percentile")
    assert (mixed.format.weight_observer, mixed.format.softmax_quantizer) == ("mse", "uniform")
    six = make_recipe("W6A6", "percentile")
    assert (six.format.weight_observer, six.format.softmax_quantizer) == ("minmax", "uniform")
    assert observers(make_recipe("W4A4", "minmax")) == ("minmax", "minmax")
    assert make_recipe("W4A4", "qhyvit").format.softmax_quantizer == "uniform"  # min-max start
    explicit = make_recipe("W4A4", "percentile", {"weight_observer": "minmax", "softmax_quantizer": "uniform"})
    assert (explicit.format.weight_observer, explicit.format.softmax_quantizer) == ("minmax", "uniform")
    assert "format.softmax_quantizer" not in explicit.derived
    assert Recipe.from_dict(low.to_dict()) == low


def test_default_percentile_clips_more_at_fewer_bits_and_is_recorded():
    assert [make_recipe(b).format.percentile for b in ("W8A8", "W6A6", "W4A4", "W3A3")] == [99.999, 99.9, 99.9, 99.5]
    explicit = make_recipe("W4A4", settings={"percentile": 99.99})
    assert explicit.format.percentile == 99.99 and "format.percentile" not in explicit.derived
    six = make_recipe("W6A6")
    assert Recipe.from_dict(six.to_dict()).format.percentile == 99.9
