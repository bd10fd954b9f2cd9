"""The HTML report: content, escaping, self-containment, figures, a real browser render, the
templates and captions of the workflow's report/ folder, and the render step."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_per_class import _visible_position, add_per_class
from test_stats import write_run

from robustft.report import render_report, study_figures
from robustft.steps import render_report as render_step
from robustft.tables.assemble import aggregate_study
from robustft.tables.records import load_run_record
from robustft.tables.serialise import write_study_tables

ARTIFACTS = Path(__file__).parent / "artifacts"
ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "report" / "templates"
CAPTIONS = ROOT / "report" / "captions"
EVIL = "<script>alert('x')</script>"
TOO_LONG = "Warning: the list of target classes is too long"
# the per-class warning of the fixture: a baseline seed that never predicts class 1
NEVER = (
    "Vanilla RFT never predicts class 1 (automobile) on cifar10, seed 0; AutoLoRa gets 79 % "
    "of it right"
)


def train_log(
    epochs: int, seed: int, *, auto: bool, lambdas: bool = True, grad_sim: bool = True
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    e = np.arange(epochs)
    df = pd.DataFrame(
        {
            "epoch": e,
            "lr": np.where(e < epochs // 2, 0.01, 0.001) if not auto else 0.01 * 0.5 ** (e // 3),
            "loss": 2.0 * np.exp(-e / 5) + 0.3,
            "train_nat_acc": 0.5 + 0.3 * (1 - np.exp(-e / 3)) + rng.normal(0, 0.01, epochs),
            "val_nat_acc": 0.48 + 0.3 * (1 - np.exp(-e / 3)),
            "val_pgd_acc": 0.25 + 0.2 * (1 - np.exp(-e / 4)),
            "test_nat_acc": 0.47 + 0.3 * (1 - np.exp(-e / 3)) + rng.normal(0, 0.01, epochs),
            "test_pgd_acc": 0.24 + 0.2 * (1 - np.exp(-e / 4)) + rng.normal(0, 0.01, epochs),
            "seconds": 1.0,
        }
    )
    if lambdas:
        df["lambda1"] = 1 - 0.5 * e / epochs
        df["lambda2"] = 0.5 * e / epochs
    else:  # a baseline that has no λ: the columns are there but empty
        df["lambda1"] = math.nan
        df["lambda2"] = math.nan
    if grad_sim:
        df["grad_sim"] = 0.2 + 0.1 * np.sin(e)
    return df


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Two studies written by the aggregate code path: a paper table and an odd one."""
    root = tmp_path_factory.mktemp("report")
    dirs = []
    for s in (0, 6, 66):
        for ds in ("cifar10", "cifar100"):
            base = 0.84 if ds == "cifar10" else 0.62
            dirs.append(
                write_run(
                    root,
                    ds,
                    "resnet18",
                    "autolora",
                    s,
                    {"SA": base + 0.003 * (s % 5), "PGD10": base - 0.30, "AA": base - 0.35},
                    train_log=train_log(12, s, auto=True),
                    aa_warnings=[TOO_LONG] if (s, ds) == (6, "cifar10") else None,
                )
            )
            add_per_class(dirs[-1], [base + 0.05, base - 0.05, base, base], [])
            dirs.append(
                write_run(
                    root,
                    ds,
                    "resnet18",
                    "vanilla_rft",
                    s,
                    {"SA": base - 0.03 + 0.002 * (s % 3), "PGD10": base - 0.31, "AA": None},
                    train_log=train_log(12, s, auto=False, lambdas=False, grad_sim=False),
                )
            )
            bug = (s, ds) == (0, "cifar10")  # the TWINS-bug symptom, in one seed
            add_per_class(
                dirs[-1], [base, 0.0 if bug else base - 0.1, base, base - 0.1], [1] if bug else []
            )
    runs = [load_run_record(d) for d in dirs]
    t1 = aggregate_study(
        "autolora_table1",
        runs,
        [("autolora", "vanilla_rft")],
        {"paper": "AutoLoRa", "table": 1, "pvalue_table": 8},
        title="AutoLoRa Table 1 (ResNet-18)",
        description="Robust fine-tuning of a robust ResNet-18.",
    )
    # a study whose names try to inject markup, with one seed and a run without train log
    evil_dir = write_run(
        root, "cifar10", "resnet_mini", "evil", 0, {"SA": 0.5, "PGD10": 0.2}, method=EVIL
    )
    evil_run = load_run_record(evil_dir)
    evil_run.method = EVIL
    t2 = aggregate_study(EVIL, [evil_run])
    paths = []
    for t in (t1, t2):
        p = root / "tables" / f"{len(paths)}.json"
        write_study_tables(t, root / "tables" / f"{len(paths)}.csv", p)
        paths.append(p)
    return paths


PROVENANCE = {
    "git_commit": "0123abc",
    "config_hash": "sha256:feedbeef",
    "device": "cpu",
    "fidelity": "demo",
    "packages": {"torch": "2.14.1", "pandas": "3.1.1"},
    "note": EVIL,
}


@pytest.fixture(scope="module")
def report(studies, tmp_path_factory):
    """The report file, rendered once for the content tests and the browser."""
    return render_report(
        studies, tmp_path_factory.mktemp("html") / "index.html", PROVENANCE, templates=TEMPLATES
    )


@pytest.fixture(scope="module")
def html(report):
    return report.read_text(encoding="utf-8")


def test_report_contains_studies_tables_figures_and_provenance(html):
    assert "AutoLoRa Table 1 (ResNet-18)" in html
    assert 'class="results"' in html and 'class="comparisons"' in html
    # mean ± std, paper value, p-values of ours and of the paper (Table 8)
    assert "±" in html and "paper 84.20" in html and "paper 62.10" in html
    assert "Welch" in html
    assert "0.0001" in html  # AutoLoRa Table 8, ResNet-18 CIFAR-10 SA vs vanilla
    # training curves, inline
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    # training curves and per-class heat maps of cifar10 and cifar100 of the first study;
    # the evil run has no log and no per-class data
    assert len(imgs) == 4
    assert base64.b64decode(imgs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    # provenance and per-number preset
    for v in ("0123abc", "sha256:feedbeef", "packages.torch", "2.14.1", "demo"):
        assert v in html
    assert "<td>paper" in html  # the Preset column
    # the AutoAttack warning is reported
    assert "AutoAttack warnings" in html and "too long" in html
    # AA skipped for the baseline: shown as missing, not as 0
    assert "1 seed, no std" in html  # the evil study has a single seed
    assert "AA not evaluated" in html  # the baseline skipped AutoAttack


def test_report_shows_per_class_tables_and_the_never_predicted_warning(html):
    assert html.count('<table class="per-class"') == 2  # cifar10, cifar100 of the first study
    assert "1 · automobile" in html
    assert html.count(NEVER) == 1
    # visible page text at the top of its study: after the title, before the results table
    _visible_position(html, NEVER)  # page text: not folded away, hidden or in a tooltip
    study = html.index('id="study-autolora-table1"')
    assert study < html.index(NEVER) < html.index('<table class="results"', study)
    assert "Classes never predicted" in html


def test_report_escapes_markup_in_names(html):
    # EVIL is a study name, a method name and a provenance value
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_report_is_self_contained(html):
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    assert "<link" not in html.lower()


def test_figures_skip_missing_and_nan_columns(tmp_path):
    d = write_run(
        tmp_path,
        "c",
        "b",
        "v",
        0,
        {"SA": 0.5},
        train_log=pd.DataFrame(
            {"epoch": [0, 1], "lr": [0.1, 0.1], "grad_sim": [math.nan, math.nan]}
        ),
    )
    run = load_run_record(d)
    assert "grad_sim" not in run.train_log  # all-NaN column dropped
    figs = study_figures([run])
    assert len(figs) == 1 and "Learning rate" in figs[0].caption
    assert "Gradient similarity" not in figs[0].caption
    assert study_figures([run], ["accuracy", "grad_sim"]) == []  # only groups asked for
    run.train_log = {"epoch": [0, 1], "lr": [None, None]}
    assert study_figures([run]) == []
    run.train_log = None
    assert study_figures([run]) == []


def test_render_step(studies, tmp_path):
    prov = tmp_path / "prov.json"
    prov.write_text(json.dumps(PROVENANCE))
    out = tmp_path / "r" / "index.html"
    assert (
        render_step.main(
            [
                "--tables",
                *map(str, studies),
                "--out",
                str(out),
                "--provenance",
                str(prov),
                "--templates",
                str(TEMPLATES),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "0123abc" in text and "AutoLoRa Table 1 (ResNet-18)" in text
    assert text.startswith("<!DOCTYPE html>")  # the template's leading comment leaves no trace
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]


def test_render_step_finds_the_templates_next_to_the_workflow(studies, tmp_path, monkeypatch):
    # Snakemake runs the step in the workflow directory: report/templates there is the default
    monkeypatch.chdir(ROOT)
    out = tmp_path / "index.html"
    assert render_step.main(["--tables", str(studies[0]), "--out", str(out)]) == 0
    assert "AutoLoRa Table 1 (ResNet-18)" in out.read_text()


def test_render_step_without_templates_names_the_expected_path(studies, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "index.html"
    expected = tmp_path.resolve() / "report" / "templates" / "report.html"
    with pytest.raises(SystemExit, match=re.escape(str(expected))):
        render_step.main(["--tables", str(studies[0]), "--out", str(out)])
    with pytest.raises(SystemExit, match="pass --templates"):
        render_step.main(
            [
                "--tables",
                str(studies[0]),
                "--out",
                str(out),
                "--templates",
                str(tmp_path / "nowhere"),
            ]
        )
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="nowhere/report.html does not exist"):
        render_report(studies, out, templates=tmp_path / "nowhere")


def test_an_edited_template_changes_the_report(studies, tmp_path):
    """The templates are read from the directory given, not from a copy inside the package:
    editing the workflow's template (a rule input) is what the next render shows."""
    edited = tmp_path / "templates"
    shutil.copytree(TEMPLATES, edited)
    page = edited / "report.html"
    page.write_text(
        page.read_text().replace("<h1>{{ title }}</h1>", "<h1>{{ title }} (edited)</h1>")
    )
    out = render_report(studies, tmp_path / "index.html", templates=edited)
    assert "<h1>robustft — reproduction report (edited)</h1>" in out.read_text()


#: what the pipeline produces that Snakemake's --report can show, and the caption of each
CAPTION_KINDS = {"study_table", "html_report", "report_index", "study_figures"}


@pytest.mark.parametrize("study", ["demo", "autolora_table1", None])
def test_captions_render_as_snakemake_renders_them(study):
    """Every caption is a Jinja2 template over Snakemake's ``snakemake`` object that gives
    valid reStructuredText, with and without a ``{study}`` wildcard."""
    import yaml
    from docutils.core import publish_parts
    from jinja2 import Environment

    assert {p.stem for p in CAPTIONS.glob("*.rst")} == CAPTION_KINDS
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    wildcards = SimpleNamespace(**({"study": study} if study else {}))
    for path in sorted(CAPTIONS.glob("*.rst")) + [ROOT / "report" / "workflow.rst"]:
        text = (
            Environment(trim_blocks=True, lstrip_blocks=True)
            .from_string(path.read_text())
            .render(snakemake=SimpleNamespace(wildcards=wildcards, config=config))
        )
        # halt_level 2: a reStructuredText warning (bad markup) is an error here
        html = publish_parts(
            text, writer="html", settings_overrides={"halt_level": 2, "report_level": 5}
        )["body"]
        assert len(html) > 100, path.name
        if path.stem == "study_table" and study:
            assert study in html and config["studies"][study]["description"].split()[0] in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no chromium/chrome binary on PATH (apt-get install chromium); the "
            "browser rendering of the report is not checked"
        )
    out = report
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / "report.png"
    png.unlink(missing_ok=True)
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        "--window-size=1280,2000",
        out.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
