"""Attacks and correctness: the PGD loop (:mod:`.pgd`), what a model gets right
(:mod:`.accuracy`), CLAT's feature-space objective (:mod:`.feature_pgd`) and the reference
AutoAttack through pyautoattack (:mod:`.autoattack`, imported on demand)."""

from robustft.attacks.accuracy import correct, eval_mode, predict
from robustft.attacks.pgd import PGDConfig, ascend, pgd, pgd_accuracy

__all__ = ["PGDConfig", "ascend", "correct", "eval_mode", "pgd", "pgd_accuracy", "predict"]
