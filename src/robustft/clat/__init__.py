"""CLAT (Criticality-Leveraged Adversarial Training, arXiv 2408.10204 v1): everything CLAT-specific.

Owns, one module each:

* :mod:`.layers` — the layer numbering (spec §1.2: which module is "layer i") and a layer's
  parameters (A6);
* :mod:`.criticality` — feature weakness and layer criticality (CLAT Eq. 5-6), the paper's k
  per architecture;
* :mod:`.method` — the training methods ``clat``, ``clat_fast``, ``clat_nd``, ``clat_random``
  (Alg. 1, Eq. 8-9), registered in :data:`robustft.methods.METHODS`;
* :mod:`.protocol` — the evaluation protocol: PGD restarts, APGD-CE, transfer matrix, ε sweep
  (Sec. 4.1, Tables 2 and 8, Figure 4);
* :mod:`.tables` — the table rows that are not one run's ``eval.json`` (Tables 2, 3, 6, 7).

What CLAT shares with the rest lives with the rest: the feature-space objective runs through
the one PGD loop (:mod:`robustft.attacks.feature_pgd`), the architectures are
:mod:`robustft.models.cifar`, the parameter schema is :class:`robustft.plan.catalog.CLATParams`
and the threat model :data:`robustft.threat_models.CLAT_PAPER`.

Nothing is imported eagerly: :mod:`.tables` serves the torch-free aggregation step, so the
package itself must not pull in torch. The names listed in ``__all__`` (layers and
criticality) load their module on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "candidate_layers": "layers",
    "following_batchnorm": "layers",
    "layer_index": "layers",
    "layer_parameters": "layers",
    "PAPER_K": "criticality",
    "Criticality": "criticality",
    "FeatureTap": "criticality",
    "default_k": "criticality",
    "layer_criticality": "criticality",
    "tap_modules": "criticality",
}

__all__ = [
    "PAPER_K",
    "Criticality",
    "FeatureTap",
    "candidate_layers",
    "default_k",
    "following_batchnorm",
    "layer_criticality",
    "layer_index",
    "layer_parameters",
    "tap_modules",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
