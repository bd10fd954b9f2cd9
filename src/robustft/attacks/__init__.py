"""Attacks: PGD for training and evaluation; the reference AutoAttack through pyautoattack."""

from robustft.attacks.pgd import PGDConfig, eval_mode, pgd, pgd_accuracy

__all__ = ["PGDConfig", "eval_mode", "pgd", "pgd_accuracy"]
