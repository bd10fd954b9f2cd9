"""Studies → runs → jobs: which runs, transfer pairs and criticality jobs a study needs.

A *run* is (fidelity, dataset, backbone, variant, seed). A study is one grid (or the union of
``grids``) of datasets × backbones × variants × seeds at one fidelity; identical runs requested
by several studies are one run, hence one job.

Chained runs ("X + CLAT", CLAT spec §1.5): a variant with ``init: <other variant>`` starts from
the ``model_best.pt`` of the run (same fidelity, dataset, backbone, seed) of that other variant.
The upstream run is an ordinary run (its own job, its own path), so every study that chains
onto the same X and seed shares it. Backbones with ``source: scratch`` have no file: runs start
from random initialisation (CLAT's CIFAR adversarial training).

As-is runs (``method: as_is``, :data:`AS_IS`): a RobustBench zoo model evaluated without any
training (CLAT Table 1's "Peng et al." and "Bai et al." rows). Their "training" job only copies
the backbone file, which already describes its model (head included), to the run's
``model_best.pt``, so evaluation, chains ("Peng et al. + CLAT") and the tables treat them like
any run.

Every function takes the validated config (:func:`robustft.plan.validate.validate`).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields
from typing import Any

from robustft.plan import catalog, paths
from robustft.plan.errors import ConfigError


@dataclass(frozen=True, order=True)
class Run:
    fidelity: str
    dataset: str
    backbone: str
    variant: str
    seed: int

    @property
    def wildcards(self) -> dict[str, Any]:
        return {f.name: v for f, v in zip(fields(self), astuple(self))}

    @property
    def name(self) -> str:
        return paths.fill(paths.RUN, **self.wildcards)

    @property
    def directory(self) -> str:
        return paths.fill(paths.RUN_DIR, **self.wildcards)

    @property
    def checkpoint_directory(self) -> str:
        return paths.fill(paths.RUN_CHECKPOINTS, **self.wildcards)

    def file(self, kind: str) -> str:
        """``model``, ``train_log``, ``record`` (run.yaml) or ``eval`` of this run."""
        return f"{self.directory}/{paths.RUN_FILES[kind]}"


@dataclass(frozen=True, order=True)
class TransferPair:
    """Black-box transfer between the runs of two backbones (both directions, one job)."""

    fidelity: str
    dataset: str
    variant: str
    seed: int
    first: str
    second: str

    def run(self, backbone: str) -> Run:
        return Run(self.fidelity, self.dataset, backbone, self.variant, self.seed)

    @property
    def path(self) -> str:
        return paths.fill(paths.TRANSFER, **{f.name: getattr(self, f.name) for f in fields(self)})


#: the pseudo-method of an as-is run: no training, the backbone file is the run's model
AS_IS = "as_is"


# --- variants ----------------------------------------------------------------------------------
def variant_pool(config: dict[str, Any]) -> set[str]:
    """Variants a study may name: the configured ones and every bare method name."""
    return set(config["variants"]) | set(catalog.METHODS)


def variant_spec(config: dict[str, Any], variant: str) -> dict[str, Any]:
    if variant in config["variants"]:
        return config["variants"][variant]
    if variant in catalog.METHODS:
        return {"method": variant}
    raise ConfigError(f"unknown variant {variant!r}")


def is_as_is(config: dict[str, Any], variant: str) -> bool:
    return variant_spec(config, variant)["method"] == AS_IS


def as_is_variants(config: dict[str, Any]) -> list[str]:
    return [v for v, spec in config["variants"].items() if spec["method"] == AS_IS]


def is_clat(config: dict[str, Any], variant: str) -> bool:
    method = variant_spec(config, variant)["method"]
    return method != AS_IS and catalog.method(method).clat


def method_label(config: dict[str, Any], variant: str) -> str:
    """The printed method of a variant: ``paper_method``, else the display names along its
    chain joined by "+" (``pgd_at-pre50`` → ``pgd_at+clat``: "PGD-AT+CLAT", CLAT's spelling)."""
    spec = variant_spec(config, variant)
    if spec.get("paper_method"):
        return spec["paper_method"]
    own = "as is" if spec["method"] == AS_IS else catalog.display_name(spec["method"])
    return f"{method_label(config, spec['init'])}+{own}" if "init" in spec else own


# --- studies → runs ----------------------------------------------------------------------------
def study_grids(config: dict[str, Any], study: str) -> list[dict[str, list[str]]]:
    """The study's grids: ``grids`` (missing keys from the study) or the study itself."""
    spec = config["studies"][study]
    base = {k: spec[k] for k in ("datasets", "backbones", "variants") if k in spec}
    return [{**base, **grid} for grid in spec.get("grids", [{}])]


def _union(config: dict[str, Any], study: str, key: str) -> list[str]:
    return list(dict.fromkeys(x for g in study_grids(config, study) for x in g.get(key, [])))


def study_variants(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "variants")


def study_backbones(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "backbones")


def study_datasets(config: dict[str, Any], study: str) -> list[str]:
    return _union(config, study, "datasets")


def study_runs(config: dict[str, Any], study: str) -> list[Run]:
    """The runs a study evaluates and aggregates (not the upstream runs they chain onto)."""
    spec = config["studies"][study]
    runs = [
        Run(spec["fidelity"], d, b, v, s)
        for g in study_grids(config, study)
        for d in g["datasets"]
        for b in g["backbones"]
        for v in g["variants"]
        for s in spec["seeds"]
    ]
    return list(dict.fromkeys(runs))


def upstream_run(config: dict[str, Any], run: Run) -> Run | None:
    """The run a chained run starts from (``variants.<v>.init``), else None."""
    init = variant_spec(config, run.variant).get("init")
    return None if init is None else Run(run.fidelity, run.dataset, run.backbone, init, run.seed)


def run_chain(config: dict[str, Any], run: Run) -> list[Run]:
    """The run and every run it (transitively) starts from, upstream first."""
    chain = [run]
    while (up := upstream_run(config, chain[0])) is not None:
        chain.insert(0, up)
    return chain


def all_runs(config: dict[str, Any], studies: list[str]) -> list[Run]:
    """Runs of several studies; identical runs requested twice are one run."""
    return sorted({run for study in studies for run in study_runs(config, study)})


def all_training_runs(config: dict[str, Any], studies: list[str]) -> list[Run]:
    """Every training job of the studies: their runs plus the upstream runs of chained ones
    (not as-is runs: their model is the backbone file, copied by the ``as_is`` rule)."""
    chains = {r for run in all_runs(config, studies) for r in run_chain(config, run)}
    return sorted(r for r in chains if not is_as_is(config, r.variant))


def backbone_input(config: dict[str, Any], run: Run) -> str | None:
    """The file a run's initial weights come from: the upstream run's model (chained runs),
    the backbone file, or None (scratch backbones)."""
    up = upstream_run(config, run)
    if up is not None:
        return up.file("model")
    if config["backbones"][run.backbone]["source"] == "scratch":
        return None
    return paths.backbone_file(run.backbone)


def autoattack_runs(config: dict[str, Any], studies: list[str]) -> set[Run]:
    """Runs that AutoAttack evaluates: those of a requested study that asks for it."""
    return {
        run
        for s in studies
        if config["studies"][s].get("autoattack", True)
        for run in study_runs(config, s)
    }


def needs_autoattack(config: dict[str, Any], run: Run, studies: list[str]) -> bool:
    """AutoAttack runs for a run if any requested study containing it asks for it."""
    return run in autoattack_runs(config, studies)


# --- CLAT Table 2 (transfer) and Table 7 (criticality) jobs ------------------------------------
def transfer_pairs(config: dict[str, Any], study: str) -> list[TransferPair]:
    """Every unordered pair of the study's backbones that share (dataset, variant, seed), in the
    order of ``backbones`` (so a pair is one job whichever study asks for it)."""
    if not config["studies"][study].get("transfer"):
        return []
    order = list(config["backbones"])
    by_group: dict[tuple, list[str]] = {}
    for r in study_runs(config, study):
        by_group.setdefault((r.fidelity, r.dataset, r.variant, r.seed), []).append(r.backbone)
    pairs = []
    for (fid, ds, var, seed), backbones in by_group.items():
        backbones = sorted(set(backbones), key=order.index)
        pairs += [
            TransferPair(fid, ds, var, seed, a, b)
            for i, a in enumerate(backbones)
            for b in backbones[i + 1 :]
        ]
    return pairs


def criticality_runs(config: dict[str, Any], study: str) -> list[Run]:
    """CLAT Table 7: the study's CLAT runs whose starting model is measured."""
    if not config["studies"][study].get("criticality"):
        return []
    return [r for r in study_runs(config, study) if is_clat(config, r.variant)]


def criticality_path(run: Run) -> str:
    return paths.fill(paths.CRITICALITY, **run.wildcards)


def measured_run(config: dict[str, Any], run: Run) -> Run:
    """The run whose model a CLAT run starts from (its upstream run's, else its own)."""
    return upstream_run(config, run) or run


def criticality_inputs(config: dict[str, Any], run: Run) -> dict[str, str]:
    measured = measured_run(config, run)
    return {"model": measured.file("model"), "log": measured.file("train_log")}
