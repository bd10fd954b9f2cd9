"""RobustBench backbones (robustft.models.robustbench): the import without ``autoattack``, a
checkpoint in RobustBench's own file layout and save format loaded through the package, the
offline error naming the file to place, and CLAT's layer numbering on the WRN-70-16 zoo models."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

if importlib.util.find_spec("robustbench") is None:  # the optional extra [robustbench]
    pytest.skip("robustbench is not installed", allow_module_level=True)

from robustft.clat.layers import candidate_layers
from robustft.models.robustbench import (
    OFFLINE_ENV,
    ZooModel,
    ZooModelMissing,
    import_robustbench,
    load_zoo_model,
)

SMALL = ZooModel("Ding2020MMA", "cifar10", "Linf")  # a WRN-28-4 of the zoo (5.8M parameters)


def test_import_needs_no_autoattack_module():
    import_robustbench()
    assert "robustbench.utils" in sys.modules
    assert "autoattack" not in sys.modules and "robustbench.eval" not in sys.modules


@pytest.mark.slow  # a fresh interpreter imports timm and the whole zoo: ~25 s on 2 busy cores
def test_import_in_a_fresh_interpreter():
    # a fresh interpreter: robustbench's own __init__ would import `autoattack` (absent: PyPI's
    # pyautoattack installs `pyautoattack`) and pkg_resources; the helper imports neither
    code = (
        "import sys\n"
        "from robustft.models.robustbench import import_robustbench\n"
        "rb = import_robustbench()\n"
        "assert callable(rb.utils.load_model)\n"
        "assert 'autoattack' not in sys.modules and 'robustbench.eval' not in sys.modules\n"
        "import robustbench.model_zoo.cifar10\n"  # later plain imports reuse the same package
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_checkpoint_in_robustbench_format_loads_through_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")  # the file is there: nothing may be downloaded
    rb = import_robustbench()
    monkeypatch.setattr(
        rb.utils, "download_gdrive_new", lambda *a: pytest.fail("tried to download")
    )
    reference = SMALL.architecture()
    with torch.no_grad():  # weights a fresh build cannot have
        for i, p in enumerate(reference.parameters()):
            p.fill_(0.001 * (i % 7))
    (path,) = SMALL.files(tmp_path)
    assert path == tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt"
    path.parent.mkdir(parents=True)
    # the zoo's save format: {"state_dict": ...} from a DataParallel model ("module." keys)
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = load_zoo_model(SMALL, tmp_path)
    assert not model.training
    for (k, v), (k2, v2) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k
    x = torch.full((2, 3, 32, 32), 0.5)
    with torch.no_grad():
        assert torch.equal(model(x), reference.eval()(x))


def test_offline_error_names_the_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    peng = ZooModel("Peng2023Robust", "cifar10", "Linf")
    with pytest.raises(ZooModelMissing) as err:
        load_zoo_model(peng, tmp_path / "models")
    text = str(err.value)
    assert str(tmp_path / "models" / "cifar10" / "Linf" / "Peng2023Robust.pt") in text
    assert "MISSING" in text and "drive.google.com" in text
    # ensembles: one file per member, as RobustBench names them
    bai = ZooModel("Bai2023Improving_edm", "cifar100", "Linf")
    with pytest.raises(ZooModelMissing, match=r"Bai2023Improving_edm\.pt_m2\.pt"):
        load_zoo_model(bai, tmp_path / "models")


def test_failed_download_is_the_same_error(tmp_path, monkeypatch):
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    rb = import_robustbench()

    def no_network(*args):
        raise ConnectionError("no network")

    monkeypatch.setattr(rb.utils, "download_gdrive_new", no_network)
    with pytest.raises(ZooModelMissing, match="Ding2020MMA.pt.*\n.*\n.*download failed"):
        load_zoo_model(SMALL, tmp_path)


def test_unknown_names_are_named():
    with pytest.raises(KeyError, match="Peng2099"):
        ZooModel("Peng2099", "cifar10").entry()
    with pytest.raises(ValueError, match="threat model"):
        ZooModel("Peng2023Robust", "cifar10", "Linfinity")


def _tiny_wrn70_16():
    from robustbench.model_zoo.architectures.dm_wide_resnet import DMWideResNet

    return DMWideResNet(num_classes=10, depth=70, width=1)  # DeepMind WRN-70-16 at width 1


def _tiny_ra_wrn70_16():
    from robustbench.model_zoo.architectures.robustarch_wide_resnet import NormalizedWideResNet

    # RaWRN-70-16 (Peng et al. 2023) with its depths and SE gates, 8 channels per stage
    return NormalizedWideResNet(
        (0.5,) * 3,
        (0.25,) * 3,
        stem_width=8,
        depth=[30, 31, 10],
        stage_width=[8, 8, 8],
        groups=[1, 1, 1],
        activation_fn=torch.nn.SiLU,
        se_ratio=0.25,
        se_activation=torch.nn.ReLU,
        se_order=2,
        num_classes=10,
    )


@pytest.mark.parametrize(("build", "count"), [(_tiny_wrn70_16, 68), (_tiny_ra_wrn70_16, 144)])
def test_clat_numbering_covers_the_wrn70_16_models(build, count):
    layers = candidate_layers(build())
    names = [n for n, _ in layers]
    assert len(layers) == count
    assert names[0] == "init_conv" and names[-1] == "logits"
    assert not [n for n in names if "shortcut" in n or ".se." in n]
    for index in (4, 17, 1, 59, 62, 3, 2, 61):  # CLAT Table 3, WRN70-16
        assert 1 <= index <= len(layers)


def test_backbone_file_is_a_self_describing_model(tmp_path, monkeypatch):
    from robustft.backbones import fetch_robustbench
    from robustft.models import build_model
    from robustft.models.checkpoint import load_model, load_model_state

    monkeypatch.setenv(OFFLINE_ENV, "1")
    reference = SMALL.architecture()
    (path,) = SMALL.files(tmp_path / "zoo")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": reference.state_dict()}, path)
    dest = tmp_path / "backbones" / "rb_small.pt"
    digest = fetch_robustbench(SMALL.arch, tmp_path / "zoo", dest)
    assert len(digest) == 64
    model, extra = load_model(dest)  # what evaluation does: rebuild from the file's ModelSpec
    assert model.arch == "robustbench.cifar10.Linf.Ding2020MMA" and extra == {}
    for k, v in reference.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # "X + CLAT" starts from every tensor of it, head included (init_from: model)
    fresh = build_model(SMALL.arch, 10)
    fresh.load_state_dict(load_model_state(dest))
    with pytest.raises(ValueError, match="10 classes"):
        build_model(SMALL.arch, 100)
    with pytest.raises(ValueError, match="takes no"):
        build_model(SMALL.arch, 10, width=4)
    with pytest.raises(ValueError, match="not a RobustBench architecture"):
        ZooModel.from_arch("robustbench.Peng2023Robust")


def test_fetch_step_offline_names_the_file_to_place(tmp_path, monkeypatch, capsys):
    from robustft.steps import fetch_robustbench as step

    monkeypatch.setenv(OFFLINE_ENV, "1")
    argv = ["--arch", SMALL.arch, "--out", str(tmp_path / "bb.pt")]
    with pytest.raises(ZooModelMissing, match=r"zoo/cifar10/Linf/Ding2020MMA\.pt"):
        step.main([*argv, "--model-dir", str(tmp_path / "zoo")])
    (path,) = SMALL.files(tmp_path / "zoo")
    path.parent.mkdir(parents=True)
    torch.save(SMALL.architecture().state_dict(), path)  # a bare state dict: also the format
    step.main([*argv, "--model-dir", str(tmp_path / "zoo")])
    assert (tmp_path / "bb.pt").is_file() and "sha256" in capsys.readouterr().out


def test_as_is_run_is_the_zoo_model_itself(tmp_path, monkeypatch):
    # CLAT Table 1's "Peng et al." / "Bai et al." rows: the as_is step makes the run's files
    # from the backbone file; evaluation and the tables then read them like any run's
    import json

    import yaml

    from robustft.backbones import fetch_robustbench
    from robustft.contracts import RunIdentity
    from robustft.models.checkpoint import CheckpointError, load_model
    from robustft.steps import as_is
    from robustft.tables.records import load_run_record

    monkeypatch.setenv(OFFLINE_ENV, "1")
    reference = SMALL.architecture()
    with torch.no_grad():  # weights a fresh build cannot have
        for i, p in enumerate(reference.parameters()):
            p.fill_(0.002 * (i % 5) - 0.003)
    (path,) = SMALL.files(tmp_path / "zoo")
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": reference.state_dict()}, path)
    backbone = tmp_path / "backbones" / "rb_small.pt"
    fetch_robustbench(SMALL.arch, tmp_path / "zoo", backbone)
    run_dir = tmp_path / "runs" / "fid" / "cifar10_32" / "rb_small" / "zoo" / "seed0"
    identity = RunIdentity(
        fidelity="fid",
        dataset="cifar10_32",
        backbone="rb_small",
        variant="zoo",
        seed=0,
        method="as_is",
        preset="paper",
    )
    args = ["--backbone", str(backbone), "--out", str(run_dir)]
    as_is.main([*args, "--identity", json.dumps(identity.to_dict())])

    model, extra = load_model(run_dir / "model_best.pt")  # what evaluation and CLAT read
    assert model.arch == SMALL.arch and extra["selection"] == "as_is"
    assert extra["source"]["file"] == str(backbone)
    # the parameter groups the training loop asks for (WRN-28-4's classifier: fc, 256 → 10)
    assert model.head is model.fc and model.count_parameters()["head"] == 2570
    n = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in model.feature_extractor_parameters()) == n - 2570
    x = torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))
    record = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert record["variant"] == "zoo" and record["method"] == "as_is"
    assert record["settings"]["epochs"] == 0 and record["settings"]["arch"] == SMALL.arch
    assert (run_dir / "train_log.csv").read_text() == "epoch,seconds\n"
    (run_dir / "eval.json").write_text(json.dumps({"metrics": {"SA": {"accuracy": 0.5, "n": 2}}}))
    run = load_run_record(run_dir)
    assert (run.variant, run.seed, run.train_log) == ("zoo", 0, None)
    assert run.protocol["epochs"] == 0 and run.value("SA") == 50.0

    # a file without its model description (a bare state dict) fails naming it
    bare = tmp_path / "bare.pt"
    torch.save(reference.state_dict(), bare)
    with pytest.raises(CheckpointError, match=r"bare\.pt.*does not describe its model"):
        as_is.main(["--backbone", str(bare), "--out", str(tmp_path / "other")])
    assert not (tmp_path / "other" / "model_best.pt").exists()


@pytest.mark.slow  # WRN-28-4 CLAT epoch on the CPU: ~20-40 s on 2 shared cores
def test_clat_fine_tunes_an_as_is_run(tmp_path, monkeypatch):
    # "Peng et al. + CLAT" in miniature: the zoo model → backbone file → as-is run → one CLAT
    # epoch from its model_best.pt (init_from model, head included), k set explicitly
    from robustft.backbones import fetch_robustbench, model_as_is
    from robustft.contracts import TrainConfig
    from robustft.models.checkpoint import load_model
    from robustft.train import train_run
    from tests.conftest import write_tiny_dataset

    monkeypatch.setenv(OFFLINE_ENV, "1")
    (path,) = SMALL.files(tmp_path / "zoo")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({"state_dict": SMALL.architecture().state_dict()}, path)
    fetch_robustbench(SMALL.arch, tmp_path / "zoo", tmp_path / "bb.pt")
    model_as_is(tmp_path / "bb.pt", tmp_path / "zoo_run" / "model_best.pt")
    data = write_tiny_dataset(tmp_path / "data", classes=10, per_split=(20, 10, 10), res=32)
    cfg = TrainConfig(
        run_name="zoo+clat",
        method="clat",
        arch=SMALL.arch,
        seed=0,
        epochs=1,
        batch_size=10,
        train_attack={"eps": 0.03, "step": 0.03, "steps": 1, "random_start": True},
        eval_attack={"eps": 0.03, "step": 0.03, "steps": 1, "random_start": True},
        selection="last",
        init_from="model",
        method_params={"k": 2},
        device="cpu",
    )
    train_run(cfg, data, tmp_path / "zoo_run" / "model_best.pt", tmp_path / "ck", tmp_path / "out")
    tuned, _ = load_model(tmp_path / "out" / "model_best.pt")
    start, _ = load_model(tmp_path / "zoo_run" / "model_best.pt")
    changed = [
        k for k, v in tuned.state_dict().items() if not torch.equal(v, start.state_dict()[k])
    ]
    assert tuned.arch == SMALL.arch and changed  # CLAT trained some of the zoo model's layers
