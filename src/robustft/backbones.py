"""Where pretrained backbones come from.

Salman et al. (2020), "Do adversarially robust ImageNet models transfer better?": L∞ robust
ResNet-18/50 checkpoints in the robustness-library format, mirrored by MadryLab on the
Hugging Face hub (the original Azure links of microsoft/robust-models-transfer expired).
No SHA-256 is published for them: the first download records its digest next to the file
(``<file>.sha256``) and every later use is verified against it; set ``sha256:`` on the
backbone in config.yaml to pin a digest you trust before the first download.
"""

from __future__ import annotations

from pathlib import Path

from robustft.data.download import fetch

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
