"""CLAT's adversarial-training baselines: each loss against an independent computation.

"Independent" = written out here without the method's helpers: pure-Python softmax/CE/KL on
the logits, a hand-written attack loop, the official AWP proxy procedure (deep copy + one SGD
step), LoRA merged by hand.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from robustft.attacks import PGDConfig
from robustft.methods import TrainContext, build_method
from robustft.methods.mart import mart_loss
from robustft.methods.rift import interpolate, module_robust_criticality
from robustft.models import LoraConv2d, build_model
from robustft.schedules import CosineLR, CyclicLR

EPS, STEP = 8 / 255, 2 / 255


def ctx(steps=2, epoch=0, eps=EPS, seed=0):
    return TrainContext(
        train_attack=PGDConfig(eps, STEP, steps, True),
        generator=torch.Generator().manual_seed(seed),
        batch_size=6,
        epoch=epoch,
    )


def data(n=6, classes=4, res=8):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, res, res, generator=g), torch.randint(0, classes, (n,), generator=g)


def tiny_model(classes=4):
    torch.manual_seed(0)
    return build_model("cifar_resnet18", classes, width=2).train()


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- pure-Python references --------------------------------------------------------------------
def softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def manual_ce(logits, y):
    return sum(-math.log(softmax(r)[t]) for r, t in zip(logits.tolist(), y.tolist())) / len(y)


def manual_kl_sum(p_logits, q_logits):
    total = 0.0
    for pl, ql in zip(p_logits.tolist(), q_logits.tolist()):
        p, q = softmax(pl), softmax(ql)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q))
    return total


def manual_mart(clean, adv, y, beta):
    bce, rob = 0.0, 0.0
    for c, a, t in zip(clean.tolist(), adv.tolist(), y.tolist()):
        p, q = softmax(c), softmax(a)
        wrong = max((k for k in range(len(q)) if k != t), key=lambda k: q[k])
        bce += -math.log(q[t]) - math.log(1.0001 - q[wrong] + 1e-12)
        kl = sum(pi * (math.log(pi) - math.log(qi + 1e-12)) for pi, qi in zip(p, q))
        rob += kl * (1.0000001 - p[t])
    n = len(y)
    return bce / n + beta * rob / n


def sign_ascent(objective, x, x0, eps, step, steps):
    """Hand-written projected sign ascent from the start point x0."""
    xa = x0.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(objective(xa), xa)
        xa = xa.detach() + step * g.sign()
        xa = torch.clamp(torch.clamp(xa, x - eps, x + eps), 0, 1)
    return xa.detach()


# --- TRADES ----------------------------------------------------------------------------------
def test_trades_attack_and_loss():
    m = build_method("trades")
    model, (x, y) = tiny_model(), data()
    state = snapshot(model)
    # the official attack: x + 0.001·N(0, I) (not projected before the first gradient),
    # maximise Σ KL(p_clean ‖ p_adv), eval mode
    g = torch.Generator().manual_seed(0)
    x0 = x + 0.001 * torch.randn(x.shape, generator=g)  # first gradient here, unclipped
    model.eval()
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    ref_adv = sign_ascent(
        lambda z: (p * (p.log() - F.log_softmax(model(z), 1))).sum(), x, x0, EPS, STEP, 2
    )
    model.train()
    out = m.batch_loss(model, x, y, ctx())
    model.load_state_dict(state)
    with torch.no_grad():  # train mode: same batch statistics as inside batch_loss
        clean, adv = model(x), model(ref_adv)
    expected = manual_ce(clean, y) + 6.0 * manual_kl_sum(clean, adv) / len(y)
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)
    assert out.stats["loss_kl"] == pytest.approx(manual_kl_sum(clean, adv) / len(y), rel=1e-3)


# --- MART ------------------------------------------------------------------------------------
def test_mart_loss_formula():
    g = torch.Generator().manual_seed(2)
    clean, adv, y = (
        torch.randn(5, 4, generator=g),
        torch.randn(5, 4, generator=g),
        torch.tensor([0, 1, 2, 3, 1]),
    )
    loss, _, _ = mart_loss(clean, adv, y, beta=5.0)
    assert loss.item() == pytest.approx(manual_mart(clean, adv, y, 5.0), rel=1e-5)


def test_mart_batch_loss_uses_ce_attack_from_gaussian_start():
    m = build_method("mart")
    model, (x, y) = tiny_model(), data()
    state = snapshot(model)
    g = torch.Generator().manual_seed(0)
    x0 = x + 0.001 * torch.randn(x.shape, generator=g)  # first gradient here, unclipped
    model.eval()
    ref_adv = sign_ascent(lambda z: F.cross_entropy(model(z), y), x, x0, EPS, STEP, 2)
    model.train()
    out = m.batch_loss(model, x, y, ctx())
    model.load_state_dict(state)
    with torch.no_grad():
        clean, adv = model(x), model(ref_adv)
    assert out.loss.item() == pytest.approx(manual_mart(clean, adv, y, 5.0), rel=1e-4)


# --- AWP -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["awp", "trades_awp"])
def test_awp_matches_official_proxy_procedure(variant):
    m = build_method(variant, warmup=0)
    gamma = m.hp["gamma"]
    model, (x, y) = tiny_model(), data()
    state = snapshot(model)
    x_adv = m.craft(model, x, y, ctx())
    model.load_state_dict(state)

    def base(net):
        if variant == "awp":
            return F.cross_entropy(net(x_adv), y)
        clean, adv = net(x), net(x_adv)
        return F.cross_entropy(clean, y) + 6.0 * F.kl_div(
            F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum"
        ) / len(y)

    # official: proxy copy, one plain SGD step on −L, layer-wise relative diff, w + γ·v
    proxy = copy.deepcopy(model).train()
    opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
    opt.zero_grad()
    (-base(proxy)).backward()
    opt.step()
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        for (name, w), pw, qw in zip(
            model.named_parameters(), proxy.parameters(), perturbed.parameters()
        ):
            if w.dim() <= 1:
                continue
            diff = pw - w
            qw.add_(gamma * diff * w.norm() / (diff.norm() + 1e-20))
    expected = base(perturbed)
    expected.backward()

    out = m.batch_loss(model, x, y, ctx())
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    out.loss.backward()
    for (name, p), q in zip(model.named_parameters(), perturbed.parameters()):
        assert (p.grad - q.grad).norm() <= 1e-3 * q.grad.norm(), name
    # the weights themselves are untouched (nothing to undo)
    for k, v in state.items():
        if "running" not in k and "num_batches" not in k:
            assert torch.equal(model.state_dict()[k], v), k


def test_awp_warmup_gives_the_plain_base_loss():
    m = build_method("trades_awp")  # AWP from epoch 10
    model, (x, y) = tiny_model(), data()
    state = snapshot(model)
    plain = build_method("trades").batch_loss(model, x, y, ctx(epoch=0)).loss.item()
    model.load_state_dict(state)
    assert m.batch_loss(model, x, y, ctx(epoch=0)).loss.item() == pytest.approx(plain, rel=1e-5)
    model.load_state_dict(state)
    assert m.batch_loss(model, x, y, ctx(epoch=10)).stats["awp_rel_norm"] == 5e-3


# --- Fast-AT ---------------------------------------------------------------------------------
def test_fast_at_fgsm_random_start():
    m = build_method("fast_at")
    model, (x, y) = tiny_model(), data()
    state = snapshot(model)
    g = torch.Generator().manual_seed(0)
    delta = (2 * torch.rand(x.shape, generator=g) - 1) * EPS
    x0 = (x + delta).clamp(0, 1)
    ref_adv = sign_ascent(lambda z: F.cross_entropy(model(z), y), x, x0, EPS, 1.25 * EPS, 1)
    model.load_state_dict(state)  # the train-mode attack updated BN statistics
    out = m.batch_loss(model, x, y, ctx())
    model.load_state_dict(state)
    with torch.no_grad():
        model(x0)  # replay the attack's train-mode forward (statistics update order)
        adv = model(ref_adv)
    assert out.loss.item() == pytest.approx(manual_ce(adv, y), rel=1e-4)


def test_cyclic_and_cosine_schedules():
    cyc = CyclicLR(0.2, total=4)
    assert cyc.lr_for_step(0, 0, 10) == 0.0
    assert cyc.lr_for_step(2, 0, 10) == pytest.approx(0.2)
    assert cyc.lr_for_step(1, 5, 10) == pytest.approx(0.15)
    assert cyc.lr_for_step(3, 5, 10) == pytest.approx(0.05)
    cos = CosineLR(0.1, total=100, offset=50)
    assert cos.lr_for_epoch(0) == pytest.approx(0.05)  # second half of a shared 100-epoch cosine
    assert CosineLR(0.1, total=10).lr_for_epoch(0) == pytest.approx(0.1)


# --- LoRA fine-tuning --------------------------------------------------------------------------
def test_lora_ft_reparametrises_trains_factors_and_merges():
    m = build_method("lora_ft", rank=2)
    model, (x, _) = tiny_model(), data()
    plain = copy.deepcopy(model).eval()
    m.prepare_model(model)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)  # B = 0 at the start
    params = m.trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    n_lora = sum(p.numel() for p in params) - sum(p.numel() for p in model.head.parameters())
    convs = [mod for mod in plain.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert n_lora == sum(
        2 * c.kernel_size[0] ** 2 * (c.in_channels + c.out_channels) for c in convs
    )
    # a non-zero update: the plain forward sees W0 + s·(B A)
    deltas = [mod for mod in model.modules() if isinstance(mod, LoraConv2d)]
    assert all(d.always_on and d.init == "kaiming" for d in deltas)
    torch.manual_seed(5)
    with torch.no_grad():
        for d in deltas:
            d.lora_B.normal_(0, 0.1)
        for (name, c), d in zip(
            [(n, c) for n, c in plain.named_modules() if isinstance(c, torch.nn.Conv2d)], deltas
        ):
            c.weight += (d.lora_B @ d.lora_A).view(c.weight.shape) * d.scaling
        assert torch.allclose(model(x), plain(x), atol=1e-5)
    m.finish(model, evaluate=dict)
    fresh = tiny_model().eval()
    fresh.load_state_dict(model.state_dict())  # an ordinary state dict after the merge
    with torch.no_grad():
        assert torch.allclose(fresh(x), plain(x), atol=1e-5)


# --- RiFT ------------------------------------------------------------------------------------
def test_rift_mrc_respects_radius_and_restores_weights():
    model, (x, y) = tiny_model(), data()
    model.eval()
    conv = model.layer2[0].conv1
    before = conv.weight.detach().clone()
    mrc = module_robust_criticality(model, conv, x, y, lr=10.0, epochs=3, radius=0.1, batch_size=4)
    assert mrc >= 0.0
    assert torch.equal(conv.weight, before)
    # a module whose output is multiplied by zero has no influence: MRC = 0
    with torch.no_grad():
        model.layer4[1].bn2.weight.zero_()
        model.layer4[1].bn2.bias.zero_()
    assert module_robust_criticality(model, model.layer4[1].conv2, x, y, epochs=2) == pytest.approx(
        0.0, abs=1e-6
    )


def test_rift_interpolation_and_alpha_rule():
    a = {"w": torch.zeros(3), "n": torch.tensor(1)}
    b = {"w": torch.ones(3), "n": torch.tensor(7)}
    mid = interpolate(b, a, 0.3)
    assert torch.allclose(mid["w"], torch.full((3,), 0.3)) and mid["n"].item() == 7
    m = build_method("rift", tolerance=0.01, alphas=5)
    model = tiny_model()
    m.theta_at = snapshot(model)
    # α = 0, .25, .5, .75, 1: clean rises, robustness drops too much after α = .5
    table = iter([(0.50, 0.40), (0.60, 0.41), (0.70, 0.395), (0.80, 0.35), (0.90, 0.30)])

    def evaluate():
        nat, rob = next(table)
        return {"val_nat_acc": nat, "val_pgd_acc": rob}

    info = m.finish(model, evaluate)
    assert info["rift_alpha"] == 0.5
    assert [g["alpha"] for g in info["rift_grid"]] == [0.0, 0.25, 0.5, 0.75, 1.0]


# --- through the shared loop --------------------------------------------------------------------
TRAIN = {
    "arch": "cifar_resnet18",
    "width": 2,
    "seed": 0,
    "epochs": 1,
    "batch_size": 12,
    "lr": 0.05,
    "train_attack": {"eps": EPS, "step": 4 / 255, "steps": 1, "random_start": True},
    "eval_attack": {"eps": EPS, "step": 4 / 255, "steps": 1, "random_start": False},
    "lr_schedule": {"type": "multistep", "milestones": [1], "factor": 0.1},
}


def test_rift_and_lora_ft_runs_write_plain_models(tmp_path, tiny_data):
    from robustft.evaluate import load_trained
    from robustft.train import TrainConfig, train_run

    for method, params in (
        ("rift", {"mrc_examples": 12, "mrc_epochs": 1, "alphas": 3}),
        ("lora_ft", {"rank": 1}),
    ):
        cfg = TrainConfig(run_name=method, method=method, method_params=params, **TRAIN)
        out = tmp_path / method
        train_run(cfg, tiny_data, None, tmp_path / f"ck_{method}", out)
        payload = torch.load(out / "model_best.pt", weights_only=True)
        assert "finish" in payload
        model = load_trained(
            {**cfg.__dict__}, out / "model_best.pt", tiny_data, torch.device("cpu")
        )
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
        if method == "rift":
            assert 0.0 <= payload["finish"]["rift_alpha"] <= 1.0
            assert payload["finish"]["rift_module"] in payload["finish"]["rift_mrc"]
