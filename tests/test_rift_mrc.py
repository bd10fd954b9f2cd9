"""RiFT's module robust criticality (MRC) against the official ``layer_sharpness`` procedure.

The reference below is written out by hand from ``microsoft/robustlearn`` ``RiFT/main.py``
(a deep copy in eval mode, ``torch.optim.SGD(lr)`` on −CE for the module weight only, the
``torch.linalg.norm`` ratio projection after every epoch, then a separate evaluation pass whose
loss enters a running max that starts at 0). The old project procedure (the max of the running
minibatch losses seen during ascent, at pre-step weights, starting from the clean loss) is
written out too, to show the tests separate the two.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from robustft.methods import build_method
from robustft.methods.rift import module_robust_criticality
from robustft.models import build_model

RADIUS = 0.1


def tiny(seed: int = 0, n: int = 10):
    torch.manual_seed(seed)
    model = build_model("resnet_mini", 5, width=4).train()
    g = torch.Generator().manual_seed(seed + 1)
    return model, torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


def permutations(n: int, epochs: int, seed: int | None) -> list[torch.Tensor]:
    """The ascent order of every epoch: one ``randperm`` per epoch from the generator."""
    if seed is None:
        return [torch.arange(n)] * epochs
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g) for _ in range(epochs)]


def reference_mrc(model, param_name, x, y, *, lr, epochs, batch_size, orders):
    clone = copy.deepcopy(model).eval()
    for name, p in clone.named_parameters():
        p.requires_grad_(name == param_name)
    weight = dict(clone.named_parameters())[param_name]
    init = weight.detach().clone()
    optimizer = torch.optim.SGD([weight], lr=lr)

    def evaluate() -> float:
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(y), batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                total += F.cross_entropy(clone(xb), yb).item() * len(yb)
        return total / len(y)

    origin = evaluate()
    max_loss = 0.0
    for epoch in range(epochs):
        for i in range(0, len(y), batch_size):
            index = orders[epoch][i : i + batch_size]
            optimizer.zero_grad()
            (-F.cross_entropy(clone(x[index]), y[index])).backward()
            optimizer.step()
        with torch.no_grad():
            diff = weight - init
            times = torch.linalg.norm(diff) / torch.linalg.norm(init)
            if times > RADIUS:
                weight.copy_(init + diff / times * RADIUS)
        loss = evaluate()
        max_loss = max(max_loss, loss)
    return max_loss - origin


def old_project_mrc(model, param_name, x, y, *, lr, epochs, batch_size):
    """The procedure before the fix: running minibatch losses at pre-step weights, max from the
    clean loss."""
    clone = copy.deepcopy(model).eval()
    weight = dict(clone.named_parameters())[param_name]
    init = weight.detach().clone()
    with torch.no_grad():
        base = F.cross_entropy(clone(x), y).item()
    worst = base
    for _ in range(epochs):
        seen = 0.0
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            loss = F.cross_entropy(clone(xb), yb)
            (g,) = torch.autograd.grad(loss, weight)
            with torch.no_grad():
                weight.add_(lr * g)
            seen += loss.item() * len(yb)
        with torch.no_grad():
            diff = weight - init
            if diff.norm() > RADIUS * init.norm():
                weight.copy_(init + diff * (RADIUS * init.norm() / diff.norm()))
        worst = max(worst, seen / len(y))
    return worst - base


def module_of(model, name):
    return dict(model.named_modules())[name]


@pytest.mark.parametrize(
    ("name", "lr", "shuffle_seed"),
    [("head", 10.0, None), ("layer2.0.conv2", 1.0, 7), ("layer3.0.conv1", 10.0, 3)],
)
def test_mrc_equals_the_official_procedure(name, lr, shuffle_seed):
    """(b) separate evaluation pass at the projected weights, max from 0, minus the clean loss."""
    model, x, y = tiny()
    epochs, bs = 3, 4  # 10 examples: the last batch of every pass is a partial one
    expected = reference_mrc(
        model,
        f"{name}.weight",
        x,
        y,
        lr=lr,
        epochs=epochs,
        batch_size=bs,
        orders=permutations(len(y), epochs, shuffle_seed),
    )
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    got = module_robust_criticality(
        model,
        module_of(model, name),
        x,
        y,
        lr=lr,
        epochs=epochs,
        radius=RADIUS,
        batch_size=bs,
        shuffle=shuffle_seed is not None,
        generator=generator,
    )
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_old_running_max_differs_from_the_official_value():
    """(d) on this module the old procedure is 10× off, so the test above fails on it."""
    model, x, y = tiny()
    expected = reference_mrc(
        model,
        "head.weight",
        x,
        y,
        lr=10.0,
        epochs=3,
        batch_size=4,
        orders=permutations(len(y), 3, None),
    )
    old = old_project_mrc(model, "head.weight", x, y, lr=10.0, epochs=3, batch_size=4)
    got = module_robust_criticality(
        model, model.head, x, y, lr=10.0, epochs=3, batch_size=4, shuffle=False
    )
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert abs(old - expected) > 0.1, (old, expected)


def test_evaluated_weights_stay_in_the_ball_and_are_restored():
    """(a) every evaluation (after each ascent epoch's projection) sees ‖W − W⁰‖ ≤ 0.1·‖W⁰‖ in
    the code's norm, although inside an epoch the ascent leaves the ball; (c) everything is
    restored afterwards: weights, requires_grad, train mode, BN statistics."""
    model, x, y = tiny()
    module = model.layer2[0].conv1
    w0 = module.weight.detach().clone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[bool, torch.Tensor]] = []
    hook = module.register_forward_hook(
        lambda mod, args, out: seen.append((torch.is_grad_enabled(), mod.weight.detach().clone()))
    )
    try:
        module_robust_criticality(
            model,
            module,
            x,
            y,
            lr=10.0,
            epochs=4,
            radius=RADIUS,
            batch_size=4,
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        hook.remove()

    def ratio(w):
        return (torch.linalg.norm(w - w0) / torch.linalg.norm(w0)).item()

    evaluated = [w for grad, w in seen if not grad]
    ascent = [w for grad, w in seen if grad]
    assert len(evaluated) == 3 * (1 + 4)  # the clean pass + one pass per epoch, 3 batches each
    assert len(ascent) == 3 * 4
    assert all(ratio(w) <= RADIUS * (1 + 1e-5) for w in evaluated)
    assert max(ratio(w) for w in ascent) > RADIUS  # the projection had work to do
    # the first ascent step of every epoch starts from the projected weights
    assert all(ratio(ascent[3 * e]) <= RADIUS * (1 + 1e-5) for e in range(4))

    assert model.training and module.weight.requires_grad
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_paper_option_includes_the_unperturbed_point():
    """``mrc_max: paper`` = max(0, official): ΔW = 0 is in the constraint set of Eq. 3. On this
    module every projected point has a lower loss than θ, so the official value is negative."""
    model, x, y = tiny(seed=1, n=8)
    module = model.layer2[0].conv1
    kwargs = {"lr": 100.0, "epochs": 1, "batch_size": 2, "shuffle": False}
    official = module_robust_criticality(model, module, x, y, **kwargs)
    paper = module_robust_criticality(model, module, x, y, max_from="paper", **kwargs)
    expected = reference_mrc(
        model,
        "layer2.0.conv1.weight",
        x,
        y,
        lr=100.0,
        epochs=1,
        batch_size=2,
        orders=permutations(len(y), 1, None),
    )
    assert official == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert official < -1e-3
    assert paper == 0.0
    model, x, y = tiny()
    kwargs = {"lr": 1.0, "epochs": 2, "batch_size": 4, "shuffle": False}
    positive = module_robust_criticality(model, model.head, x, y, **kwargs)
    assert positive > 0
    assert module_robust_criticality(
        model, model.head, x, y, max_from="paper", **kwargs
    ) == pytest.approx(positive)


def test_bad_mrc_options_are_rejected():
    model, x, y = tiny()
    with pytest.raises(ValueError, match="mrc_max"):
        build_method("rift", mrc_max="both")
    with pytest.raises(ValueError, match="mrc_max"):
        module_robust_criticality(model, model.head, x, y, max_from="both")
    with pytest.raises(ValueError, match="mrc_epochs"):
        module_robust_criticality(model, model.head, x, y, epochs=0)
