"""Registry of training methods: one module per method behind :class:`Method`.

Owns :data:`METHODS` (name -> class, the one registry; a new method is added to it here) and
:func:`build_method`.
"""

from __future__ import annotations

from robustft.methods.autolora import AutoLoRa
from robustft.methods.awp import AWP, TRADESAWP
from robustft.methods.base import BatchOutput, Method, TrainContext
from robustft.methods.clat import CLAT, CLATND, CLATFast, CLATRandom
from robustft.methods.fast_at import FastAT
from robustft.methods.lora_ft import LoRAFT
from robustft.methods.mart import MART
from robustft.methods.pgd_at import PGDAT
from robustft.methods.rift import RiFT
from robustft.methods.trades import TRADES
from robustft.methods.twins import TWINS
from robustft.methods.vanilla_rft import VanillaRFT

METHODS: dict[str, type[Method]] = {m.name: m for m in (VanillaRFT, TWINS, AutoLoRa, PGDAT)}
# CLAT's adversarial-training baselines (CLAT spec §2-3)
METHODS.update({m.name: m for m in (TRADES, MART, AWP, TRADESAWP, FastAT, RiFT, LoRAFT)})
# CLAT and its named variants (CLAT spec §1)
METHODS.update({m.name: m for m in (CLAT, CLATFast, CLATND, CLATRandom)})


def build_method(name: str, **hparams) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name](**hparams)


__all__ = ["METHODS", "BatchOutput", "Method", "TrainContext", "build_method"]
