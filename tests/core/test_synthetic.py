"""Procedural scenes: deterministic per seed, different across seeds, valid images, labels."""
import numpy as np
import pytest

from napari_siamforensic.core.synthetic import (
    EVALUATION_SEED_START,
    LABELLED_KINDS,
    SCENE_KINDS,
    TRAINING_SEED_LIMIT,
    generate_scene,
    generate_scenes,
    labelled_scene,
)

SIZE = (160, 192)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_every_kind_is_a_valid_deterministic_image(kind):
    a = generate_scene(kind, 7, SIZE)
    b = generate_scene(kind, 7, SIZE)
    assert a.shape == SIZE and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert a.std() > 0.02, "a scene must not be flat"
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_seeds_give_visibly_different_images(kind):
    imgs = [generate_scene(kind, s, SIZE) for s in (1, 2, 3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(imgs[i] - imgs[j]).mean() > 0.03


def test_kinds_do_not_share_a_random_stream():
    assert not np.array_equal(generate_scene("nuclei", 4, SIZE), generate_scene("bacteria", 4, SIZE))


def test_no_global_seeding():
    state = np.random.get_state()
    generate_scene("cells", 3, SIZE)
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2] == after[2]


@pytest.mark.parametrize("kind", LABELLED_KINDS)
def test_labelled_scene_matches_image_and_has_objects(kind):
    img, labels = labelled_scene(kind, 11, SIZE)
    np.testing.assert_array_equal(img, generate_scene(kind, 11, SIZE))
    assert labels.shape == SIZE and labels.dtype == np.int32
    ids = np.unique(labels)
    assert ids[0] == 0 and len(ids) > 2
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive 0..n
    # objects differ from the background in intensity
    assert abs(float(img[labels > 0].mean()) - float(img[labels == 0].mean())) > 0.02


def test_labelled_scene_refuses_unlabelled_kinds():
    with pytest.raises(ValueError, match="labelled scenes"):
        labelled_scene("blot", 0, SIZE)


def test_generate_scenes_cycles_kinds_and_seeds():
    scenes = generate_scenes(len(SCENE_KINDS) + 2, seed=100, size=64)
    assert [k for k, _ in scenes] == list(SCENE_KINDS) + list(SCENE_KINDS[:2])
    np.testing.assert_array_equal(scenes[1][1], generate_scene(SCENE_KINDS[1], 101, 64))
    assert all(img.shape == (64, 64) for _, img in scenes)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"kind": "stars", "seed": 0}, "unknown scene kind"), ({"kind": "nuclei", "seed": -1}, "non-negative"),
     ({"kind": "nuclei", "seed": 0, "size": (8, 64)}, "at least 16")],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_scene(**kwargs)


def test_seed_ranges_are_disjoint():
    assert TRAINING_SEED_LIMIT <= EVALUATION_SEED_START
