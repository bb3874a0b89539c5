"""The timm-style registry of backbone configurations."""

from __future__ import annotations

import pytest

import hybridflow
from hybridflow import create_backbone, list_backbones
from hybridflow.backbones import FAMILY_DEFAULTS, backbone_family
from hybridflow.flows import list_couplings


def test_registry_lists_and_filters():
    names = list_backbones()
    for expected in ["mixerflow_cifar10", "mixerflow_mnist", "mixerflow_64", "mixerflow_tiny", "mixerflow_wide",
                     "glow_cifar10", "glow_tiny"]:
        assert expected in names
    assert all(n.startswith("glow") for n in list_backbones("glow*"))
    assert create_backbone("mixerflow").name == "mixerflow_tiny"
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("no_such_flow")
    with pytest.raises(ValueError, match="does not accept"):
        create_backbone("glow_tiny", no_such_option=3)


def test_top_level_api():
    assert hybridflow.list_backbones() == list_backbones()


def test_registry_lists_the_variants():
    names = set(list_backbones())
    expected = {f"mixerflow_mnist_{c}" for c in ("mlp", "kan", "spline", "maf")}
    expected |= {f"mixerflow_tiny_{c}" for c in ("spline", "maf", "kan")} | {"nsf_glow_cifar10", "nsf_glow_tiny"}
    assert expected <= names
    assert {"affine", "spline", "maf", "kan"} <= set(list_couplings())


def test_families_and_their_defaults():
    assert backbone_family("mixerflow_tiny_kan") == "mixerflow"
    assert backbone_family("nsf_glow_tiny") == "nsf_glow" and backbone_family("glow_cifar10") == "glow"
    assert backbone_family("glow") == "glow"
    for family, default in FAMILY_DEFAULTS.items():
        assert default in list_backbones() and create_backbone(family).name == default



def test_bad_options_name_the_option_and_the_backbone():
    from hybridflow.backbones.options import BackboneOptionError
    from hybridflow.data.patches import PatchSizeError

    with pytest.raises(BackboneOptionError, match="^backbone 'mixerflow_tiny' has no option 'nokey'$"):
        create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, nokey=3)
    with pytest.raises(BackboneOptionError, match="^backbone 'mixerflow_tiny': .*must be positive"):
        create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=2, hidden=0)
    with pytest.raises(ValueError, match="must divide") as error:
        create_backbone("mixerflow_tiny", input_shape=(1, 8, 8), patch_size=3)
    assert isinstance(error.value, (BackboneOptionError, PatchSizeError))
