"""CLAT (Criticality-Leveraged Adversarial Training, arXiv 2408.10204 v1): layer criticality.

The training method itself is :class:`robustft.methods.clat.CLAT`; the feature-space attack is
:func:`robustft.attacks.feature_pgd.feature_pgd`; the layer numbering is
:func:`robustft.models.candidate_layers`.
"""

from robustft.clat.criticality import (
    PAPER_K,
    Criticality,
    FeatureTap,
    default_k,
    layer_criticality,
    tap_modules,
)

__all__ = ["PAPER_K", "Criticality", "FeatureTap", "default_k", "layer_criticality",
           "tap_modules"]
