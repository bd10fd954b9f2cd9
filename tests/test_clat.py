"""CLAT: criticality ranking, feature-space PGD, Eq. 9, and the trainable set across re-selection."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft.attacks import PGDConfig
from robustft.attacks.feature_pgd import feature_distance, feature_pgd
from robustft.clat import Criticality, FeatureTap, layer_criticality
from robustft.clat.layers import candidate_layers
from robustft.methods import TrainContext, build_method
from robustft.models import build_model

EPS, STEP = 0.03, 0.007


class Toy(nn.Module):
    """Five 4-channel 3×3 convs with ReLU, each ≈ gain·identity, then a linear head.

    Inputs are non-negative, so the ReLUs pass everything and F_i ≈ (Π_{j≤i} g_j)·x: the
    weakness of layer i grows by g_i over layer i−1, i.e. C_i ≈ g_i by construction.
    """

    arch = "toy"

    def __init__(self, gains=(1.0, 1.0, 5.0, 1.0, 1.0), classes=3, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        for i, gain in enumerate(gains):
            conv = nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1, bias=True)
            with torch.no_grad():
                conv.weight.copy_(0.01 * torch.randn(conv.weight.shape, generator=g))
                conv.bias.zero_()
                for c in range(conv.in_channels):
                    conv.weight[c, c, 1, 1] = gain
            self.convs.append(conv)
        self.head = nn.Linear(4, classes)

    def set_gain(self, i, gain):
        with torch.no_grad():
            for c in range(self.convs[i].in_channels):
                self.convs[i].weight[c, c, 1, 1] = gain

    def forward(self, x):
        h = x
        for conv in self.convs:
            h = F.relu(conv(h))
        return self.head(h.mean((2, 3)))

    def candidate_layers(self):
        return [(f"convs.{i}", m) for i, m in enumerate(self.convs)]


def ctx(epoch=0, steps=3, seed=0, examples=None):
    g = torch.Generator().manual_seed(seed)
    return TrainContext(
        train_attack=PGDConfig(EPS, STEP, steps, True),
        generator=g,
        batch_size=8,
        epoch=epoch,
        train_examples=examples,
    )


def batch(n=8, res=8, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g), torch.randint(0, classes, (n,), generator=g)


def examples_from(x, y):
    return lambda n: (x[:n], y[:n])


# --- criticality (CLAT Eq. 5-6) -----------------------------------------------------------------
def test_ranking_finds_the_layer_that_amplifies_by_construction():
    model = Toy()
    x, y = batch()
    crit = layer_criticality(
        model, x, y, eps=EPS, step=STEP, steps=3, generator=torch.Generator().manual_seed(0)
    )
    assert crit.top(1) == [3]
    assert crit.criticality[2] == pytest.approx(5.0, rel=0.1)
    for i in (1, 3, 4):
        assert crit.criticality[i] == pytest.approx(1.0, rel=0.1)
    # the literal C_1 = W_1 (A3) is on another scale; the default divides by W_0
    assert crit.first_literal == crit.weakness[0]
    model.set_gain(1, 9.0)
    again = layer_criticality(
        model, x, y, eps=EPS, step=STEP, steps=3, generator=torch.Generator().manual_seed(0)
    )
    assert again.top(2) == [2, 3]


def test_weakness_matches_two_separate_forward_passes():
    """Eq. 5 written out: hooks on separate clean / adversarial passes, per-example L2 / N_i."""
    model = build_model("cifar_resnet18", 3, width=2).eval()
    x, y = batch(res=8)
    g = torch.Generator().manual_seed(3)
    x_adv = (x + EPS * (2 * torch.rand(x.shape, generator=g) - 1)).clamp(0, 1)
    crit = layer_criticality(model, x, y, eps=EPS, step=STEP, steps=0, attack=lambda xb, yb: x_adv)
    layers = candidate_layers(model)

    def features(inp):
        out = []
        hs = [m.register_forward_hook(lambda _m, _i, o: out.append(o)) for _, m in layers]
        with torch.no_grad():
            model(inp)
        for h in hs:
            h.remove()
        return out

    clean, adv = features(x), features(x_adv)
    w = [
        ((a - c).reshape(len(x), -1).norm(dim=1).mean() / c[0].numel()).item()
        for a, c in zip(adv, clean)
    ]
    w0 = ((x_adv - x).reshape(len(x), -1).norm(dim=1).mean() / x[0].numel()).item()
    assert crit.weakness == pytest.approx(w, rel=1e-4)
    assert crit.criticality[0] == pytest.approx(w[0] / w0, rel=1e-4)
    assert crit.criticality[1:] == pytest.approx(
        [b / a for a, b in itertools.pairwise(w)], rel=1e-4
    )
    # chunking does not change the result; other taps and ratios run
    chunked = layer_criticality(
        model,
        x,
        y,
        eps=EPS,
        step=STEP,
        steps=0,
        batch_size=3,
        attack=lambda xb, yb: (
            x_adv[: len(xb)] if len(xb) == 8 else x_adv[_offset(x, xb) : _offset(x, xb) + len(xb)]
        ),
    )
    assert chunked.weakness == pytest.approx(w, rel=1e-4)
    for opts in ({"tap": "bn"}, {"ratio": "own_input"}, {"first": "literal"}):
        other = layer_criticality(
            model, x, y, eps=EPS, step=STEP, steps=0, attack=lambda xb, yb: x_adv, **opts
        )
        assert len(other.criticality) == 18
    assert other.criticality[0] == other.weakness[0]


def _offset(x, xb):
    for s in range(len(x)):
        if torch.equal(x[s], xb[0]):
            return s
    raise AssertionError


# --- feature-space PGD (CLAT Eq. 8) -------------------------------------------------------------
def test_feature_pgd_one_shared_delta_increases_the_summed_distance():
    model = Toy().eval()
    x, _ = batch()
    tap = FeatureTap(model, [model.convs[1], model.convs[3]])
    clean = tap.features(x)
    g = torch.Generator().manual_seed(0)
    x_adv = feature_pgd(tap.features, x, clean, eps=EPS, step=STEP, steps=5, generator=g)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    g = torch.Generator().manual_seed(0)
    start = feature_pgd(tap.features, x, clean, eps=EPS, step=STEP, steps=0, generator=g)
    with torch.no_grad():
        assert feature_distance(tap.features(x_adv), clean) > feature_distance(
            tap.features(start), clean
        )
        d = feature_distance(tap.features(x_adv), clean).item()
        manual = sum(
            (a - c).flatten(1).norm(dim=1).mean().item() for a, c in zip(tap.features(x_adv), clean)
        )
    assert d == pytest.approx(manual, rel=1e-5)


def test_feature_tap_stops_early_and_leaves_no_hooks():
    model = Toy()
    calls = []
    model.convs[4].register_forward_hook(lambda *a: calls.append(1))
    logits, feats = FeatureTap(model, [model.convs[1]]).run(torch.rand(2, 3, 4, 4), stop_early=True)
    assert logits is None and len(feats) == 1 and calls == []
    assert all(len(m._forward_hooks) == 0 for m in model.convs[:4])


# --- the method ---------------------------------------------------------------------------------
def test_clat_loss_is_eq9_with_the_replayed_attack():
    m = build_method("clat", lam=0.5, k=2)
    model = Toy()
    x, y = batch()
    c = ctx(examples=examples_from(x, y))
    m.start_epoch(model, c)
    assert len(m.selected) == 2 and 3 in m.selected
    chosen = [model.convs[i - 1] for i in m.selected]
    # replay the feature attack with the same generator state
    state = c.generator.get_state()
    model.eval()
    with torch.no_grad():
        target = [None] * len(chosen)
        outs = []
        hs = [mod.register_forward_hook(lambda _m, _i, o: outs.append(o)) for mod in chosen]
        model(x)
        for h in hs:
            h.remove()
        target = outs

    def feats(z):
        got = []
        hs = [mod.register_forward_hook(lambda _m, _i, o: got.append(o)) for mod in chosen]
        model(z)
        for h in hs:
            h.remove()
        return got

    x_adv = x.clone()
    noise = torch.rand(x.shape, generator=torch.Generator().set_state(state))
    x_adv = (x + (2 * noise - 1) * EPS).clamp(0, 1)
    for _ in range(3):
        x_adv.requires_grad_(True)
        obj = sum((a - t).flatten(1).norm(dim=1).mean() for a, t in zip(feats(x_adv), target))
        (grad,) = torch.autograd.grad(obj, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + STEP * grad.sign(), x - EPS), x + EPS)
        x_adv = x_adv.clamp(0, 1)
    model.train()
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y) + 0.5 * sum(
            (a - t).flatten(1).norm(dim=1).mean() for a, t in zip(feats(x_adv), feats(x))
        )
    c.generator.set_state(state)
    out = m.batch_loss(model, x, y, c)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-4)
    out.loss.backward()
    chosen_params = {id(p) for mod in chosen for p in mod.parameters()}
    for p in model.parameters():
        assert (p.grad is not None) == (id(p) in chosen_params)


def test_ce_on_picks_the_cross_entropy_input_of_eq9(monkeypatch):
    """Spec A4: ``ce_on: clean`` is Eq. 9 as printed, CE(F(x), y); ``ce_on: adv`` is CE(F(x+δ), y)
    with the same δ* as the feature term. The feature term and the logged clean logits agree."""
    import robustft.clat.method as clat_module

    x, y = batch()
    shift = 0.03 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)))
    x_adv = (x + shift).clamp(0, 1)
    monkeypatch.setattr(clat_module, "feature_pgd", lambda *a, **k: x_adv.clone())
    model = Toy(gains=(1.0, 1.0, 5.0, 1.0, 1.0))
    with torch.no_grad():  # a head whose CE differs visibly between x and x+δ
        model.head.weight.copy_(
            torch.tensor([[3.0, -2.0, 1.0, 0.5], [-1.0, 2.5, 0.0, 1.0], [0.5, 0.0, -3.0, 2.0]])
        )
    lam = 0.5
    losses, grads = {}, {}
    for ce_on in ("clean", "adv"):
        m = build_method("clat", lam=lam, k=2, ce_on=ce_on)
        c = ctx(examples=examples_from(x, y))
        m.start_epoch(model, c)
        model.zero_grad()
        out = m.batch_loss(model, x, y, c)
        out.loss.backward()
        losses[ce_on] = out
        grads[ce_on] = model.convs[2].weight.grad.clone()
        tap = m._tap(model)
        with torch.no_grad():
            feat = feature_distance(tap.features(x_adv), tap.features(x))
            ce_x = F.cross_entropy(model(x), y)
            ce_adv = F.cross_entropy(model(x_adv), y)
        assert out.stats["loss_feat"] == pytest.approx(feat.item(), rel=1e-5)
        assert out.stats["train_nat_acc"] == pytest.approx(
            (model(x).argmax(1) == y).float().mean().item()
        )
    assert losses["clean"].loss.item() == pytest.approx((ce_x + lam * feat).item(), rel=1e-5)
    assert losses["adv"].loss.item() == pytest.approx((ce_adv + lam * feat).item(), rel=1e-5)
    assert losses["adv"].stats["loss_ce"] == pytest.approx(ce_adv.item(), rel=1e-5)
    assert abs(ce_adv.item() - ce_x.item()) > 1e-3  # the two readings are distinguishable
    assert not torch.allclose(grads["clean"], grads["adv"])
    assert build_method("clat").hp["ce_on"] == "clean"  # Eq. 9 as printed (docstring: A4 runs)
    with pytest.raises(ValueError, match="ce_on"):
        build_method("clat", ce_on="x")


def test_only_selected_layers_train_and_reselection_moves_the_trainable_set():
    m = build_method("clat", lam=1.0)  # toy: k defaults to 1
    model = Toy()
    x, y = batch()
    c = ctx(examples=examples_from(x, y))
    log = m.start_epoch(model, c)
    assert m.selected == [3] and log["clat_layer_1"] == 3.0 and log["clat_top1"] == 3.0
    params = m.trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.convs[2].parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        opt.zero_grad()
        m.batch_loss(model, x, y, c).loss.backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"convs.2.weight", "convs.2.bias"}
    # make layer 2 the amplifier: not yet re-selected at epoch 5, re-selected at epoch 10
    model.set_gain(2, 1.0)
    model.set_gain(1, 8.0)
    m.start_epoch(model, ctx(epoch=5, examples=examples_from(x, y)))
    assert m.selected == [3]
    m.start_epoch(model, ctx(epoch=10, examples=examples_from(x, y)))
    assert m.selected == [2]
    params = m.trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.convs[1].parameters()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "convs.1.weight",
        "convs.1.bias",
    }
    assert [h["selected"] for h in m.history] == [[3], [2]]


def test_variants_nd_random_and_fast():
    x, y = batch()
    nd = build_method("clat_nd", lam=1.0)
    model = Toy()
    nd.start_epoch(model, ctx(examples=examples_from(x, y)))
    model.set_gain(2, 1.0)
    model.set_gain(1, 8.0)
    nd.start_epoch(model, ctx(epoch=10, examples=examples_from(x, y)))
    assert nd.selected == [3] and len(nd.history) == 1  # CLAT(ND): never re-selected
    picks = set()
    for seed in range(6):
        rnd = build_method("clat_random", lam=1.0, k=2)
        rnd.start_epoch(Toy(), ctx(seed=seed, examples=examples_from(x, y)))
        assert len(set(rnd.selected)) == 2
        picks.add(tuple(rnd.selected))
    assert len(picks) > 1  # not the ranking
    fast = build_method("clat_fast", lam=1.0)
    model = Toy()
    c = ctx(examples=examples_from(x, y))
    fast.start_epoch(model, c)
    calls = []
    model.convs[2].register_forward_hook(lambda *a: calls.append(1))
    fast.batch_loss(model, x, y, c)
    # clean target + 1 FGSM step + clean and adversarial update passes = 4 calls (PGD-3: 6)
    assert len(calls) == 4


def test_lambda_calibration_balances_ce_and_feature_term():
    m = build_method("clat", calibration_batches=2, lambda_scale=3.0)
    model = Toy()
    x, y = batch()
    c = ctx(examples=examples_from(x, y))
    m.start_epoch(model, c)
    assert m.lam > 0
    # re-measure the two terms on the same batches with λ = 1 (eval mode, as calibration)
    probe = build_method("clat", lam=1.0)
    probe.selected = list(m.selected)
    model.eval()
    c2 = ctx(examples=examples_from(x, y))
    ce, feat, _ = probe._terms(model, x, y, c2)
    assert m.lam == pytest.approx(3.0 * ce.item() / feat.item(), rel=0.2)
    assert build_method("clat", lam=0.2, lambda_scale=2.0).hp["lam"] == 0.2


def test_clat_through_the_loop_rebuilds_the_optimizer_on_reselection(
    tmp_path, tiny_data, monkeypatch
):
    """Stubbed rankings (layer 5, then 12): the loop trains exactly the selected layer."""
    from robustft.clat.method import CLAT
    from robustft.train import TrainConfig, Trainer

    order = iter([5, 12])

    def fake_measure(self, model, c):
        top = next(order)
        names = self._names(model)
        crit = [1.0] * len(names)
        crit[top - 1] = 9.0
        return Criticality(
            names=names,
            weakness=[1.0] * len(names),
            criticality=crit,
            input_weakness=1.0,
            first_literal=1.0,
        )

    monkeypatch.setattr(CLAT, "measure", fake_measure)
    attack = {"eps": EPS, "step": STEP, "steps": 1, "random_start": True}
    cfg = TrainConfig(
        run_name="clat",
        method="clat",
        arch="cifar_resnet18",
        width=2,
        seed=0,
        epochs=2,
        batch_size=12,
        lr=0.05,
        train_attack=attack,
        eval_attack={**attack, "random_start": False},
        method_params={"lam": 0.5, "reselect_every": 1},
        lr_schedule={"type": "cosine", "total_epochs": 4, "offset": 2},
    )
    trainer = Trainer(cfg, tiny_data, None, tmp_path / "ck")
    names = [n for n, _ in candidate_layers(trainer.model)]

    def params_of(layer):
        prefix = names[layer - 1].rsplit(".", 1)[0]
        conv = names[layer - 1] + ".weight"
        bn = prefix + ".bn" + names[layer - 1][-1]  # conv<k> is followed by bn<k>
        return {conv, bn + ".weight", bn + ".bias"}

    def run(epoch):
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        row = trainer.run_epoch(epoch)
        changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
        return row, changed

    row0, changed0 = run(0)
    assert changed0 == params_of(5)
    assert row0["lr"] == pytest.approx(0.05 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 2))))
    row1, changed1 = run(1)
    assert changed1 == params_of(12) and row1["optimizer_rebuilt"] == 1.0
    trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    named = dict(trainer.model.named_parameters())
    assert trained == {id(named[n]) for n in params_of(12)}


def test_pretrain_then_clat_chain_resumes_identically(tmp_path, tiny_data, monkeypatch):
    """ "X + CLAT": PGD-AT, then CLAT initialised from its model_best.pt (head included); a
    CLAT job killed after a re-selection resumes to the same numbers (optimiser rebuilt)."""
    from robustft.train import TrainConfig, Trainer, train_run

    attack = {"eps": EPS, "step": STEP, "steps": 1, "random_start": True}
    common = {
        "arch": "cifar_resnet18",
        "width": 2,
        "seed": 0,
        "batch_size": 12,
        "lr": 0.05,
        "train_attack": attack,
        "eval_attack": {**attack, "random_start": False},
    }
    train_run(
        TrainConfig(run_name="x", method="pgd_at", epochs=1, **common),
        tiny_data,
        None,
        tmp_path / "ck_x",
        tmp_path / "x",
    )
    pre = tmp_path / "x" / "model_best.pt"
    cfg = TrainConfig(
        run_name="x+clat",
        method="clat",
        epochs=3,
        init_from="model",
        method_params={"reselect_every": 2, "criticality_examples": 12, "calibration_batches": 1},
        **common,
    )
    full = train_run(cfg, tiny_data, pre, tmp_path / "ck_full", tmp_path / "full")
    assert full[0]["clat_lambda"] > 0 and "clat_top1" in full[0] and "clat_top1" in full[2]
    trainer = Trainer(cfg, tiny_data, pre, tmp_path / "ck_cut")
    head = torch.load(pre, weights_only=True)["state_dict"]["head.weight"]
    assert torch.equal(trainer.model.head.weight, head)
    original = Trainer.run_epoch

    def die(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "run_epoch", die)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = train_run(cfg, tiny_data, pre, tmp_path / "ck_cut", tmp_path / "cut")

    def strip(rows):  # wall-clock times differ; NaN (no grad_sim) never equals itself
        return [
            {
                k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in r.items()
                if "seconds" not in k
            }
            for r in rows
        ]

    assert strip(resumed) == strip(full)
    payload = torch.load(tmp_path / "cut" / "model_best.pt", weights_only=True)
    assert len(payload["finish"]["clat_selections"]) == 2


# --- evaluation protocol (robustft.clat.protocol) ---------------------------------------------
def _trained_toy():
    model = Toy(gains=(1.0, 1.0, 1.0, 1.0, 1.0)).eval()
    x, y = batch(n=16)
    with torch.no_grad():  # a head that classifies the clean batch mostly right
        model.head.weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(4)))
    return model, x, y


def test_pgd_restarts_reports_the_minimum_and_the_worst_case():
    from robustft.attacks import pgd_accuracy
    from robustft.clat.protocol import CLAT_EVAL, clean_correct, pgd_restarts

    model, x, y = _trained_toy()
    res = pgd_restarts(model, x, y, restarts=3, seed=5, attack=CLAT_EVAL)
    assert res.min_accuracy == min(res.accuracies)
    assert res.worst_case_accuracy <= res.min_accuracy <= res.clean_accuracy
    one = pgd_accuracy(model, x, y, CLAT_EVAL, generator=torch.Generator().manual_seed(6))
    clean = clean_correct(model, x, y)
    assert res.accuracies[1] == pytest.approx(float((one & clean).float().mean()))


def test_transfer_matrix_diagonal_is_white_box_and_sweep_starts_clean():
    from robustft.clat.protocol import (
        clean_correct,
        epsilon_sweep,
        pgd_restarts,
        transfer_accuracy,
        transfer_matrix,
    )

    a, x, y = _trained_toy()
    b = Toy(gains=(1.0, 2.0, 1.0, 1.0, 1.0), seed=3).eval()
    matrix = transfer_matrix({"a": a, "b": b}, x, y, seed=2)
    assert set(matrix) == {"a", "b"} and set(matrix["a"]) == {"a", "b"}
    assert matrix["a"]["a"] == pytest.approx(pgd_restarts(a, x, y, restarts=1, seed=2).min_accuracy)
    assert matrix["a"]["b"] == pytest.approx(transfer_accuracy(a, b, x, y, seed=2))
    sweep = epsilon_sweep(a, x, y, [0.0, 0.03])
    assert sweep[0]["accuracy"] == pytest.approx(float(clean_correct(a, x, y).float().mean()))
    assert sweep[1]["accuracy"] <= sweep[0]["accuracy"]


def test_apgd_ce_runs_and_restores_state():
    from robustft.clat.protocol import apgd_ce, pgd_restarts

    model, x, y = _trained_toy()
    model.train()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    res = apgd_ce(model, x, y, n_iter=10)
    assert torch.equal(torch.rand(1), expected_next)  # global RNG restored
    assert model.training
    assert 0.0 <= res["accuracy"] <= pgd_restarts(model, x, y, restarts=1).clean_accuracy
    assert len(res["per_example"]) == len(y)
