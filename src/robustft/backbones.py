"""Where pretrained backbones come from.

Salman et al. (2020), "Do adversarially robust ImageNet models transfer better?": L∞ robust
ResNet-18/50 checkpoints in the robustness-library format, mirrored by MadryLab on the
Hugging Face hub (the original Azure links of microsoft/robust-models-transfer expired).
No SHA-256 is published for them: the first download records its digest next to the file
(``<file>.sha256``) and every later use is verified against it; set ``sha256:`` on the
backbone in config.yaml to pin a digest you trust before the first download.

RobustBench (Croce et al. 2021) model-zoo checkpoints, CLAT Table 1's WRN-70-16 "X" models:
:func:`fetch_robustbench` has the ``robustbench`` package build and fill the model
(:mod:`robustft.models.robustbench`: its own file layout under ``model_dir``, the download, the
offline error) and writes it as a self-describing model file (``{"state_dict", "model":
ModelSpec}``, arch ``robustbench.<dataset>.<threat model>.<name>``): the whole network, head
included, which "X + CLAT" fine-tunes (``init_from: model``) and evaluation rebuilds as is.
Which models CLAT used, and why (spec score_and_robustbench.md §B):

* Peng et al. = ``Peng2023Robust`` (CIFAR-10 RaWRN-70-16: 267,240,802 parameters, CLAT Table
  6's "267M"; CLAT's clean/adv equal RobustBench's clean/AutoAttack 93.27/71.07). RobustBench
  has no CIFAR-100 Peng model, so that row has no checkpoint to start from.
* Bai et al. (ref. [5], adaptive smoothing = ``Bai2023Improving_*``): those zoo entries are
  ensembles of over 499M parameters, not a WRN70-16, so CLAT most plausibly used their robust
  WRN-70-16 base. CIFAR-100: ``Gowal2020Uncovering_extra`` (the same file as the robust base of
  ``Bai2023Improving_trades``; 69.15 clean vs CLAT's 69.17). CIFAR-10 is not settled by the
  paper: ``Wang2023Better_WRN-70-16`` (Bai's robust base) and
  ``Rebuffi2021Fixing_70_16_cutmix_extra`` (clean 92.23, exactly CLAT's) are both options.
  config.yaml's ``rb_bai_c10`` is Rebuffi's (the clean-accuracy match that also picked the
  CIFAR-100 model); ``rb_bai_c10_wang`` is the other option.

:func:`model_as_is` makes an as-is run's ``model_best.pt`` from such a file (the "X" rows: the
zoo model evaluated without training, ``method: as_is`` in config.yaml).
"""

from __future__ import annotations

import os
from pathlib import Path

from robustft.data.download import fetch
from robustft.io import atomic_path, sha256_file

SALMAN_URL = (
    "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/"
    "{arch}_linf_eps{eps:.1f}.ckpt"
)
SALMAN_EPS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def salman_url(arch: str, eps_pt: float) -> str:
    if arch not in ("resnet18", "resnet50"):
        raise ValueError(f"Salman et al. publish resnet18/resnet50 checkpoints, not {arch!r}")
    if float(eps_pt) not in SALMAN_EPS:
        raise ValueError(f"no Salman et al. L∞ checkpoint for eps_pt={eps_pt} (have {SALMAN_EPS})")
    return SALMAN_URL.format(arch=arch, eps=float(eps_pt))


def fetch_salman(arch: str, eps_pt: float, dest: Path, sha256: str | None = None) -> str:
    """Download (or reuse) and verify a Salman et al. checkpoint; return its SHA-256."""
    dest = Path(dest)
    pin = dest.with_name(dest.name + ".sha256")
    if sha256 is None and pin.exists():
        sha256 = pin.read_text().split()[0]
    digest = fetch(salman_url(arch, eps_pt), dest, sha256=sha256)
    pin.write_text(f"{digest}  {dest.name}\n")
    return digest


def fetch_robustbench(
    arch: str, model_dir: str | os.PathLike[str], dest: str | os.PathLike[str]
) -> str:
    """Load the RobustBench model named by ``arch`` (``robustbench.<dataset>.<threat>.<name>``)
    from ``model_dir`` (downloading it there unless offline) and write it to ``dest`` as a
    self-describing model file; return the file's SHA-256."""
    import torch

    from robustft.models.checkpoint import ModelSpec
    from robustft.models.robustbench import NUM_CLASSES, ZooModel, load_zoo_model

    zoo = ZooModel.from_arch(arch)
    model = load_zoo_model(zoo, model_dir)
    spec = ModelSpec(arch=arch, num_classes=NUM_CLASSES[zoo.dataset], method="robustbench")
    with atomic_path(dest) as tmp:
        torch.save({"state_dict": model.state_dict(), "model": spec.as_dict()}, tmp)
    return sha256_file(dest)


def model_as_is(backbone: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict:
    """An as-is run's ``model_best.pt`` (CLAT Table 1's "Peng et al." / "Bai et al." rows):
    the self-describing ``backbone`` file unchanged, after checking that it rebuilds (so a bad
    file fails here, naming it, rather than in the evaluation). Returns its ModelSpec entry."""
    import torch

    from robustft.models.checkpoint import load_torch_file, model_from_payload

    hint = "Delete it and run the job that fetched it again (fetch_robustbench)."
    payload = load_torch_file(backbone, hint=hint)
    model_from_payload(payload, backbone, hint)  # builds the model and loads every tensor
    out = {
        "state_dict": payload["state_dict"],
        "model": dict(payload["model"]),
        # nothing was trained: no epoch was selected
        "best_epoch": None,
        "selection": "as_is",
        "source": {"file": str(backbone), "sha256": sha256_file(backbone)},
    }
    with atomic_path(dest) as tmp:
        torch.save(out, tmp)
    return out["model"]
