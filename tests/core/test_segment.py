"""The scribble Segmenter: accuracy on a generated scene, label values, layouts, regions,
save/load, bad input, and the batch runner."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_siamforensic.core.features import fallback_model
from napari_siamforensic.core.segment import NotFittedError, Segmenter, TorchForest
from napari_siamforensic.core.segment_batch import read_image_array, segment_files

FAST = dict(n_estimators=25, n_jobs=1, max_samples_per_class=2000)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return fallback_model(device="cpu")


def blob_scene(seed: int, size=(112, 128)):
    """Textured round cells (truth 1) on a differently textured background (truth 0).

    Returns (image float32, truth bool)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]]
    truth = np.zeros(size, bool)
    for _ in range(9):
        cy, cx, r = rng.uniform(10, size[0] - 10), rng.uniform(10, size[1] - 10), rng.uniform(6, 11)
        truth |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    bg = ndi.gaussian_filter(rng.normal(size=size), 4) * 0.15 + 0.3
    fg = 0.55 + 0.1 * ndi.gaussian_filter(rng.normal(size=size), 1)
    img = np.where(truth, fg, bg) + 0.05 * rng.normal(size=size)
    return ndi.gaussian_filter(img, 0.7).astype(np.float32), truth


def scribbles(truth, values=(1, 2), seed=0, n=4):
    """A few short strokes per class inside each class's eroded area (about 1% of pixels)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(truth.shape, np.int32)
    for value, mask in zip(values, (ndi.binary_erosion(~truth, iterations=3), ndi.binary_erosion(truth, iterations=2))):
        pts = np.argwhere(mask)
        for p in pts[rng.choice(len(pts), n, replace=False)]:
            y, x = p
            seg = mask[y, max(0, x - 4):x + 5]
            labels[y, max(0, x - 4):x + 5][seg] = value
    return labels


def iou(pred, truth):
    return (pred & truth).sum() / max(1, (pred | truth).sum())


def test_scribbles_segment_a_scene(model):
    img, truth = blob_scene(0)
    labels = scribbles(truth)
    assert 0.002 < (labels > 0).mean() < 0.03
    seg = Segmenter(model, **FAST).fit(img, labels)
    pred = seg.predict(img)
    assert pred.shape == img.shape
    assert iou(pred == 2, truth) > 0.75
    assert (pred[labels > 0] == labels[labels > 0]).mean() > 0.95
    # the same segmenter on a new scene of the same kind
    img2, truth2 = blob_scene(1)
    assert iou(seg.predict(img2) == 2, truth2) > 0.65


def test_unusual_class_values_come_back(model):
    img, truth = blob_scene(2)
    labels = scribbles(truth, values=(7, 3)).astype(np.uint16)
    seg = Segmenter(model, **FAST).fit(img, labels)
    assert seg.classes_.tolist() == [3, 7] and seg.classes_.dtype == np.uint16
    pred = seg.predict(img)
    assert set(np.unique(pred)) == {3, 7} and pred.dtype == np.uint16
    assert iou(pred == 3, truth) > 0.7
    proba = seg.predict_proba(img)
    assert proba.shape == img.shape + (2,)
    np.testing.assert_allclose(proba.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(seg.classes_[proba.argmax(-1)], pred)


def test_region_predicts_only_a_part(model):
    img, truth = blob_scene(3, size=(100, 140))
    seg = Segmenter(model, tile_size=64, **FAST).fit(img, scribbles(truth))
    full = seg.predict(img)
    part = seg.predict(img, region=(slice(30, 90), slice(50, 77)))
    np.testing.assert_array_equal(part, full[30:90, 50:77])
    reports = list(seg.iter_predict(img, region=(slice(0, 10), slice(0, 10))))
    assert len(reports) == 1 and reports[0].labels.shape == (10, 10)
    with pytest.raises(ValueError):
        seg.predict(img, region=(slice(0, 50, 2), slice(None)))
    with pytest.raises(ValueError):
        seg.predict(img, region=(3, slice(None)))


def test_refit_after_a_stroke_reuses_features(model):
    img, truth = blob_scene(4)
    labels = scribbles(truth)
    seg = Segmenter(model, **FAST).fit(img, labels)
    seg.predict(img)
    misses = seg._cache.misses
    labels2 = labels.copy()
    y, x = np.argwhere(ndi.binary_erosion(truth, iterations=2) & (labels == 0))[5]
    labels2[y, x] = 2       # one new painted pixel
    seg.fit(img, labels2)
    seg.predict(img)
    assert seg._cache.misses == misses and seg._cache.hits > 0
    assert seg.n_samples_fit_ == (labels2 > 0).sum()


def test_warming_the_cache_ahead_of_painting(model):
    img, truth = blob_scene(12)                     # 112 x 128: 2 x 2 tiles of 64
    seg = Segmenter(model, tile_size=64, **FAST)
    reports = list(seg.iter_cache_features(img))
    assert reports[0] == (1, 4) and reports[-1] == (4, 4)
    misses = seg._cache.misses
    seg.fit(img, scribbles(truth))
    seg.predict(img)
    assert seg._cache.misses == misses


def test_stacks_fit_on_some_slices_predict_any(model):
    scenes = [blob_scene(10 + z, size=(80, 96)) for z in range(3)]
    stack = np.stack([s[0] for s in scenes])
    truth = np.stack([s[1] for s in scenes])
    labels = np.zeros(stack.shape, np.int32)
    labels[0] = scribbles(truth[0])
    labels[2] = scribbles(truth[2], seed=1)
    seg = Segmenter(model, **FAST).fit(stack, labels)
    pred = seg.predict(stack)
    assert pred.shape == stack.shape
    assert iou(pred[1] == 2, truth[1]) > 0.6        # the unpainted slice
    np.testing.assert_array_equal(seg.predict(stack, region=(1,)), pred[1])
    np.testing.assert_array_equal(seg.predict(stack, region=(slice(1, 3), slice(5, 40))), pred[1:3, 5:40])
    assert seg.predict_proba(stack, region=(2,)).shape == (80, 96, 2)
    # a 4D (T, Z, H, W) stack
    seg4 = Segmenter(model, **FAST).fit(stack[None], labels[None])
    assert seg4.predict(stack[None], region=(0, 1)).shape == (80, 96)


def test_rgb_uses_colour(model):
    """Objects differ from the background by hue only (same luminance): only colour separates."""
    _, truth = blob_scene(5)
    rng = np.random.default_rng(0)
    noise = 0.03 * rng.normal(size=truth.shape)
    rgb = np.zeros(truth.shape + (3,), np.float32)
    rgb[..., 0] = np.where(truth, 0.7, 0.3) + noise
    rgb[..., 2] = (0.5 - 0.299 * rgb[..., 0]) / 0.114 * 0.999 + 0 * noise   # keep luminance flat
    rgb[..., 1] = 0
    rgb = np.clip(rgb, 0, None)
    img8 = (rgb / rgb.max() * 255).astype(np.uint8)
    labels = scribbles(truth)
    seg = Segmenter(model, **FAST).fit(img8, labels)
    assert seg.image_kind_ == "rgb" and seg.n_channels_ == 3
    assert iou(seg.predict(img8) == 2, truth) > 0.75
    rgba = np.concatenate([img8, np.full(truth.shape + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(seg.predict(rgba), seg.predict(img8))
    with pytest.raises(ValueError, match="fitted on rgb"):
        seg.predict(img8[..., 0])


def test_multichannel_with_channel_axis(model):
    img, truth = blob_scene(6)
    other = np.random.default_rng(1).random(img.shape).astype(np.float32)
    stacked = np.stack([other, img])                # (C, H, W)
    seg = Segmenter(model, channel_axis=0, blocks=(1,), **FAST).fit(stacked, scribbles(truth))
    assert seg.image_kind_ == "multichannel" and seg.n_features_in_ == 2 * (32 + 16)
    assert iou(seg.predict(stacked) == 2, truth) > 0.7


def test_save_load_round_trip(model, tmp_path):
    img, truth = blob_scene(7)
    seg = Segmenter(model, rescale=0.75, **FAST).fit(img, scribbles(truth, values=(5, 9)))
    path = seg.save(tmp_path / "seg.zip")
    again = Segmenter.load(path, model=model)
    np.testing.assert_array_equal(again.predict(img), seg.predict(img))
    np.testing.assert_allclose(again.predict_proba(img), seg.predict_proba(img))
    assert again.model_identity_ == seg.model_identity_ and again.rescale == 0.75
    assert again.classes_.tolist() == [5, 9]
    # the source was a given model: loading without one names what is needed
    with pytest.raises(ValueError, match="pass that model"):
        Segmenter.load(path)


def test_load_refuses_a_different_model(model, tmp_path):
    img, truth = blob_scene(8)
    path = Segmenter(model, **FAST).fit(img, scribbles(truth)).save(tmp_path / "seg.zip")
    other = fallback_model("cpu")
    with torch.no_grad():
        other.net.branch.blocks[1].conv1.weight.mul_(1.01)
    with pytest.raises(ValueError, match="different network"):
        Segmenter.load(path, model=other)


def test_default_choice_is_recorded_and_reloads(tmp_path):
    img, truth = blob_scene(9, size=(64, 64))
    seg = Segmenter(device="cpu", **FAST).fit(img, scribbles(truth, n=3))
    assert seg.model_source_ in ("default", "random-init(seed=0)")
    again = Segmenter.load(seg.save(tmp_path / "s.zip"), device="cpu")
    np.testing.assert_array_equal(again.predict(img), seg.predict(img))


@pytest.mark.parametrize("content", [b"not a segmenter", b""], ids=["text", "empty"])
def test_foreign_files_are_refused(tmp_path, content):
    p = tmp_path / "x.zip"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="not a napari-siamforensic segmenter"):
        Segmenter.load(p)


def test_foreign_zips_are_refused(tmp_path, model):
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    p = tmp_path / "other.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a napari-siamforensic segmenter"):
        Segmenter.load(p)
    # ours in form, but the forest entry holds something that is not a forest
    img, truth = blob_scene(0, size=(64, 64))
    good = Segmenter(model, **FAST).fit(img, scribbles(truth, n=3)).save(tmp_path / "good.zip")
    with zipfile.ZipFile(good) as z:
        meta = z.read("segmenter.json")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("segmenter.json", meta)
        z.writestr("forest.skops", sio.dumps(FunctionTransformer(func=np.exp)))
    with pytest.raises(ValueError, match="unexpected types|not a forest of ours"):
        Segmenter.load(bad, model=model)


@pytest.mark.parametrize("labels, message", [
    (np.zeros((10, 10), np.int32), "shape"),
    ("one", "two classes"),
    ("negative", "negative"),
    ("float", "integer"),
    ("bool", "boolean"),
])
def test_bad_labels_are_refused(model, labels, message):
    img, truth = blob_scene(0, size=(48, 48))
    good = scribbles(truth, n=2)
    if isinstance(labels, str):
        labels = {"one": np.where(good == 2, 2, 0), "negative": np.where(good == 2, -1, good),
                  "float": good.astype(np.float32), "bool": good > 0}[labels]
    with pytest.raises(ValueError, match=message):
        Segmenter(model, **FAST).fit(img, labels)


def test_bad_images_and_unfitted_use(model):
    seg = Segmenter(model, **FAST)
    with pytest.raises(NotFittedError, match="call fit"):
        seg.predict(np.zeros((32, 32)))
    with pytest.raises(ValueError):
        seg.fit(np.zeros((8, 8)), np.zeros((8, 8), int))
    bad = np.zeros((32, 32), np.float32)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seg.fit(bad, np.zeros((32, 32), int))
    with pytest.raises(ValueError, match="rescale"):
        Segmenter(model, rescale=-1, **FAST).fit(*blob_scene(0, (48, 48))[:1], scribbles(blob_scene(0, (48, 48))[1], n=2))


def test_sklearn_estimator_contract(model):
    from sklearn.base import clone

    seg = Segmenter(model, n_estimators=7, rescale=0.5)
    assert seg.get_params()["n_estimators"] == 7
    copy = clone(seg)
    assert copy.get_params()["rescale"] == 0.5 and not hasattr(copy, "forest_")
    assert seg.set_params(n_estimators=9) is seg and seg.n_estimators == 9
    with pytest.raises(ValueError):
        seg.set_params(n_trees=3)


def test_extra_trees_option(model, tmp_path):
    img, truth = blob_scene(11)
    seg = Segmenter(model, forest="extra", **FAST).fit(img, scribbles(truth))
    assert type(seg.forest_).__name__ == "ExtraTreesClassifier"
    assert iou(seg.predict(img) == 2, truth) > 0.7
    again = Segmenter.load(seg.save(tmp_path / "et.zip"), model=model)
    np.testing.assert_array_equal(again.predict(img), seg.predict(img))
    with pytest.raises(ValueError, match="forest"):
        Segmenter(model, forest="boosted").fit(img, scribbles(truth))


def test_torch_forest_equals_sklearn():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 12)).astype(np.float32)
    y = (X[:, 0] + X[:, 3] ** 2 > 0.7).astype(int) + (X[:, 5] > 1)
    forest = RandomForestClassifier(15, random_state=0).fit(X, y)
    Xt = rng.normal(size=(2000, 12)).astype(np.float32)
    got = TorchForest(forest, "cpu").predict_proba(torch.from_numpy(Xt)).numpy()
    np.testing.assert_allclose(got, forest.predict_proba(Xt), atol=1e-6)


def test_segment_files(model, tmp_path):
    import tifffile
    from PIL import Image

    img, truth = blob_scene(0)
    seg = Segmenter(model, **FAST).fit(img, scribbles(truth, values=(1, 300)))
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        tifffile.imwrite(src / f"a{i}.tif", blob_scene(20 + i)[0])
    Image.fromarray((img * 255).clip(0, 255).astype(np.uint8)).save(src / "b.png")
    (src / "broken.png").write_bytes(b"\x89PNG nonsense")
    reports = list(segment_files(seg, [src], out_dir=tmp_path / "out"))
    assert [r.done for r in reports] == [1, 2, 3, 4] and reports[-1].total == 4
    failed = [r for r in reports if r.error]
    assert len(failed) == 1 and failed[0].source.name == "broken.png"
    out = tifffile.imread(tmp_path / "out" / "b_labels.tif")
    assert out.dtype == np.uint16 and set(np.unique(out)) <= {1, 300}
    assert iou(out == 300, truth) > 0.7
    again = list(segment_files(seg, [src / "a0.tif"], out_dir=tmp_path / "out"))
    assert again[0].output is None and "exists" in again[0].error
    assert read_image_array(src / "b.png").shape == img.shape
