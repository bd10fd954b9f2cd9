"""Registry of training methods: one module per method behind :class:`Method`.

Owns :data:`METHODS` (name -> class, the one registry; a new method is added to it here) and
:func:`build_method`. CLAT's methods live with the rest of CLAT (:mod:`robustft.clat.method`).

The registry is built on first use (``robustft.methods.METHODS``, ``from robustft.methods
import METHODS`` or :func:`build_method`), not when this package is imported: the CLAT classes
subclass :class:`Method` from :mod:`robustft.methods.base`, so importing this package eagerly
would make ``import robustft.clat.method`` circular whenever it came first.
"""

from __future__ import annotations

from typing import Any

from robustft.methods.base import BatchOutput, Method, TrainContext

#: name -> method class (built by :func:`_registry` on first access)
METHODS: dict[str, type[Method]]


def _registry() -> dict[str, type[Method]]:
    from robustft.clat.method import CLAT, CLATND, CLATFast, CLATRandom
    from robustft.methods.autolora import AutoLoRa
    from robustft.methods.awp import AWP, TRADESAWP
    from robustft.methods.fast_at import FastAT
    from robustft.methods.lora_ft import LoRAFT
    from robustft.methods.mart import MART
    from robustft.methods.pgd_at import PGDAT
    from robustft.methods.rift import RiFT
    from robustft.methods.score import SCORE
    from robustft.methods.standard import Standard
    from robustft.methods.trades import TRADES
    from robustft.methods.twins import TWINS
    from robustft.methods.vanilla_rft import VanillaRFT

    registry: dict[str, type[Method]] = {
        m.name: m for m in (VanillaRFT, TWINS, AutoLoRa, PGDAT, Standard)
    }
    # CLAT's adversarial-training baselines (CLAT spec §2-3)
    registry.update(
        {m.name: m for m in (TRADES, MART, AWP, TRADESAWP, FastAT, RiFT, LoRAFT, SCORE)}
    )
    # CLAT and its named variants (CLAT spec §1)
    registry.update({m.name: m for m in (CLAT, CLATFast, CLATND, CLATRandom)})
    return registry


def __getattr__(name: str) -> Any:
    if name == "METHODS":
        registry = globals()["METHODS"] = _registry()
        return registry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_method(name: str, **hparams) -> Method:
    methods = __getattr__("METHODS") if "METHODS" not in globals() else globals()["METHODS"]
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; known: {sorted(methods)}")
    return methods[name](**hparams)


__all__ = ["METHODS", "BatchOutput", "Method", "TrainContext", "build_method"]
