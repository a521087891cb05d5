"""Write ``bundled_duplicates.npz``: the fixed set of generated duplicates on which the bundled
default model is tested (``tests/core/test_bundled_model.py``).

Twelve parents: a 192 x 192 procedural scene (``generate_scene``, kinds in turn,
seeds 31,000,000+, far from the training seeds below 1,000,000 and from the benchmarks' sets)
and one copy of it made by the figure-re-use manipulations of ``napari_siamforensic.evaluation``
(one family per parent, in the order of ``FAMILIES``), both stored as uint8.

    python tests/data/make_bundled_duplicates.py
"""
from pathlib import Path

import numpy as np

from napari_siamforensic.core.synthetic import SCENE_KINDS, generate_scene
from napari_siamforensic.evaluation.reuse import FAMILIES, manipulate

SEED = 31_000_000


def main() -> None:
    parents, copies, steps = [], [], []
    for i, family in enumerate(FAMILIES):
        kind = SCENE_KINDS[i % len(SCENE_KINDS)]
        parent = generate_scene(kind, SEED + i, (192, 192))
        copy, desc = manipulate(parent, family, np.random.default_rng([SEED, i]))
        parents.append(parent)
        copies.append(copy)
        steps.append(f"{kind}: {family} ({'; '.join(desc)})")
    u8 = lambda a: (np.clip(a, 0, 1) * 255).round().astype(np.uint8)   # noqa: E731
    out = Path(__file__).with_name("bundled_duplicates.npz")
    np.savez_compressed(out, **{f"parent{i}": u8(p) for i, p in enumerate(parents)},
                        **{f"copy{i}": u8(c) for i, c in enumerate(copies)}, steps=np.array(steps))
    print(out, *steps, sep="\n")


if __name__ == "__main__":
    main()
