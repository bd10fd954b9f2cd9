"""Standard (clean) training: minimise CE on the clean inputs, no attack.

    L = CE(h(x), y)

The clean pre-training of CLAT Table 9 (Appendix C.1: CLAT applied to models "trained on a clean
dataset only", Sec. 3.3): a ``standard`` run is the "X" of a "clean + CLAT" chain.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F

from robustft.methods.base import BatchOutput, Method, TrainContext, accuracy
from robustft.plan import catalog


class Standard(Method):
    name = "standard"
    display_name = catalog.display_name("standard")
    defaults: ClassVar[dict[str, Any]] = catalog.params_defaults("standard")

    def batch_loss(self, model, x, y, ctx: TrainContext) -> BatchOutput:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return BatchOutput(
            loss=loss, stats={"loss_ce_nat": loss.detach(), "train_nat_acc": accuracy(logits, y)}
        )
