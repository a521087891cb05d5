"""Baselines behave as baselines must: identical images match, ORB finds rotated copies."""
import numpy as np
import pytest
from PIL import Image

from napari_siamforensic.core.synthetic import EVALUATION_SEED_START, generate_scene
from napari_siamforensic.evaluation.baselines import orb_ransac_distance, phash_dihedral_distance, phash_distance


@pytest.fixture(scope="module")
def textured():
    return generate_scene("tissue", EVALUATION_SEED_START + 1, (200, 200))


def test_phash_of_image_to_itself_is_zero(textured):
    d, seconds = phash_distance([textured], [textured.copy()])
    assert d.shape == (1,) and d[0] == 0 and seconds >= 0


def test_phash_dihedral_ignores_flips_turns_and_inversion(textured):
    poses = [textured[:, ::-1], np.rot90(textured), 1.0 - textured, np.rot90(textured, 3)[::-1]]
    plain, _ = phash_distance([textured] * 4, poses)
    dihedral, _ = phash_dihedral_distance([textured] * 4, poses)
    np.testing.assert_array_equal(dihedral, 0)
    assert plain.max() > 0  # the plain hash does see them


def test_orb_ransac_prefers_rotated_copy_over_unrelated(textured):
    rotated = np.asarray(Image.fromarray(textured).rotate(12, resample=Image.BICUBIC), dtype=np.float32)[30:170, 30:170]
    unrelated = generate_scene("tissue", EVALUATION_SEED_START + 2, (200, 200))
    d, seconds = orb_ransac_distance([textured, textured], [rotated, unrelated])
    assert d[0] < d[1]
    assert d[0] < 0.2  # at least a handful of inliers
    assert seconds > 0


def test_orb_ransac_reports_no_match_for_featureless_images():
    flat = np.full((80, 80), 0.5, np.float32)
    d, _ = orb_ransac_distance([flat], [flat])
    assert d[0] == 1.0


def test_baselines_reject_unequal_lists(textured):
    with pytest.raises(ValueError, match="equally long"):
        phash_distance([textured], [])
