"""Each method's loss against an independent computation, and AutoLoRa's gradient routing."""

import math

import pytest
import torch

from robustft.attacks import PGDConfig
from robustft.methods import TrainContext, build_method
from robustft.methods.base import kl_clean_adv
from robustft.models import build_model


def ctx(steps=2, random_start=True):
    return TrainContext(
        train_attack=PGDConfig(8 / 255, 2 / 255, steps, random_start),
        generator=torch.Generator().manual_seed(0),
        batch_size=8,
    )


def data(n=8, classes=5):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 16, 16, generator=g), torch.randint(0, classes, (n,), generator=g)


def model_for(method, classes=5):
    torch.manual_seed(0)
    return build_model("resnet_mini", classes, width=4, **method.model_kwargs()).train()


def manual_kl(p_logits, q_logits):
    """Σ_i Σ_c p_ic (log p_ic − log q_ic), written out without F.kl_div."""
    total = 0.0
    for pl, ql in zip(p_logits.tolist(), q_logits.tolist()):
        zp = math.log(sum(math.exp(v) for v in pl))
        zq = math.log(sum(math.exp(v) for v in ql))
        for a, b in zip(pl, ql):
            total += math.exp(a - zp) * ((a - zp) - (b - zq))
    return total


def manual_ce(logits, y):
    out = 0.0
    for row, t in zip(logits.tolist(), y.tolist()):
        out += math.log(sum(math.exp(v) for v in row)) - row[t]
    return out / len(y)


def replay(method, model, x, y):
    """Re-run the method's attack with the same RNG to recover x_adv."""
    return method.attack(model, model, x, y, ctx())


def test_kl_helper_matches_manual_sum():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert kl_clean_adv(a, b).item() == pytest.approx(manual_kl(a, b) / 4, rel=1e-5)
    assert kl_clean_adv(a, b, normaliser=128).item() == pytest.approx(
        manual_kl(a, b) / 128, rel=1e-5
    )


def test_vanilla_rft_eq1():
    m = build_method("vanilla_rft")
    model, (x, y) = model_for(m), data()
    x_adv = replay(m, model, x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = m.batch_loss(model, x, y, ctx())
    model.load_state_dict(state)  # undo the running-statistics updates
    with torch.no_grad():
        adv, clean = model(x_adv), model(x)
    expected = manual_ce(clean, y) + 6.0 * manual_kl(clean, adv) / len(y)
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)


def test_twins_eq2_paper_and_official():
    """Independent recomputation with the same train-mode forward passes (AutoLoRa Eq. 2)."""
    for variant in ("paper", "official"):
        m = build_method("twins", gamma=3.0, loss=variant, dual_bn="official")
        model, (x, y) = model_for(m), data()
        x_adv = replay(m, model, x, y)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = m.batch_loss(model, x, y, ctx())
        model.load_state_dict(state)  # undo the running-statistics updates
        with torch.no_grad():
            if variant == "paper":
                f_a, f_c = model(x_adv, bn="frozen"), model(x, bn="frozen")
                a_a, a_c = model(x_adv), model(x)
                exp = (manual_ce(f_c, y) + 6 * manual_kl(f_c, f_a) / 8) + 3.0 * (
                    manual_ce(a_c, y) + 6 * manual_kl(a_c, a_a) / 8
                )
            else:
                f_a, f_c = model(x_adv[:4], bn="frozen"), model(x[:4], bn="frozen")
                a_a, a_c = model(x_adv[4:]), model(x[4:])
                exp = 3.0 * (manual_ce(f_c, y[:4]) + 6 * manual_kl(f_c, f_a) / 8) + (
                    manual_ce(a_c, y[4:]) + 6 * manual_kl(a_c, a_a) / 8
                )
        assert out.loss.item() == pytest.approx(exp, rel=1e-4), variant


def test_autolora_eq5_value():
    m = build_method("autolora", lambda_source="running")
    model, (x, y) = model_for(m), data()
    with torch.no_grad():
        for p in model.lora_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)  # make the LoRA branch differ from the FE
    m.lambda1, m.lambda2 = 0.3, 2.4
    x_adv = replay(m, model, x, y)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = m.batch_loss(model, x, y, ctx())
    model.load_state_dict(state)
    with torch.no_grad():
        nat, adv = model(x, lora=True), model(x_adv)
    expected = 0.3 * manual_ce(nat, y) + 0.7 * manual_ce(adv, y) + 2.4 * manual_kl(nat, adv) / 8
    assert out.loss.item() == pytest.approx(expected, rel=1e-4)


def grads_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    named = dict(model.named_parameters())
    lora = {id(p) for p in model.lora_parameters()}
    head = {id(p) for p in model.head.parameters()}
    groups = {"lora": 0.0, "head": 0.0, "fe": 0.0}
    for p in named.values():
        g = 0.0 if p.grad is None else p.grad.abs().sum().item()
        key = "lora" if id(p) in lora else "head" if id(p) in head else "fe"
        groups[key] += g
    return groups


def test_autolora_gradient_routing():
    m = build_method("autolora", lambda_source="running")
    model, (x, y) = model_for(m), data()
    with torch.no_grad():
        for p in model.lora_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    m.lambda1, m.lambda2 = 0.5, 3.0
    out = m.batch_loss(model, x, y, ctx())
    ce_nat, adv_obj = out.objectives
    nat = grads_of(model, ce_nat)  # λ1·CE through FE + BA with θ̄1
    assert nat["fe"] == 0.0 and nat["lora"] > 0 and nat["head"] > 0
    # the adversarial objective: CE_adv reaches FE + head, never LoRA; KL (not detached)
    # reaches LoRA through the soft labels, as in the official code
    adv = grads_of(model, adv_obj)
    assert adv["fe"] > 0 and adv["head"] > 0 and adv["lora"] > 0
    m_detached = build_method("autolora", lambda_source="running", detach_soft_labels=True)
    m_detached.lambda1, m_detached.lambda2 = 0.5, 3.0
    out = m_detached.batch_loss(model, x, y, ctx())
    assert grads_of(model, out.objectives[1])["lora"] == 0.0
    # FE parameters are trainable again after the natural pass
    assert all(p.requires_grad for p in model.feature_extractor_parameters())


def test_autolora_lambda_schedule_from_train_accuracy():
    m = build_method("autolora", alpha=2.0)
    model = model_for(m)
    c = ctx()
    c.measure_train_accuracy = lambda forward: 0.5
    logged = m.start_epoch(model, c)
    assert logged["lambda1"] == pytest.approx(0.75) and logged["lambda2"] == pytest.approx(1.5)


def test_unknown_hyper_parameter_rejected():
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        build_method("autolora", rnak=4)
