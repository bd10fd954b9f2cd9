"""Per-class accuracy: recorded by evaluate_run, averaged by the aggregation, and a visible
warning in the report when a method never predicts a class that other methods get right."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from test_stats import write_run

from robustft.report import render_report
from robustft.tables.assemble import aggregate_study
from robustft.tables.per_class import (
    class_counts,
    class_warnings,
    never_predicted,
    per_class_accuracy,
)
from robustft.tables.records import load_run_record
from robustft.tables.serialise import read_study_json, write_study_tables

TEMPLATES = Path(__file__).resolve().parents[1] / "report" / "templates"
NAMES = ["airplane", "automobile", "bird", "cat"]


# --------------------------------------------------------------------------- the function


def test_per_class_accuracy_by_hand():
    flags = [1, 0, 1, 1, 0, 0, 1]
    labels = [0, 0, 1, 1, 2, 2, 0]
    # class 0: 2 of 3, class 1: 2 of 2, class 2: 0 of 2, class 3: no examples
    assert per_class_accuracy(flags, labels, 4) == {
        "0": pytest.approx(2 / 3),
        "1": 1.0,
        "2": 0.0,
        "3": None,
    }
    assert class_counts(labels, 4) == [3, 2, 2, 0]
    # predicted 0 and 1 only; class 3 has no examples, so it is no symptom
    assert never_predicted([0, 1, 1, 0, 1, 0, 0], [3, 2, 2, 0]) == [2]
    with pytest.raises(ValueError, match="3 flags but 2 labels"):
        per_class_accuracy([1, 0, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="label 5 outside"):
        per_class_accuracy([1], [5], 2)


# --------------------------------------------------------------------------- evaluate_run


def _constant_model(tmp_path: Path, data: Path, favourite: int) -> tuple[Path, dict]:
    """A resnet_mini whose head ignores the features and always answers ``favourite``."""
    from robustft.batches import num_classes
    from robustft.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet_mini", num_classes(data), width=4)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[favourite] = 5.0
    path = tmp_path / "model_best.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    settings = {
        "arch": "resnet_mini",
        "width": 4,
        "input_size": None,
        "method": "pgd_at",
        "method_params": {},
        "eval_attack": {"eps": 2 / 255, "step": 1 / 255, "steps": 2, "random_start": True},
        "autoattack": False,
        "batch_size": 5,
        "seed": 0,
        "device": "cpu",
    }
    return path, settings


def _labels(data: Path) -> list[int]:
    import numpy as np

    return np.load(data / "test_y.npy").tolist()


@pytest.mark.parametrize("protocol", ["standard", "clat"])
def test_evaluate_run_records_per_class_and_predictions(tmp_path, tiny_data, protocol):
    from robustft.evaluate import evaluate_run

    path, settings = _constant_model(tmp_path, tiny_data, favourite=1)
    if protocol == "clat":
        settings["protocol"] = {
            "protocol": "clat",
            "restarts": 2,
            "examples": None,
            "attack": settings["eval_attack"],
            "apgd_ce": False,
            "epsilons": [],
        }
    ev = evaluate_run(settings, path, tiny_data)
    labels = _labels(tiny_data)  # 12 test examples, 4 of each of 3 classes
    assert ev["classes"] == {"names": ["0", "1", "2"], "counts": [4, 4, 4]}
    assert ev["predictions"] == [1] * len(labels)
    assert ev["never_predicted"] == [0, 2]
    assert ev["metrics"]["SA"]["per_class"] == {"0": 0.0, "1": 1.0, "2": 0.0}
    # every metric has its per-class breakdown, consistent with its per-example flags
    for name, flags in ev["per_example"].items():
        assert ev["metrics"][name]["per_class"] == per_class_accuracy(flags, labels, 3), name
    assert set(ev["per_example"]) >= {"SA", "PGD10"}  # the old keys are unchanged
    assert all(set(f) <= {0, 1} for f in ev["per_example"].values())
    json.dumps(ev, allow_nan=False)  # strict JSON, as write_json_atomic writes it


# --------------------------------------------------------------------------- aggregation


def add_per_class(
    run_dir: Path, per_class: list[float], never: list[int], names: list[str] | None = None
) -> Path:
    """Add the per-class keys evaluate_run writes to a run's eval.json (PGD10: half of SA)."""
    ev = json.loads((run_dir / "eval.json").read_text())
    ev["metrics"]["SA"]["per_class"] = {str(c): a for c, a in enumerate(per_class)}
    if "PGD10" in ev["metrics"]:
        ev["metrics"]["PGD10"]["per_class"] = {str(c): a / 2 for c, a in enumerate(per_class)}
    ev["classes"] = {"names": (names or NAMES)[: len(per_class)], "counts": [250] * len(per_class)}
    ev["never_predicted"] = never
    (run_dir / "eval.json").write_text(json.dumps(ev))
    return run_dir


def write_per_class_run(
    root: Path,
    variant: str,
    seed: int,
    per_class: list[float],
    never: list[int],
    dataset: str = "cifar10",
    pgd: float = 0.3,
) -> Path:
    """A run directory whose eval.json carries the per-class keys evaluate_run writes."""
    sa = sum(per_class) / len(per_class)
    d = write_run(root, dataset, "resnet18", variant, seed, {"SA": sa, "PGD10": pgd})
    return add_per_class(d, per_class, never)


def _study(root: Path, twins_bug: bool):
    """TWINS, Vanilla RFT and AutoLoRa on 4 classes, 2 seeds. Class 3 (cat) is hard for every
    method (0 %): no warning. With ``twins_bug`` TWINS never predicts class 2 (bird)."""
    dirs = []
    for seed in (0, 6):
        bird = 0.0 if twins_bug else 0.55
        dirs.append(
            write_per_class_run(
                root, "twins", seed, [0.8, 0.9, bird, 0.0], [2] if twins_bug else []
            )
        )
        dirs.append(
            write_per_class_run(root, "vanilla_rft", seed, [0.7, 0.8, 0.6 + seed / 100, 0.0], [])
        )
        dirs.append(write_per_class_run(root, "autolora", seed, [0.75, 0.85, 0.5, 0.0], []))
    runs = [load_run_record(d) for d in dirs]
    return aggregate_study(
        "autolora_table1", runs, [("autolora", "twins")], title="AutoLoRa Table 1"
    )


def test_aggregation_warns_when_a_method_never_predicts_a_class(tmp_path):
    tables = _study(tmp_path, twins_bug=True)
    assert [w["text"] for w in tables.class_warnings] == [
        (
            "TWINS never predicts class 2 (bird) on cifar10, seeds 0, 6; other methods get up to "
            "63 % of it right (Vanilla RFT 63 %, AutoLoRa 50 %)"
        )
    ]
    w = tables.class_warnings[0]
    assert (w["variant"], w["class"], w["kind"], w["seeds"]) == (
        "twins",
        2,
        "never_predicted",
        [0, 6],
    )
    # per-class means over seeds, in percent, for SA and PGD10
    pc = tables.per_class.set_index(["variant", "metric", "class"])
    assert pc.loc[("vanilla_rft", "SA", 2), "mean"] == pytest.approx(63.0)  # (60 + 66) / 2
    assert pc.loc[("vanilla_rft", "PGD10", 2), "mean"] == pytest.approx(31.5)
    assert pc.loc[("twins", "SA", 2), "never_predicted_seeds"] == "0;6"
    assert pc.loc[("twins", "SA", 2), "class_name"] == "bird"
    assert pc.loc[("twins", "SA", 2), "count"] == 250
    # survives the JSON round trip the report reads
    write_study_tables(tables, tmp_path / "t.csv", tmp_path / "t.json")
    back = read_study_json(tmp_path / "t.json")
    assert back.class_warnings == tables.class_warnings
    assert len(back.per_class) == len(tables.per_class) == 3 * 2 * 4


def test_zero_accuracy_without_other_methods_getting_it_right_is_no_warning(tmp_path):
    # class 3: every method 0 %; no bug -> nothing to say
    assert _study(tmp_path, twins_bug=False).class_warnings == []


def test_zero_accuracy_and_threshold(tmp_path):
    dirs = [
        write_per_class_run(tmp_path, "twins", 0, [0.8, 0.0, 0.5, 0.5], []),
        write_per_class_run(tmp_path, "pgd_at", 0, [0.8, 0.15, 0.5, 0.5], []),
    ]
    runs = [load_run_record(d) for d in dirs]
    # predicted sometimes but never right; the other method gets 15 % < 20 %
    assert class_warnings(runs) == []
    (w,) = class_warnings(runs, threshold=0.1)
    assert w["kind"] == "zero_accuracy"
    assert w["text"] == (
        "TWINS gets 0 % of class 1 (automobile) right (SA) on cifar10, seed 0; "
        "PGD-AT gets 15 % of it right"
    )


def test_old_eval_json_without_per_class_still_aggregates(tmp_path):
    runs = [
        load_run_record(write_run(tmp_path, "cifar10", "resnet18", v, 0, {"SA": 0.5}))
        for v in ("twins", "pgd_at")
    ]
    tables = aggregate_study("s", runs)
    assert tables.per_class.empty and tables.class_warnings == []
    assert runs[0].classes is None and runs[0].never_predicted is None


def test_malformed_per_class_names_the_file(tmp_path):
    d = write_per_class_run(tmp_path, "twins", 0, [0.5, 0.5], [])
    ev = json.loads((d / "eval.json").read_text())
    ev["metrics"]["SA"]["per_class"] = [0.5, 0.5]
    (d / "eval.json").write_text(json.dumps(ev))
    with pytest.raises(ValueError, match=r"eval.json: metrics.SA.per_class must map"):
        load_run_record(d)


# --------------------------------------------------------------------------- report


class _Outline(HTMLParser):
    """Text of every element with its open ancestors (tag, attrs), for visibility checks."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.texts: list[tuple[str, list[tuple[str, dict]]]] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if data.strip():
            self.texts.append((data.strip(), list(self.stack)))


def _visible_position(html: str, needle: str) -> int:
    """Index (in document order) of the text node holding ``needle``; asserts it is shown as
    page text: not in a <details>, a tooltip, or an element hidden by attribute or style."""
    outline = _Outline()
    outline.feed(html)
    for i, (text, ancestors) in enumerate(outline.texts):
        if needle in text:
            for tag, attrs in ancestors:
                assert tag not in ("details", "template", "script", "noscript"), tag
                assert "hidden" not in attrs
                assert "display:none" not in (attrs.get("style") or "").replace(" ", "")
            return i
    raise AssertionError(f"{needle!r} not shown as page text")


def test_report_shows_the_warning_at_the_top_of_the_study(tmp_path):
    tables = _study(tmp_path, twins_bug=True)
    out = render_report([tables], tmp_path / "index.html", templates=TEMPLATES)
    html = out.read_text(encoding="utf-8")
    text = "TWINS never predicts class 2 (bird) on cifar10, seeds 0, 6"
    assert html.count(text) == 1
    assert f'title="{text}' not in html  # not (only) a tooltip
    warning = _visible_position(html, text)
    # above the study's results table, below its title
    assert (
        _visible_position(html, "AutoLoRa Table 1") < warning < _visible_position(html, "Results")
    )
    assert "Classes never predicted" in html
    assert html.count('class="warn class-warn"') == 2  # the page banner and the study's block
    # the per-class table: classes as rows, methods under SA and PGD10, warning cell marked
    assert 'class="per-class"' in html and "Per-class accuracy" in html
    assert "2 · bird" in html and "⚠" in html
    assert 'class="num first zero flagged"' in html  # TWINS (first column), bird, 0.0
    assert ">63.0<" in html  # Vanilla RFT's mean on bird
    assert html.count("data:image/png;base64,") == 1  # the heat map (no training logs here)


def test_report_without_a_never_predicted_class_has_no_warning(tmp_path):
    tables = _study(tmp_path, twins_bug=False)
    out = render_report([tables], tmp_path / "index.html", templates=TEMPLATES)
    html = out.read_text(encoding="utf-8")
    assert "never predicts" not in html and 'class="warn class-warn"' not in html
    assert 'class="per-class"' in html  # the per-class table is still there
