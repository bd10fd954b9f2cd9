"""Randomness is drawn in one place (``robustft.rng``) and batches keep their random order.

The CUDA failure this guards against: a CPU ``torch.Generator`` passed to
``torch.rand(..., device=x.device)`` with ``x`` on a GPU raises. No machine of the project has a
GPU, so the test uses PyTorch's ``meta`` device, which refuses a CPU generator in the same way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

from robustft import rng
from robustft.attacks import ascend, pgd
from robustft.batches import Split, train_batches

SRC = Path(__file__).resolve().parents[1] / "src" / "robustft"
TORCH_RANDOM = {
    "rand",
    "randn",
    "randint",
    "randperm",
    "rand_like",
    "randn_like",
    "randint_like",
    "bernoulli",
    "multinomial",
    "normal",
    "poisson",
    "Generator",
}
IN_PLACE_RANDOM = {
    "uniform_",
    "normal_",
    "random_",
    "bernoulli_",
    "exponential_",
    "geometric_",
    "cauchy_",
    "log_normal_",
}


def _random_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        owner_name = ast.unparse(owner)
        if owner_name == "torch" and attr in TORCH_RANDOM:
            found.append((node.lineno, f"torch.{attr}"))
        # nn.init.* draws weights from the global RNG seeded per run: model initialisation.
        elif attr in IN_PLACE_RANDOM and owner_name not in ("nn.init", "torch.nn.init"):
            found.append((node.lineno, f".{attr}"))
    return found


def test_no_module_but_rng_draws_torch_random_numbers():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "rng.py" and path.parent == SRC:
            continue
        for line, call in _random_calls(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(SRC)}:{line} {call}")
    assert not offenders, (
        "draw random numbers through robustft.rng (generator device → tensor "
        "device), not directly: " + ", ".join(offenders)
    )


def test_draws_happen_on_the_generator_device_and_land_on_the_tensor_device(monkeypatch):
    """CUDA refuses ``torch.rand(..., generator=<CPU generator>, device="cuda")``; no machine
    here has CUDA, so the draw's device is observed directly, with the tensor on ``meta``."""
    seen = []
    for name in ("rand", "randn"):
        real = getattr(torch, name)

        def spy(*args, _real=real, **kwargs):
            seen.append(torch.device(kwargs["device"]))
            return _real(*args, **kwargs)

        monkeypatch.setattr(torch, name, spy)
    like = torch.empty(2, 3, device="meta")
    g = rng.new_generator(0)
    assert rng.uniform(like, g).device.type == "meta"
    assert rng.normal(like, g).device.type == "meta"
    assert seen == [g.device, g.device]


def test_attacks_start_from_a_cpu_generator_on_another_device():
    """PGD's uniform start and TRADES' Gaussian start with inputs on a non-CPU device."""
    x = torch.zeros(2, 3, 4, 4, device="meta")
    y = torch.zeros(2, dtype=torch.long, device="meta")
    weight = torch.zeros(48, 5, device="meta")

    def logits(z):
        return z.flatten(1) @ weight

    out = pgd(
        logits, x, y, eps=0.1, step=0.05, steps=1, random_start=True, generator=rng.new_generator(0)
    )
    assert out.device.type == "meta"
    out = ascend(
        lambda z: logits(z).sum(),
        x,
        eps=0.1,
        step=0.05,
        steps=1,
        init="normal",
        generator=rng.new_generator(0),
    )
    assert out.device.type == "meta"


def test_cpu_draws_are_the_streams_of_the_direct_calls():
    """Routing through rng keeps CPU results bit-identical to the direct draws."""
    like = torch.empty(4, 3, 8, 8)
    a, b = rng.new_generator(5), torch.Generator().manual_seed(5)
    assert torch.equal(rng.uniform(like, a), torch.rand(like.shape, generator=b))
    assert torch.equal(rng.normal(like, a), torch.randn(like.shape, generator=b))
    assert torch.equal(rng.randperm(10, a), torch.randperm(10, generator=b))
    assert torch.equal(rng.randint(0, 9, (3, 2), a), torch.randint(0, 9, (3, 2), generator=b))
    assert torch.equal(rng.coin(6, a), torch.rand(6, generator=b) < 0.5)


def _class_sorted_split(classes: int = 4, per_class: int = 16) -> Split:
    y = np.repeat(np.arange(classes), per_class)
    x = np.zeros((len(y), 2, 2, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(len(y))  # row id, to check the order of every batch
    return Split(x, y)


def test_batches_come_in_permutation_order_not_sorted():
    """Splits are stored sorted by class; a batch must not be re-sorted (TWINS' halves)."""
    split = _class_sorted_split()
    order = rng.randperm(len(split), rng.new_generator(0)).numpy()
    batches = list(train_batches(split, 16, rng.new_generator(0), augment="none"))
    rows = np.concatenate([(x[:, 0, 0, 0] * 255).round().long().numpy() for x, _ in batches])
    assert (rows == order).all()
    for x, y in batches:
        assert (y.numpy() == split.y[(x[:, 0, 0, 0] * 255).round().long().numpy()]).all()


def test_split_tensors_follow_the_requested_order():
    split = _class_sorted_split()
    index = np.array([40, 3, 17, 3, 60])
    x, y = split.tensors(index)
    assert ((x[:, 0, 0, 0] * 255).round().long().numpy() == index).all()
    assert (y.numpy() == split.y[index]).all()
