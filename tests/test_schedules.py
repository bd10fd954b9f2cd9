"""The LR schedules and the λ schedule on hand-made accuracy sequences."""

from types import SimpleNamespace

import pytest

from robustft.schedules import AutoLR, MultiStepLR, Schedule, build_schedule, lambda_weights


def test_lambda_weights_eq6_eq7():
    assert lambda_weights(0.0) == (1.0, 0.0)
    assert lambda_weights(1.0) == (0.0, 6.0)
    l1, l2 = lambda_weights(0.64, alpha=0.5)  # SA^α = 0.8
    assert l1 == pytest.approx(0.2) and l2 == pytest.approx(4.8)
    with pytest.raises(ValueError, match="standard accuracy"):
        lambda_weights(1.5)


def test_multistep_baseline_schedule():
    s = MultiStepLR(0.01, (30, 50), 0.1)
    assert [s.lr_for_epoch(e) for e in (0, 29, 30, 49, 50, 59)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 1e-4, 1e-4]
    )


def feed(s: AutoLR, accs):
    return [s.end_epoch(e, a) for e, a in enumerate(accs)]


def test_official_condition1_counts_strict_increases():
    # epochs 0..4: increases 0->1, 1->2 only (2 of 4 < 3) -> halve at epoch 4 (1-based 5)
    s = AutoLR(variant="official")
    d = feed(s, [0.10, 0.20, 0.30, 0.30, 0.25])
    assert [x.halved for x in d] == [False] * 4 + [True]
    assert d[-1].reload_best and s.lr == pytest.approx(0.005)
    assert "condition 1" in d[-1].reason


def test_official_keeps_lr_with_three_increases_and_never_fires_condition2_first():
    s = AutoLR(variant="official")
    d = feed(s, [0.10, 0.20, 0.30, 0.40, 0.35])  # 3 increases, no cond. 2 at the first check
    assert not d[-1].halved and s.lr == 0.01


def test_official_condition2_no_new_best_since_previous_check():
    s = AutoLR(variant="official")
    # first check (epoch 4): 4 increases; second check (epoch 8): 3 increases but the best
    # (0.5 at epoch 4) was not beaten since -> condition 2 halves
    accs = [0.1, 0.2, 0.3, 0.4, 0.5, 0.2, 0.3, 0.4, 0.45]
    d = feed(s, accs)
    assert not d[4].halved
    assert d[8].halved and "condition 2" in d[8].reason


def test_paper_condition1_counts_decreases_and_fires_easily():
    # paper wording: halve if #decreases <= 0.75·4 — true even for a steadily improving run
    s = AutoLR(variant="paper")
    d = feed(s, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert d[4].halved and "decreases" in d[4].reason


def test_paper_condition2_at_first_check_and_blocked_after_a_halving():
    s = AutoLR(variant="paper")
    # 4 decreases -> condition 1 false; η unchanged since c_0 and no new best -> condition 2
    d = feed(s, [0.5, 0.4, 0.3, 0.2, 0.1])
    assert d[4].halved and "condition 2" in d[4].reason
    # next check: still 4 decreases and no new best, but η(c_1) != η(c_2) after the halving
    d = [s.end_epoch(e, a) for e, a in zip(range(5, 9), [0.09, 0.08, 0.07, 0.06])]
    assert not d[-1].halved


def test_stop_when_lr_below_minimum_after_ten_halvings():
    s = AutoLR(variant="official", every=1)
    stops = [d.stop for d in feed(s, [0.5] * 11)]
    # epoch 0 records; every later epoch is a check that halves (no increases): after the
    # 10th halving 0.01/2^10 < 1e-5
    assert stops.index(True) == 10
    assert s.lr == pytest.approx(0.01 / 2**10)


def test_state_round_trip():
    s = AutoLR(variant="official")
    feed(s, [0.1, 0.2, 0.1, 0.1, 0.1])
    t = AutoLR(variant="official")
    t.load_state_dict(s.state_dict())
    assert t.end_epoch(5, 0.2) == s.end_epoch(5, 0.2)


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="auto_lr variant"):
        AutoLR(variant="apgd")


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "multistep", "milestones": [2], "factor": 0.1},
        {"type": "auto", "variant": "official", "every": 4},
        {"type": "cosine", "per_step": True},
        {"type": "cosine"},
        {"type": "cyclic"},
    ],
)
def test_every_schedule_speaks_the_one_protocol(spec):
    """The loop calls lr_for_epoch, lr_for_step and end_epoch on every schedule alike."""
    s = build_schedule(SimpleNamespace(lr=0.1, epochs=10, lr_schedule=spec))
    assert isinstance(s, Schedule)
    per_step = spec["type"] == "cyclic" or spec.get("per_step", False)
    if not per_step:  # an epoch-wise schedule keeps the epoch's LR at every step
        assert [s.lr_for_step(3, k, 7) for k in range(7)] == [s.lr_for_epoch(3)] * 7
    else:
        assert s.lr_for_step(3, 5, 7) != s.lr_for_epoch(3)
    decision = s.end_epoch(0, 0.5)
    assert not (decision.reload_best or decision.stop or decision.halved)
    # only the scheduler that reacts to validation accuracy adds the lr_event column
    assert decision.log() == ({"lr_event": ""} if spec["type"] == "auto" else {})
    s.load_state_dict(s.state_dict())
