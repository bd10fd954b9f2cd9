"""Everything CLAT-specific sits in robustft.clat: the old homes are gone, the package imports in
any order, the models never import it, and its tables stay torch-free for the aggregation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from robustft.clat.criticality import PAPER_K, default_k
from robustft.models import CIFAR_ARCHS, build_model


@pytest.mark.parametrize(
    "old", ["robustft.evaluate_clat", "robustft.clat_tables", "robustft.methods.clat"]
)
def test_the_old_homes_are_gone(old):
    assert importlib.util.find_spec(old) is None


def test_models_expose_no_clat_numbering():
    import robustft.models
    import robustft.models.cifar

    for name in ("candidate_layers", "layer_index", "layer_parameters", "following_batchnorm"):
        assert not hasattr(robustft.models, name) and not hasattr(robustft.models.cifar, name)
    assert not hasattr(next(iter(CIFAR_ARCHS.values())), "clat_k")


def test_import_order_and_layering():
    """One fresh interpreter: the tables import no torch; the models import no CLAT module;
    ``robustft.clat.method`` imported before the registry is the registry's class."""
    code = """
import sys
import robustft.clat, robustft.clat.tables
assert 'torch' not in sys.modules, 'robustft.clat.tables imported torch'
import robustft.models
loaded = sorted(m for m in sys.modules if m.startswith('robustft.clat.'))
assert loaded == ['robustft.clat.tables'], loaded
import robustft.clat.method as cm
from robustft.methods import METHODS, build_method
assert METHODS['clat'] is cm.CLAT and METHODS['clat_random'] is cm.CLATRandom
assert type(build_method('clat_nd')) is cm.CLATND
from robustft.clat import Criticality, candidate_layers
import robustft.clat.criticality as cc, robustft.clat.layers as cl
assert Criticality is cc.Criticality and candidate_layers is cl.candidate_layers
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_paper_k_per_architecture():
    """CLAT Sec. 4.1's k, keyed by the paper's architecture name (one table, not two)."""
    expected = {
        "cifar_resnet18": 1,
        "cifar_resnet50": 3,
        "cifar_preact_resnet18": 1,
        "cifar_preact_resnet18_fast": 1,
        "cifar_wrn34_10": 2,
        "cifar_wrn70_16": 4,
        "cifar_vgg19": 1,
        "cifar_densenet121": 5,
    }
    assert set(expected) == set(CIFAR_ARCHS)
    for arch, k in expected.items():
        assert PAPER_K[CIFAR_ARCHS[arch].paper_name] == k, arch
    assert default_k(build_model("cifar_resnet50", 10, width=2)) == 3
    assert default_k(build_model("resnet_mini", 5, width=4)) == 1  # not a CLAT architecture
