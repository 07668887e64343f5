"""Every recipe's variant files (egs/*/conf/variants/*.yaml, passed as --train_overrides) apply.

A misspelt option in a variant would otherwise surface only when its run starts, after hours of the
runs before it in a queue. Each variant must be a mapping of plain values that some shared family
config accepts as overrides, and a `network` block in it must build that family's network.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from serkit.bin.train import load_hparams
from serkit.features.augment import make_augmenter
from serkit.model import family_names, get_family
from serkit.safe_yaml import load_plain_mapping
from serkit.training.experiments import read_config_values

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = sorted(ROOT.glob("egs/*/conf/variants/*.yaml"))
PATHS = {"data_dir": "data/all", "fold_dir": "data/folds/x/fold01", "output_folder": "exp/x"}


def _families_with_options(variant: dict) -> list[str]:
    """The families whose shared config has every top-level option the variant sets."""
    return [name for name in family_names()
            if set(variant) <= set(read_config_values(str(ROOT / "conf" / f"{name}.yaml")))]


def _builds(name: str, hparams: dict) -> bool:
    """Whether family ``name``'s single-input network accepts the config's `network` block."""
    if "feature" not in hparams:
        return False
    n_mels = hparams["feature"]["params"].get("n_mels", 64)
    try:
        get_family(name).build_network(hparams, n_classes=8, input_dims=(3, n_mels))
    except TypeError:  # another family's network options
        return False
    return True


def test_recipes_have_variants():
    assert VARIANTS, "no egs/*/conf/variants/*.yaml found"


@pytest.mark.parametrize("path", VARIANTS, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_variant_applies_to_a_family(path):
    variant = load_plain_mapping(path)
    takers = []
    for name in _families_with_options(variant):
        hparams = load_hparams(str(ROOT / "conf" / f"{name}.yaml"), {**variant, **PATHS})
        if "network" in variant and not _builds(name, hparams):
            continue
        for option, value in variant.items():
            assert hparams[option] == value, f"{path.name}: {option} not applied to {name}"
        takers.append(name)
    assert takers, f"{path.name}: no family's config and network take all of {sorted(variant)}"


def _feature_bins(hparams: dict) -> int:
    """The length of the feature axis a frequency mask acts on (MFCC coefficients or Mel bands)."""
    params = hparams["feature"]["params"]
    return params["n_mfcc"] if hparams["feature"]["kind"] == "mfcc" else params["n_mels"]


@pytest.mark.parametrize("path", [p for p in VARIANTS if "augment" in load_plain_mapping(p)],
                         ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_augmenting_variant_builds_and_leaves_most_of_the_feature_axis(path):
    """SpectrogramDrop's default sizes suit 80 Mel bands; on fewer bins they can hide the whole axis."""
    variant = load_plain_mapping(path)
    takers = [name for name in _families_with_options(variant)
              if "feature" in read_config_values(str(ROOT / "conf" / f"{name}.yaml"))]
    assert takers, f"{path.name}: no spectral family takes it"
    for name in takers:
        hparams = load_hparams(str(ROOT / "conf" / f"{name}.yaml"), {**variant, **PATHS})
        augmenter = make_augmenter(hparams, hparams["feature"]["kind"])
        assert augmenter is not None
        for mask in (mask for mask in augmenter.masks if mask.dim == 2):  # the frequency masks as built
            widest = mask.drop_count_high * mask.drop_length_high
            assert widest <= _feature_bins(hparams) / 2, (
                f"{path.name}: frequency masks can cover {widest} of {name}'s {_feature_bins(hparams)} bins")
