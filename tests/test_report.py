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
import yaml
from test_per_class import _visible_position, add_per_class
from test_stats import write_run

from robustft.report import render_report, render_study_pages, study_figures
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
    epochs: int, seed: int, *, auto: bool, lambdas: bool = True, grad_sim: bool | str = True
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
    if grad_sim == "zero":  # AutoLoRa: the natural loss does not reach the FE
        df["grad_sim"] = 0.0
    elif grad_sim:
        df["grad_sim"] = 0.2 + 0.1 * np.sin(e)
    return df


def add_protocol(run_dir: Path, *, aa_examples: int = 48, pgd_examples: int = 500) -> Path:
    """What the training and evaluation steps record about how a number was obtained."""
    ev = json.loads((run_dir / "eval.json").read_text())
    ev["metrics"]["SA"]["n"] = pgd_examples
    if "PGD10" in ev["metrics"]:
        ev["metrics"]["PGD10"].update(
            n=pgd_examples,
            attack={"eps": 8 / 255, "step": 2 / 255, "steps": 10, "random_start": False},
        )
    if "AA" in ev["metrics"]:
        ev["metrics"]["AA"].update(n=aa_examples, config={"eps": 8 / 255, "version": "standard"})
    ev["compute"] = {"device": "cpu", "device_name": "cpu", "precision": "fp32"}
    ev["timing"] = {"pgd_seconds": 41.0, "autoattack_seconds": 300.0}
    (run_dir / "eval.json").write_text(json.dumps(ev))
    cfg = yaml.safe_load((run_dir / "run.yaml").read_text())
    cfg["settings"] = {"selection": "test_pgd", "epochs": 12, "device": "auto"}
    cfg["compute"] = {"device": "cpu", "precision": "fp32", "channels_last": False}
    (run_dir / "run.yaml").write_text(yaml.safe_dump(cfg))
    return run_dir


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
                    train_log=train_log(12, s, auto=True, grad_sim="zero"),
                    aa_warnings=[TOO_LONG] if (s, ds) == (6, "cifar10") else None,
                )
            )
            add_per_class(dirs[-1], [base + 0.05, base - 0.05, base, base], [])
            add_protocol(dirs[-1])
            dirs.append(
                write_run(
                    root,
                    ds,
                    "resnet18",
                    "vanilla_rft",
                    s,
                    {"SA": base - 0.03 + 0.002 * (s % 3), "PGD10": base - 0.31, "AA": None},
                    train_log=train_log(12, s, auto=False, lambdas=False),
                )
            )
            bug = (s, ds) == (0, "cifar10")  # the TWINS-bug symptom, in one seed
            add_per_class(
                dirs[-1], [base, 0.0 if bug else base - 0.1, base, base - 0.1], [1] if bug else []
            )
            add_protocol(dirs[-1])
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


#: CLAT Figure 4's strengths (config.yaml's clat protocol sweep)
EPSILONS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06)


def _clat_run(root, variant, seed, metrics, *, k=None, method="PGD-AT+CLAT"):
    d = write_run(root, "cifar10_32", "cifar_rn50", variant, seed, metrics, method=method)
    cfg = yaml.safe_load((d / "run.yaml").read_text())
    params = {} if k is None else {"k": k}
    cfg["settings"] = {"selection": "test_pgd", "arch": "cifar_resnet50", "method_params": params}
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    return load_run_record(d)


@pytest.fixture(scope="module")
def clat_studies(tmp_path_factory):
    """CLAT Figure 4 (PGD across ε) and Figure 3 (number of critical layers) as studies."""
    root = tmp_path_factory.mktemp("clat")
    sweep = []
    for s in (0, 1, 2):
        for variant, method, base in [("pgd_at", "PGD-AT", 0.80), ("pgd_at+clat", None, 0.83)]:
            metrics = {f"PGD_eps{e:g}": base * math.exp(-e / 0.04) + 0.004 * s for e in EPSILONS}
            sweep.append(
                _clat_run(root / "sweep", variant, s, metrics, method=method or "PGD-AT+CLAT")
            )
    layers = []
    for s in (0, 1, 2):
        for variant, k, pgd in [
            ("pgd_at+clat-k1", 1, 0.55),
            ("pgd_at+clat", None, 0.58),
            ("pgd_at+clat-k5", 5, 0.56),
        ]:
            metrics = {"SA": 0.82 + 0.003 * s, "PGD10": pgd + 0.004 * s}
            layers.append(_clat_run(root / "k", variant, s, metrics, k=k))
    t4 = aggregate_study("clat_figure4", sweep, title="CLAT Figure 4")
    t3 = aggregate_study("clat_figure3", layers, title="CLAT Figure 3")
    out = []
    for t in (t4, t3):
        p = root / f"{t.study}.json"
        write_study_tables(t, None, p)
        out.append(p)
    return out


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


#: committed screenshots: a paper-table study page (protocol, results with paper checks,
#: comparisons, training curves) and a page of CLAT's figures drawn as the paper draws them
SCREENSHOTS = {
    "report.png": ("autolora_table1.html", 4700),
    "report_figures.png": ("clat_figure4.html", 1900),
}


@pytest.fixture(scope="module")
def study_pages(studies, clat_studies, tmp_path_factory):
    out = tmp_path_factory.mktemp("pages")
    render_study_pages([studies[0], *clat_studies], out, PROVENANCE, templates=TEMPLATES)
    return out


@pytest.mark.parametrize("png_name", sorted(SCREENSHOTS))
def test_report_renders_in_headless_chromium(study_pages, png_name, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no chromium/chrome binary on PATH (apt-get install chromium); the "
            "browser rendering of the report is not checked"
        )
    page, height = SCREENSHOTS[png_name]
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / png_name
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
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={png}",
        f"--window-size=1280,{height}",
        (study_pages / page).resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the page is drawn, not blank: many distinct colours (text, tables, figures)
    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, height)
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 200


# --------------------------------------------------------------------------- protocol, power


def test_protocol_and_evidence_are_page_text_beside_the_table(html):
    study = html.index('id="study-autolora-table1"')
    results = html.index('<table class="results"', study)
    # the selection on the test set is said before the results table, as page text
    selection = "chosen on the same test set the table reports"
    assert study < html.index(selection, study) < results
    _visible_position(html, "the official protocol: the checkpoint is chosen")
    for fact in (
        "ε 8/255 · step 2/255 · 10 steps · 1 restart · no random start",  # PGD-10
        "on 48 test examples per run",  # AutoAttack on 48 images
        "on 500 test examples per run",  # PGD-10
        "training fp32; evaluation fp32",  # precision
        "Device actually used",
        "(requested: auto)",
    ):
        assert fact in html[study:results], fact
        _visible_position(html, fact)
    # every cell shows its seeds and test examples; AA on 48
    assert "n = 3 seeds × 48 ex." in html and "n = 3 seeds × 500 ex." in html
    # wall time per run in the visible runs table (epochs' seconds and the attacks' seconds)
    runs = html.index('<table class="small runs"', study)
    assert "12 s" in html[runs:] and "5.7 min" in html[runs:]  # 41 s + 300 s
    _visible_position(html, "Runs")


def test_comparisons_show_n_t_df_p_mdd_and_what_the_seeds_can_detect(html):
    table = html[html.index('<table class="comparisons"') :]
    table = table[: table.index("</table>")]
    for header in (">n<", ">t<", ">df<", ">p<", ">MDD<"):
        assert header in table, header
    assert "3/3" in table
    assert "What 3 seeds can detect" in html
    _visible_position(html, "What 3 seeds can detect")
    assert "minimum detectable difference" in html


def test_paper_consistency_marks_and_their_rule(html):
    assert "Paper check:" in html and "95 % t-interval" in html
    _visible_position(html, "Paper check:")
    study = html[html.index('id="study-autolora-table1"') :]
    assert "✓" in study and "✗" in study  # SA is close to the paper, PGD-10 is not


def test_series_a_method_does_not_define_is_omitted_with_a_note(html):
    note = "Gradient similarity: AutoLoRa omitted — identically 0 in every seed"
    assert note in html and "natural loss does not reach the feature extractor" in html
    _visible_position(html, note)


def test_a_page_per_study_and_an_index_of_every_built_study(studies, clat_studies, tmp_path):
    out = tmp_path / "report"
    first = render_study_pages(studies[:1], out, PROVENANCE, templates=TEMPLATES)
    assert [p.name for p in first] == ["autolora_table1.html", "index.html"]
    # a later build of other studies adds their pages and keeps the first one
    render_study_pages(clat_studies, out, templates=TEMPLATES, figures_dir=out / "figures")
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["autolora_table1.html", "clat_figure3.html", "clat_figure4.html", "index.html"]
    index = (out / "index.html").read_text()
    for page, title in [
        ("autolora_table1.html", "AutoLoRa Table 1 (ResNet-18)"),
        ("clat_figure4.html", "CLAT Figure 4"),
    ]:
        assert f'href="{page}"' in index and title in index
    assert "12 runs (AutoLoRa, Vanilla RFT)" in index
    assert 'href="index.html"' in (out / "clat_figure4.html").read_text()
    figures = sorted(p.name for p in (out / "figures" / "clat_figure4").iterdir())
    assert figures == ["paper_1.png"]
    with pytest.raises(ValueError, match="overwrite the index"):
        render_study_pages(
            [aggregate_study("index", [load_run_record(d) for d in []])],
            out,
            templates=TEMPLATES,
        )


def test_clat_figures_drawn_as_the_paper_draws_them(clat_studies, tmp_path):
    out = render_report(clat_studies, tmp_path / "clat.html", templates=TEMPLATES)
    html = out.read_text()
    assert html.count('class="paper-figure"') == 2  # Figure 4 (ε) and Figure 3 (k)
    # the numbers below each figure: ε rows and k rows, with Table 1's values where printed
    assert "white-box PGD accuracy across ε" in html and "number of critical layers" in html
    sweep = html[html.index("white-box PGD accuracy across ε") :]
    numbers = sweep[sweep.index('<table class="small figure-numbers"') :]
    numbers = numbers[: numbers.index("</table>")]
    assert numbers.count("<tr>") == 1 + len(EPSILONS)
    assert "(paper 56.35)" in numbers and "(paper 59.54)" in numbers  # CLAT Table 1, RN50, ε 0.03
    layers = html[html.index("CLAT against the number of critical layers") :]
    k_numbers = layers[layers.index('<table class="small figure-numbers"') :]
    k_numbers = k_numbers[: k_numbers.index("</table>")]
    # k = 1, 3 (RN50's default, CLAT Sec. 4.1), 5; Table 1's value only at the default k
    assert [m for m in re.findall(r"<tr><td>(\d)</td>", k_numbers)] == ["1", "3", "5"]
    assert k_numbers.count("(paper 59.54)") == 1 and "(paper 83.78)" in k_numbers


def test_chained_runs_are_drawn_on_the_epoch_axis_of_the_whole_budget(tmp_path):
    """CLAT Figure 2: CLAT after 10 PGD-AT epochs starts at epoch 10 of the 100-epoch budget;
    the numbers below the figure say which epochs each curve covers."""
    runs = []
    for variant, method, epochs, offset in [
        ("pgd_at", "PGD-AT", 14, None),
        ("pgd_at+clat-after10", "PGD-AT+CLAT", 4, 10),
    ]:
        e = np.arange(epochs)
        log = pd.DataFrame({"epoch": e, "test_nat_acc": 0.5 + 0.01 * e, "test_pgd_acc": 0.3})
        d = write_run(tmp_path, "c", "b", variant, 0, {"SA": 0.5}, method=method, train_log=log)
        run = load_run_record(d)
        run.protocol = {"epoch_offset": offset}
        runs.append(run)
    (fig,) = study_figures(runs, ["accuracy"])
    rows = {(r[0], r[1]): r for r in fig.table["rows"]}
    assert rows[("PGD-AT", "Natural accuracy · test")][2] == "0–13"
    clat = rows[("PGD-AT+CLAT (pgd_at+clat-after10)", "Natural accuracy · test")]
    assert clat[2] == "10–13" and clat[3] == "53" and clat[5] == "13"
