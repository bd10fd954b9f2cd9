"""RobustBench model-zoo checkpoints (CLAT Table 1's WRN-70-16 "X" models) through the
``robustbench`` package: its architectures and its download, not re-written here.

Owns :func:`import_robustbench` (the one place the package is imported), :class:`ZooModel` (a
model's identity: name, dataset, threat model, and where RobustBench keeps its file) and
:func:`load_zoo_model` (build + weights, or an error naming the file to place when offline).

Why the import needs care: ``robustbench==1.1.1``'s ``__init__`` imports ``.data`` (which needs
``pkg_resources``) and ``.eval`` (which needs a module named ``autoattack``; PyPI's
``pyautoattack``, which robustbench itself declares, installs it as ``pyautoattack``). Neither is
needed to build a model and load its weights, so :func:`import_robustbench` registers a bare
parent package for ``robustbench`` (its real ``__path__``, without running its ``__init__``) and
imports only ``robustbench.utils`` and ``robustbench.model_zoo`` beneath it. No alias for
``autoattack`` is installed (it would shadow a real ``autoattack``, and robustbench's
``benchmark()`` does not run on pyautoattack 0.2.0's signature anyway); evaluation uses the
project's own AutoAttack wrapper (:mod:`robustft.attacks.autoattack`).

The package is the optional extra ``robustbench`` (``pip install -e '.[robustbench]'``).

Files: RobustBench's own layout ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (ensembles:
``<name>.pt_m<i>.pt``, one per member); an existing file is used as is, a missing one is
downloaded from Google Drive by ``gdown``. Offline (``ROBUSTFT_OFFLINE=1``, or the download
fails), :class:`ZooModelMissing` names the file(s) to place and the Drive id(s) to get them from.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from robustft.data.download import OFFLINE_ENV, DownloadError

THREAT_MODELS = ("Linf", "L2", "corruptions")
DATASETS = ("cifar10", "cifar100", "imagenet")


#: prefix of the architecture names (``ModelSpec.arch``) of zoo models:
#: ``robustbench.<dataset>.<threat model>.<name>``, e.g. ``robustbench.cifar10.Linf.Peng2023Robust``
#: (dots: a config name allows [A-Za-z0-9_.+-] and no zoo name contains one)
ARCH_PREFIX = "robustbench."
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
#: where the workflow keeps RobustBench's files (its ``model_dir``; RobustBench's layout below)
DEFAULT_MODEL_DIR = "resources/robustbench"


class ZooModelMissing(DownloadError):
    """A RobustBench checkpoint is not on disk and cannot be downloaded (a step that hits it
    ends with the project's download failure line: place the file, run again)."""


def import_robustbench() -> types.SimpleNamespace:
    """``robustbench.utils`` and ``robustbench.model_zoo`` (as ``.utils``, ``.model_zoo``),
    imported without running ``robustbench/__init__.py`` (module docstring: it imports
    ``autoattack`` and ``pkg_resources``, which building a model never needs)."""
    parent = sys.modules.get("robustbench")
    if parent is None:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(
                "the RobustBench backbones need the package robustbench==1.1.1: "
                "pip install -e '.[robustbench]'"
            )
        parent = types.ModuleType("robustbench")
        parent.__path__ = list(spec.submodule_search_locations)
        parent.__spec__ = spec
        parent.__file__ = spec.origin
        # only the bare package: its submodules import each other by absolute name
        sys.modules["robustbench"] = parent
    utils = importlib.import_module("robustbench.utils")
    zoo = importlib.import_module("robustbench.model_zoo")
    return types.SimpleNamespace(utils=utils, model_zoo=zoo)


def offline() -> bool:
    """Downloads forbidden (``ROBUSTFT_OFFLINE``, read as :mod:`robustft.data.download` does)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class ZooModel:
    """A RobustBench model: its zoo name (``Peng2023Robust``), dataset and threat model."""

    name: str
    dataset: str = "cifar10"
    threat_model: str = "Linf"

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"RobustBench dataset {self.dataset!r} is not one of {DATASETS}")
        if self.threat_model not in THREAT_MODELS:
            raise ValueError(
                f"RobustBench threat model {self.threat_model!r} is not one of {THREAT_MODELS}"
            )

    @property
    def arch(self) -> str:
        """The architecture name a model file records (:data:`ARCH_PREFIX`)."""
        return f"{ARCH_PREFIX}{self.dataset}.{self.threat_model}.{self.name}"

    @classmethod
    def from_arch(cls, arch: str) -> ZooModel:
        parts = arch[len(ARCH_PREFIX) :].split(".") if arch.startswith(ARCH_PREFIX) else []
        if len(parts) != 3:
            raise ValueError(
                f"not a RobustBench architecture name: {arch!r} "
                f"(expected {ARCH_PREFIX}<dataset>.<threat model>.<name>)"
            )
        return cls(parts[2], parts[0], parts[1])

    def entry(self) -> dict[str, Any]:
        """The model-zoo entry (``{"model": constructor, "gdrive_id": id | [ids]}``)."""
        rb = import_robustbench()
        enums = rb.model_zoo.enums
        models = rb.model_zoo.model_dicts[enums.BenchmarkDataset(self.dataset)][
            enums.ThreatModel(self.threat_model)
        ]
        if self.name not in models:
            raise KeyError(
                f"RobustBench has no {self.dataset}/{self.threat_model} model {self.name!r}"
            )
        return models[self.name]

    def drive_ids(self) -> list[str]:
        ids = self.entry()["gdrive_id"]
        return list(ids) if isinstance(ids, list | tuple) else [ids]

    def files(self, model_dir: str | os.PathLike[str]) -> list[Path]:
        """The file(s) RobustBench reads for this model (its own layout, module docstring)."""
        path = Path(model_dir) / self.dataset / self.threat_model / f"{self.name}.pt"
        if not isinstance(self.entry()["gdrive_id"], list):
            return [path]
        return [path.with_name(f"{path.name}_m{i}.pt") for i in range(len(self.drive_ids()))]

    def architecture(self) -> nn.Module:
        """The zoo's architecture with fresh weights (no file needed)."""
        return self.entry()["model"]()


class ZooInterface:
    """The parameter groups the training loop and the methods ask every model for (as
    :class:`robustft.models.cifar.CifarNet`), given to a zoo network without touching its
    modules: its state-dict keys stay RobustBench's, so the zoo's files load unchanged."""

    arch: str
    lora_config = None
    dual_bn = None
    input_size = None

    @property
    def head(self) -> nn.Linear:
        """The classifier: the network's last ``nn.Linear`` (``logits`` / ``fc`` in the zoo)."""
        return [m for m in self.modules() if isinstance(m, nn.Linear)][-1]

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.head.parameters()

    def lora_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def feature_extractor_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the classifier."""
        head = {id(p) for p in self.head.parameters()}
        yield from (p for p in self.parameters() if id(p) not in head)

    def count_parameters(self) -> dict[str, int]:
        fe = sum(p.numel() for p in self.feature_extractor_parameters())
        hd = sum(p.numel() for p in self.head_parameters())
        return {"feature_extractor": fe, "lora": 0, "head": hd, "total": fe + hd}


def with_interface(net: nn.Module, arch: str) -> nn.Module:
    """``net`` as an instance of a subclass of its own class and :class:`ZooInterface` (the
    same object and modules: nothing is copied or renamed)."""
    cls = type(net)
    net.__class__ = type(f"Zoo{cls.__name__}", (ZooInterface, cls), {})
    net.arch = arch
    return net


def build_zoo_architecture(arch: str, num_classes: int) -> nn.Module:
    """The architecture behind a :data:`ARCH_PREFIX` name, fresh weights (what
    :func:`robustft.models.build_model` returns for it). Zoo models keep their own head, so
    ``num_classes`` must be their dataset's."""
    model = ZooModel.from_arch(arch)
    if NUM_CLASSES[model.dataset] != num_classes:
        raise ValueError(
            f"{arch} classifies {NUM_CLASSES[model.dataset]} classes ({model.dataset}), "
            f"not {num_classes}: a RobustBench model is used on its own dataset"
        )
    return with_interface(model.architecture(), arch)


def missing_message(model: ZooModel, model_dir: str | os.PathLike[str]) -> str:
    what = f"{model.name} ({model.dataset}, {model.threat_model})"
    head = f"RobustBench checkpoint of {what} is not on disk and cannot be downloaded here."
    lines = [f"{head} Place the file(s) at:"]
    for path, gid in zip(model.files(model_dir), model.drive_ids(), strict=True):
        state = "present" if path.is_file() else "MISSING"
        lines.append(f"  {path}  ({state}; https://drive.google.com/uc?id={gid})")
    lines.append(
        'e.g. run `python -c "from robustbench.utils import load_model; load_model('
        f"'{model.name}', model_dir='models', dataset='{model.dataset}', "
        f"threat_model='{model.threat_model}')\"` on a machine with network and copy "
        f"models/{model.dataset}/{model.threat_model}/ over."
    )
    return "\n".join(lines)


def load_zoo_model(model: ZooModel, model_dir: str | os.PathLike[str]) -> nn.Module:
    """The model with its RobustBench weights, in eval mode, on the CPU.

    Files already in ``model_dir`` (RobustBench's layout) are used as they are; missing ones
    are downloaded by RobustBench unless :func:`offline`, in which case (or when the download
    fails) :class:`ZooModelMissing` names every file to place.
    """
    files = model.files(model_dir)
    missing = [f for f in files if not f.is_file()]
    url = "https://drive.google.com/uc?id=" + ",".join(model.drive_ids())
    if offline() and missing:
        raise ZooModelMissing(missing_message(model, model_dir), url=url, dest=missing[0])
    rb = import_robustbench()
    try:
        return rb.utils.load_model(
            model.name,
            model_dir=str(model_dir),
            dataset=model.dataset,
            threat_model=model.threat_model,
        )
    except Exception as e:  # gdown/requests: ConnectionError, FileURLRetrievalError, ...
        if not missing:
            raise  # the files were there: not a download problem
        message = f"{missing_message(model, model_dir)}\n(download failed: {e})"
        raise ZooModelMissing(message, url=url, dest=missing[0]) from e


__all__ = [
    "ARCH_PREFIX",
    "DEFAULT_MODEL_DIR",
    "NUM_CLASSES",
    "OFFLINE_ENV",
    "ZooModel",
    "ZooModelMissing",
    "build_zoo_architecture",
    "import_robustbench",
    "load_zoo_model",
    "missing_message",
    "offline",
]
