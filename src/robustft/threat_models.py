"""The papers' threat models: the one place an ℓ∞ PGD budget (ε, step, steps, start) is spelled.

Owns :class:`ThreatModel` and the named constants below. Every default ε/step elsewhere in the
code refers to one of them: :class:`robustft.attacks.PGDConfig`'s defaults, the attacks of
:class:`robustft.contracts.TrainConfig`, the ``paper``/``official`` presets of
:mod:`robustft.plan.settings`, the CLAT protocol's defaults (:class:`robustft.contracts.ClatProtocol`,
:mod:`robustft.clat.protocol`), :func:`robustft.attacks.autoattack.run_autoattack`'s ε and the
self-check. So changing a budget is one edit, and a second spelling that drifts cannot exist
(``tests/test_threat_models.py`` looks for numeric ε/step defaults outside this module).

Torch-free on purpose: the planning layer (imported by the Snakefile) reads it.

* :data:`AUTOLORA_PAPER` — AutoLoRa Sec. 5 ("Training configurations" / "Evaluation metrics"):
  PGD-10 with ε = 8/255 and step 2/255 for the training and validation data, PGD-10 and
  AutoAttack at 8/255 for the test set. The random start is not printed; the official code's
  (spec autolora_twins_official_code.md §4): training from x + U(−ε, ε), val/test from x.
* :data:`AUTOLORA_OFFICIAL` — the same attacks with the budget the official scripts pass,
  ε = 0.0314 and step 0.00784 (spec §4 and §11.14; < 0.1 % from 8/255 and 2/255).
* :data:`CLAT_PAPER` — CLAT Sec. 4.1: PGD with a random start, ε = 0.03 (ℓ∞), step
  α = 0.007, 10 steps, for training and for the white-box evaluation alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ThreatModel:
    """One paper's ℓ∞ PGD budget, for its training and its evaluation attack.

    The two attacks share ε, step and step count and differ only in the random start, which
    is why a threat model carries one start flag per role.
    """

    name: str
    eps: float
    step: float
    steps: int
    train_random_start: bool
    eval_random_start: bool

    def budget(self) -> dict[str, float]:
        """``{"eps", "step"}``: what a preset overrides (the step count stays the run's)."""
        return {"eps": self.eps, "step": self.step}

    def train_attack(self) -> dict[str, Any]:
        """The training attack as a run's ``train_attack`` setting (fresh dict)."""
        return {**self.budget(), "steps": self.steps, "random_start": self.train_random_start}

    def eval_attack(self) -> dict[str, Any]:
        """The evaluation attack as a run's ``eval_attack`` setting (fresh dict)."""
        return {**self.budget(), "steps": self.steps, "random_start": self.eval_random_start}


#: AutoLoRa Sec. 5 as printed: PGD-10, ε 8/255, step 2/255 (starts: the official code's)
AUTOLORA_PAPER = ThreatModel(
    "autolora_paper",
    eps=8 / 255,
    step=2 / 255,
    steps=10,
    train_random_start=True,
    eval_random_start=False,
)
#: the official AutoLoRa/TWINS scripts' budget, -e 0.0314 and step 0.00784 (spec §4, §11.14)
AUTOLORA_OFFICIAL = ThreatModel(
    "autolora_official",
    eps=0.0314,
    step=0.00784,
    steps=10,
    train_random_start=True,
    eval_random_start=False,
)
#: CLAT Sec. 4.1: ε 0.03, step 0.007, 10 steps, random start, training and evaluation
CLAT_PAPER = ThreatModel(
    "clat_paper", eps=0.03, step=0.007, steps=10, train_random_start=True, eval_random_start=True
)

THREAT_MODELS: dict[str, ThreatModel] = {
    t.name: t for t in (AUTOLORA_PAPER, AUTOLORA_OFFICIAL, CLAT_PAPER)
}

__all__ = ["AUTOLORA_OFFICIAL", "AUTOLORA_PAPER", "CLAT_PAPER", "THREAT_MODELS", "ThreatModel"]
