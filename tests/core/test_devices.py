"""Process settings: retaining freed memory changes the CPU cost of embedding, never its result."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_retain_freed_memory_keeps_embeddings_identical():
    # in a child process: the setting is process-wide and would outlive this test
    code = textwrap.dedent("""
        import platform, numpy as np, torch
        torch.set_num_threads(1)
        from napari_siamforensic.core.devices import retain_freed_memory
        from napari_siamforensic.core.features import fallback_model
        m = fallback_model(device="cpu")
        imgs = [np.random.default_rng(i).random((96, 80), dtype=np.float32) for i in range(40)]
        before = m.embed(imgs)
        applied = retain_freed_memory()
        assert retain_freed_memory() == applied          # idempotent
        after = m.embed(imgs)
        assert np.array_equal(before, after)
        glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
        assert applied == glibc, (applied, platform.libc_ver())
        print("ok", applied)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().startswith("ok")


def test_deterministic_kernels_on_cuda_only_and_restored():
    """Training asks cuDNN for deterministic algorithms per step (an H200 run of the same seed
    twice ended apart without it); the flag is set inside the block only, and only for CUDA."""
    import torch

    from napari_siamforensic.core.devices import deterministic_kernels

    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, cudnn.enabled, cudnn.allow_tf32)
    with deterministic_kernels(torch.device("cpu")):
        assert (cudnn.deterministic, cudnn.benchmark) == before[:2]
    with deterministic_kernels(torch.device("cuda")):     # a device object: no CUDA needed here
        assert cudnn.deterministic is True and cudnn.benchmark is False
        assert (cudnn.enabled, cudnn.allow_tf32) == before[2:]
    assert (cudnn.deterministic, cudnn.benchmark, cudnn.enabled, cudnn.allow_tf32) == before
    try:
        with deterministic_kernels(torch.device("cuda")):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert (cudnn.deterministic, cudnn.benchmark, cudnn.enabled, cudnn.allow_tf32) == before
