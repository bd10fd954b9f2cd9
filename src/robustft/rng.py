"""The one place where training and evaluation draw random numbers from a ``torch.Generator``.

Why one place: a run is driven by a single seeded generator whose state is checkpointed, so a
resumed run continues the exact stream of an uninterrupted one. That generator lives on the
CPU (its state is a plain tensor, the same on every machine), while the tensors it perturbs may
live on a GPU. PyTorch refuses ``torch.rand(..., generator=cpu_generator, device="cuda")``, so
each draw happens on the *generator's* device and the result is then moved to where it is used.
On the CPU this is exactly the draw the code made before (bit-identical streams); on CUDA it
makes the same numbers as on the CPU, so a GPU run sees the same random starts and batches.

A test (``tests/test_rng.py``) fails if any other module of the library calls a torch random
function itself.
"""

from __future__ import annotations

import torch

__all__ = ["coin", "new_generator", "normal", "randint", "randperm", "uniform", "uniform_scalar"]


def new_generator(seed: int) -> torch.Generator:
    """The run's generator: on the CPU, so its checkpointed state is device-independent."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _source(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    # Without a generator, the default generator of the tensor's own device is used.
    return generator.device if generator is not None else like.device


def uniform(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """U[0, 1) of ``like``'s shape, dtype and device."""
    draw = torch.rand(
        like.shape, generator=generator, dtype=like.dtype, device=_source(generator, like)
    )
    return draw.to(like.device)


def normal(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) of ``like``'s shape, dtype and device."""
    draw = torch.randn(
        like.shape, generator=generator, dtype=like.dtype, device=_source(generator, like)
    )
    return draw.to(like.device)


def randperm(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A permutation of ``range(n)`` on the CPU (orders and subsets are host-side decisions)."""
    return torch.randperm(n, generator=generator, device=_cpu(generator))


def randint(
    low: int, high: int, shape: tuple[int, ...], generator: torch.Generator | None = None
) -> torch.Tensor:
    """Integers in ``[low, high)`` on the CPU (crop offsets and other host-side choices)."""
    return torch.randint(low, high, shape, generator=generator, device=_cpu(generator))


def coin(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` fair coin flips on the CPU (horizontal flips), as ``rand(n) < 0.5``."""
    return torch.rand(n, generator=generator, device=_cpu(generator)) < 0.5


def uniform_scalar(low: float, high: float, generator: torch.Generator | None = None) -> float:
    """One float in ``[low, high)`` (RandomResizedCrop's area and ratio draws)."""
    return float(torch.empty(1, device=_cpu(generator)).uniform_(low, high, generator=generator))


def _cpu(generator: torch.Generator | None) -> torch.device:
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"host-side draws need a CPU generator, got one on {generator.device}")
    return torch.device("cpu")
