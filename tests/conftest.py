"""Project-wide pytest options.

``--device`` picks where the engine tests put models, training and deformations, so the very
same tests run on a GPU with ``python -m pytest tests/core --device cuda`` (CPU by default, as
in CI). An unavailable device is a usage error, never a silent skip: a GPU run that quietly
tested nothing would be worse than no GPU run.
"""
from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        action="store",
        default="cpu",
        help="torch device for the engine tests: cpu (default), cuda, cuda:N or mps",
    )


def pytest_configure(config):
    name = config.getoption("--device")
    if name == "cpu":
        return
    from napari_siamforensic.core.devices import resolve_device

    try:
        dev = resolve_device(name)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"--device {name}: {exc}") from None
    if dev.type == "cuda":
        import os

        import torch

        # the tolerances of the engine tests are for fp32 arithmetic; cuDNN would otherwise run
        # convolutions in TF32 (10-bit mantissa) on Ampere and later
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        # Same seed, same weights is tested on the GPU too (the training asks cuDNN for
        # deterministic kernels). Any op used that has no deterministic CUDA implementation is
        # named in a warning of the run's summary, so a failing reproducibility test says where
        # to look. cuBLAS needs this workspace setting for reproducible results.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


@pytest.fixture(scope="session")
def device(request) -> str:
    """The torch device name the engine tests run on (``--device``, default ``"cpu"``)."""
    return request.config.getoption("--device")
