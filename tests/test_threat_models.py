"""The papers' threat models (robustft.threat_models): their values, and that every default
ε/step of the code is one of them rather than a second spelling."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from robustft.threat_models import AUTOLORA_OFFICIAL, AUTOLORA_PAPER, CLAT_PAPER, THREAT_MODELS

SRC = Path(__file__).resolve().parents[1] / "src" / "robustft"


def test_threat_models_are_the_papers():
    # AutoLoRa Sec. 5: PGD-10, 8/255, step 2/255; training from a random start, evaluation not
    assert AUTOLORA_PAPER.train_attack() == {
        "eps": 8 / 255,
        "step": 2 / 255,
        "steps": 10,
        "random_start": True,
    }
    assert AUTOLORA_PAPER.eval_attack() == {
        "eps": 8 / 255,
        "step": 2 / 255,
        "steps": 10,
        "random_start": False,
    }
    # the official scripts' -e 0.0314 and step 0.00784 (spec §4, §11.14)
    assert AUTOLORA_OFFICIAL.budget() == {"eps": 0.0314, "step": 0.00784}
    # CLAT Sec. 4.1: ε 0.03, α 0.007, 10 steps, random start in training and evaluation
    for attack in (CLAT_PAPER.train_attack(), CLAT_PAPER.eval_attack()):
        assert attack == {"eps": 0.03, "step": 0.007, "steps": 10, "random_start": True}
    assert set(THREAT_MODELS) == {"autolora_paper", "autolora_official", "clat_paper"}
    # every call hands out a fresh dict: a caller editing its copy changes no default
    AUTOLORA_PAPER.train_attack()["eps"] = 1.0
    assert AUTOLORA_PAPER.train_attack()["eps"] == 8 / 255


def test_every_default_budget_is_a_named_threat_model():
    from robustft import selfcheck
    from robustft.attacks import PGDConfig
    from robustft.attacks.autoattack import run_autoattack
    from robustft.clat.protocol import CLAT_EVAL, apgd_ce, epsilon_sweep
    from robustft.contracts import ClatProtocol, TrainConfig, TransferSettings
    from robustft.plan.settings import PRESETS

    assert PGDConfig() == PGDConfig(**AUTOLORA_PAPER.eval_attack())
    train = TrainConfig(run_name="r", method="pgd_at", arch="resnet_mini", seed=0)
    assert train.train_attack == AUTOLORA_PAPER.train_attack()
    assert train.eval_attack == AUTOLORA_PAPER.eval_attack()
    for preset, threat in (("paper", AUTOLORA_PAPER), ("official", AUTOLORA_OFFICIAL)):
        training = PRESETS[preset]["training"]
        assert training["train_attack"] == training["eval_attack"] == threat.budget()
    assert ClatProtocol().attack == TransferSettings().attack == CLAT_PAPER.eval_attack()
    assert CLAT_EVAL == PGDConfig(**CLAT_PAPER.eval_attack())
    assert apgd_ce.__kwdefaults__["eps"] == CLAT_PAPER.eps
    assert epsilon_sweep.__kwdefaults__["step_ratio"] == pytest.approx(
        CLAT_PAPER.step / CLAT_PAPER.eps
    )
    assert run_autoattack.__kwdefaults__["eps"] == AUTOLORA_PAPER.eps
    assert selfcheck.AA_EPS == AUTOLORA_PAPER.eps
    assert selfcheck.EVAL_PGD == PGDConfig(**{**AUTOLORA_PAPER.eval_attack(), "random_start": True})


# --- one spelling ---------------------------------------------------------------------------
#: names under which a number is an attack budget
BUDGET_NAMES = {"eps", "epsilon", "step", "step_size"}
_EPS_CONSTANT = re.compile(r"(^|_)eps($|_)", re.IGNORECASE)  # AA_EPS, EPS_TRAIN, ...


def _numeric(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int | float) and not isinstance(node.value, bool)
    if isinstance(node, ast.BinOp):
        return _numeric(node.left) and _numeric(node.right)
    if isinstance(node, ast.UnaryOp):
        return _numeric(node.operand)
    return False


def spelled_budgets(source: str) -> list[tuple[int, str, str]]:
    """(line, name, expression) of every numeric ε/step default in ``source``: a keyword
    argument, a parameter default, a dict entry ``"eps": ...`` or an assignment to such a name.
    Numbers below 1e-3 (BatchNorm/optimiser ε) and 0 (no attack) are not budgets."""
    found = []

    def check(name: str, node: ast.AST | None) -> None:
        if node is None or not _numeric(node):
            return
        value = eval(compile(ast.Expression(node), "<budget>", "eval"))  # constants only
        if value >= 1e-3:
            found.append((node.lineno, name, ast.unparse(node)))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg in BUDGET_NAMES:
            check(node.arg, node.value)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            positional = args.posonlyargs + args.args
            with_default = positional[len(positional) - len(args.defaults) :]
            for arg, default in [
                *zip(with_default, args.defaults),
                *zip(args.kwonlyargs, args.kw_defaults),
            ]:
                if arg.arg in BUDGET_NAMES:
                    check(arg.arg, default)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value in BUDGET_NAMES:
                    check(key.value, value)
        elif isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            for target in targets:
                if isinstance(target, ast.Name) and (
                    target.id in BUDGET_NAMES or _EPS_CONSTANT.search(target.id)
                ):
                    check(target.id, node.value)
    return found


def test_the_scan_finds_the_spellings_it_looks_for():
    source = (
        "from dataclasses import dataclass\n"
        "AA_EPS = 8 / 255\n"
        "@dataclass\nclass C:\n    eps: float = 0.03\n    step: float = 2 / 255\n"
        "def f(x, *, eps=0.0314, momentum=0.9): return g(x, step=0.007)\n"
        "D = {'eps': 0.03, 'steps': 10, 'lr': 0.1}\n"
        "bn = dict(eps=1e-5)\n"
        "none = dict(eps=0.0)\n"
    )
    assert sorted((line, n, e) for line, n, e in spelled_budgets(source)) == [
        (2, "AA_EPS", "8 / 255"),
        (5, "eps", "0.03"),
        (6, "step", "2 / 255"),
        (7, "eps", "0.0314"),
        (7, "step", "0.007"),
        (8, "eps", "0.03"),
    ]


def test_no_budget_is_spelled_outside_the_threat_model_module():
    spelled = {}
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "threat_models.py":
            continue
        found = spelled_budgets(path.read_text(encoding="utf-8"))
        if found:
            spelled[str(path.relative_to(SRC))] = found
    assert spelled == {}, (
        f"ε/step spelled as numbers; refer to robustft.threat_models instead: {spelled}"
    )
