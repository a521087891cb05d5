"""The scoring API of DESIGN.md section 4: embed, distance, same_probability, pairwise."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_siamforensic as sf
from napari_siamforensic.core.model import SiameseNet
from napari_siamforensic.core.scoring import POSES, ForensicModel, default_weights_path, pose_stack

from .conftest import scene


@pytest.fixture(scope="module")
def model(trained_model):
    return trained_model


@pytest.fixture(scope="module")
def imgs():
    """Five different images of different sizes and dtypes."""
    return [scene(0, 128), scene(1, (150, 120)), scene(2, 200, np.uint8), scene(3, 64, np.float32),
            scene(4, (90, 300), np.float64)]


def weighted_l1(model, ea, eb):
    return (np.abs(ea - eb) * model.alpha[None, :]).sum(1)


# --------------------------------------------------------------------------- embed

def test_embed_shapes_and_dtype(model, imgs):
    e = model.embed(imgs)
    assert e.shape == (5, 128) and e.dtype == np.float32 and np.isfinite(e).all()
    assert model.embed(imgs[0]).shape == (1, 128)                       # one 2D image
    assert model.embed(np.stack([scene(i, 64) for i in range(3)])).shape == (3, 128)   # (N, H, W) stack
    assert model.embed(tuple(imgs[:2])).shape == (2, 128)


def test_embed_is_deterministic_and_row_order_is_kept(model, imgs):
    e = model.embed(imgs)
    np.testing.assert_array_equal(e, model.embed(imgs))
    # each row is that image's embedding, whatever else is in the call (images are grouped by
    # shape internally, so this catches a mixed-up order)
    alone = np.concatenate([model.embed([im]) for im in imgs])
    np.testing.assert_allclose(e, alone, rtol=1e-4, atol=1e-5)
    shuffled = model.embed([imgs[i] for i in (3, 0, 4, 1, 2)])
    np.testing.assert_allclose(shuffled, e[[3, 0, 4, 1, 2]], rtol=1e-4, atol=1e-5)
    assert np.abs(e[0] - e[1]).sum() > 1e-3


def test_embed_batches_give_the_same_rows(model, imgs):
    small = ForensicModel(model.net, str(model.device), batch_size=2)
    np.testing.assert_allclose(small.embed(imgs), model.embed(imgs), rtol=1e-4, atol=1e-5)


def test_iter_embed_streams_the_same_embeddings(model, imgs):
    parts = list(model.iter_embed(imgs, batch_size=2))
    assert [(p.start, p.done, p.total) for p in parts] == [(0, 2, 5), (2, 4, 5), (4, 5, 5)]
    np.testing.assert_allclose(np.concatenate([p.embeddings for p in parts]), model.embed(imgs), rtol=1e-4, atol=1e-5)
    streamed = list(model.iter_embed(iter(imgs), batch_size=3))        # any iterable, length unknown
    assert [p.done for p in streamed] == [3, 5] and streamed[0].total == -1


@pytest.mark.parametrize("kind", ["rgb", "rgba", "hw1", "uint16", "float64", "int16", "rescaled"])
def test_input_kinds_give_the_gray_images_embedding(model, kind):
    gray = scene(5, 100, np.uint8)
    variants = {
        "rgb": np.dstack([gray] * 3),
        "rgba": np.dstack([gray] * 3 + [np.random.default_rng(0).integers(0, 256, gray.shape, dtype=np.uint8)]),
        "hw1": gray[..., None],
        "uint16": gray.astype(np.uint16) * 257,
        "float64": gray / 255.0,
        "int16": gray.astype(np.int16) - 128,
        "rescaled": gray.astype(np.float32) * 1e-3 + 5,
    }
    np.testing.assert_allclose(model.embed(variants[kind]), model.embed(gray), rtol=1e-3, atol=1e-4)


def test_colour_is_converted_to_luminance(model):
    gray = scene(6, 100, np.float32)
    rgb = np.zeros(gray.shape + (3,), np.float32)
    rgb[..., 1] = gray                      # green carries the picture
    rgb[..., 0] = np.random.default_rng(1).random(gray.shape) * 0.01
    assert np.abs(model.embed(rgb) - model.embed(gray)).max() < 0.05 * np.abs(model.embed(gray)).max()


def test_mixed_sizes_and_kinds_in_one_call(model):
    batch = [scene(0, 16), scene(1, (17, 400)), np.dstack([scene(2, 50, np.uint8)] * 4),
             scene(3, 300, np.float64), scene(4, (129, 127), np.uint16)]
    e = model.embed(batch)
    assert e.shape == (5, 128) and np.isfinite(e).all()
    d = model.distance(batch, batch[::-1])
    assert d.shape == (5,) and np.isfinite(d).all()


# --------------------------------------------------------------------------- distance

def test_distance_to_itself_is_zero(model, imgs):
    d = model.distance(imgs, imgs, poses="none")
    assert d.shape == (5,) and d.dtype == np.float32
    np.testing.assert_array_equal(d, 0)


def test_distance_is_the_weighted_l1_of_embeddings(model, imgs):
    others = imgs[1:] + imgs[:1]
    d = model.distance(imgs, others, poses="none")
    np.testing.assert_allclose(d, weighted_l1(model, model.embed(imgs), model.embed(others)), rtol=1e-4, atol=1e-6)
    assert (d > 0).all()
    np.testing.assert_allclose(model.distance(others, imgs, poses="none"), d, rtol=1e-5)    # symmetric
    wl1 = model.weighted_embed(imgs)
    np.testing.assert_allclose(np.abs(wl1 - model.weighted_embed(others)).sum(1), d, rtol=1e-4, atol=1e-6)


def test_same_probability_is_sigmoid_of_one_minus_f(model, imgs):
    others = imgs[2:] + imgs[:2]
    d = model.distance(imgs, others)
    p = model.same_probability(imgs, others)
    assert p.shape == (5,) and ((p > 0) & (p < 1)).all()
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-(1 - d.astype(np.float64)))), rtol=1e-6)
    np.testing.assert_allclose(model.same_probability(imgs, imgs, poses="none"), 1 / (1 + np.exp(-1)), rtol=1e-6)


def test_pairwise_is_symmetric_with_zero_diagonal(model, imgs):
    m = model.pairwise(imgs, poses="none")
    assert m.shape == (5, 5) and m.dtype == np.float32
    np.testing.assert_array_equal(m, m.T)
    np.testing.assert_array_equal(np.diag(m), 0)
    off = ~np.eye(5, dtype=bool)
    assert (m[off] > 0).all()
    e = model.embed(imgs)
    for i in range(5):
        np.testing.assert_allclose(m[i], weighted_l1(model, e[i][None], e), rtol=1e-4, atol=1e-6)
    assert model.pairwise(imgs[0]).shape == (1, 1)


def test_pairwise_with_poses_is_symmetric_and_below_plain(model, imgs):
    plain = model.pairwise(imgs, poses="none")
    posed = model.pairwise(imgs, poses="dihedral")
    np.testing.assert_array_equal(posed, posed.T)
    assert (posed <= plain + 1e-5).all()


# --------------------------------------------------------------------------- poses

def test_pose_stack_holds_the_eight_dihedral_poses_and_inversions():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert pose_stack(x, "none").shape == (1, 2, 1, 8, 8)
    d8 = pose_stack(x, "dihedral")
    assert d8.shape == (8, 2, 1, 8, 8)
    assert torch.equal(d8[0], x)
    keys = {tuple(t.flatten().tolist()) for t in d8[:, 0]}
    assert len(keys) == 8                          # all eight distinct
    assert any(torch.equal(t, torch.flip(x, dims=(-2,))) for t in d8)
    assert any(torch.equal(t, torch.rot90(x, 1, dims=(-2, -1))) for t in d8)
    d16 = pose_stack(x, "dihedral+invert")
    assert d16.shape == (16, 2, 1, 8, 8)
    torch.testing.assert_close(d16[8:], 1 - d8)


@pytest.mark.parametrize("move", ["rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose"])
def test_dihedral_poses_find_a_flipped_or_rotated_copy(model, move):
    a = scene(8, 128)                                  # square and at the input size: no resampling
    b = {"rot90": np.rot90(a, 1), "rot180": np.rot90(a, 2), "rot270": np.rot90(a, 3), "flip_lr": a[:, ::-1],
         "flip_ud": a[::-1], "transpose": a.T}[move].copy()
    other = scene(9, 128)
    d_plain = model.distance([a, a], [b, other], poses="none")
    d_posed = model.distance([a, a], [b, other], poses="dihedral")
    assert d_plain[0] > 1e-3                           # the net itself sees the move ...
    assert d_posed[0] < 1e-4 + 1e-3 * d_plain[0]       # ... the poses undo it exactly
    assert d_posed[1] > 10 * d_posed[0] and d_posed[1] > 1e-3


def test_dihedral_poses_on_a_larger_square_image(model):
    a = scene(10, 256)
    b = np.rot90(a[:, ::-1]).copy()
    d = model.distance([a, a], [b, scene(11, 256)], poses="dihedral")
    assert d[0] < 0.01 * d[1]


def test_inverted_copy_needs_the_invert_poses(model):
    a = scene(12, 128, np.uint8)
    inv = (255 - a)[::-1].copy()
    d_dihedral = model.distance(a, inv, poses="dihedral")[0]
    d_invert = model.distance(a, inv, poses="dihedral+invert")[0]
    assert d_invert < 1e-4 + 1e-3 * d_dihedral
    assert d_dihedral > 1e-3


def test_default_poses_come_from_the_model(model, imgs):
    posed = ForensicModel(model.net, str(model.device), poses="dihedral")
    np.testing.assert_allclose(posed.distance(imgs, imgs[::-1]),
                               model.distance(imgs, imgs[::-1], poses="dihedral"), rtol=1e-5, atol=1e-6)
    assert model.poses == "none"
    with pytest.raises(ValueError, match="poses"):
        model.distance(imgs, imgs, poses="mirror")
    assert set(POSES) == {"none", "dihedral", "dihedral+invert"}


# --------------------------------------------------------------------------- the model object

def test_alpha_and_feature_maps(model, device):
    assert model.alpha.shape == (128,) and (model.alpha > 0).all()
    x = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(0))
    maps = model.feature_maps(x, blocks=(1, 2, 3))
    assert [tuple(m.shape) for m in maps] == [(1, 32, 32, 48), (1, 64, 16, 24), (1, 128, 8, 12)]
    assert all(m.dtype == torch.float32 and m.device.type == torch.device(device).type for m in maps)


def test_bf16_inference_stays_close_to_fp32(model, imgs):
    bf16 = ForensicModel(model.net, str(model.device), precision="bf16")
    d32 = model.distance(imgs, imgs[::-1])
    d16 = bf16.distance(imgs, imgs[::-1])
    assert np.isfinite(d16).all()
    np.testing.assert_allclose(d16, d32, rtol=0.05, atol=0.02 * float(d32.max()))


def test_identity_changes_with_the_weights(model, tmp_path):
    same = sf.load_model(model.save(tmp_path / "m.safetensors"), device="cpu")
    assert same.identity() == model.identity() and len(model.identity()) == 16
    net = SiameseNet()
    net.reset_parameters(torch.Generator().manual_seed(123))
    assert ForensicModel(net, "cpu").identity() != model.identity()


def test_constructor_checks(model):
    with pytest.raises(TypeError, match="SiameseNet"):
        ForensicModel(model, "cpu")
    with pytest.raises(ValueError, match="batch_size"):
        ForensicModel(model.net, str(model.device), batch_size=0)
    with pytest.raises(ValueError, match="poses"):
        ForensicModel(model.net, str(model.device), poses="all")
    with pytest.raises(ValueError, match="precision"):
        ForensicModel(model.net, str(model.device), precision="fp8")
    assert "ForensicModel(" in repr(model)


def test_load_model_without_a_path(device):
    """The bundled default model, or a clear error while the package ships none."""
    if default_weights_path().is_file():
        m = sf.load_model(device=device)
        e = m.embed(scene(0, 128))
        assert e.shape == (1, m.config.embedding_dim) and np.isfinite(e).all()
    else:
        with pytest.raises(ValueError, match="no bundled default model"):
            sf.load_model(device=device)


def test_pose_penalty_is_added_to_every_pose_but_the_own_one(tmp_path):
    from napari_siamforensic.core.data import prepare_batch
    from napari_siamforensic.core.model import SiameseNet

    rng = np.random.default_rng(0)
    imgs = [rng.random((64, 64)).astype(np.float32) for _ in range(4)]
    net = SiameseNet(sf.ModelConfig(input_size=64, channels=(8, 16), hidden=32, embedding_dim=8))
    net.reset_parameters(torch.Generator().manual_seed(1))
    m = ForensicModel(net, "cpu", poses="dihedral+invert")
    with torch.no_grad():
        ea = m.embed_tensor(prepare_batch(imgs[:2], m.input_size, m.device))
        eb = m._embed_poses(prepare_batch(imgs[2:], m.input_size, m.device), "dihedral+invert")
        f = ((ea.unsqueeze(0) - eb).abs() * net.alpha.float()).sum(-1).numpy()      # (16, 2)
    for delta in (0.0, 0.05, 10.0):
        m.pose_penalty = delta
        want = np.minimum(f[0], f[1:].min(0) + delta)
        np.testing.assert_allclose(m.distance(imgs[:2], imgs[2:]), want, rtol=1e-5)
        np.testing.assert_allclose(m.pairwise(imgs)[[0, 1], [2, 3]], np.minimum(
            want, [m.distance([imgs[2]], [imgs[0]])[0], m.distance([imgs[3]], [imgs[1]])[0]]), rtol=1e-5)
    np.testing.assert_allclose(m.distance(imgs[:2], imgs[2:]), f[0], rtol=1e-5)    # 10: the own pose wins
    flipped = [imgs[0][:, ::-1].copy()]
    m.pose_penalty = 0.3
    own = m.distance([imgs[0]], flipped, poses="none")[0]
    assert m.distance([imgs[0]], flipped)[0] == pytest.approx(min(own, 0.3), abs=1e-4)   # mirror pose: 0 + 0.3
    path = m.save(tmp_path / "m.safetensors")
    assert sf.load_model(path, device="cpu").pose_penalty == 0.3
    assert sf.load_model(path, device="cpu", pose_penalty=0.0).pose_penalty == 0.0
    for bad in (-0.1, "0.2", True, 11):
        with pytest.raises(ValueError, match="pose_penalty"):
            m.pose_penalty = bad


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_batched_normalisation_matches_the_per_image_one(dtype, device):
    """``prepare_batch(on_device=True)`` (the default off the CPU: one sort per image on the
    device instead of numpy's percentile per image) gives the per-image numpy result to float32
    rounding, for every accepted dtype, mixed shapes, a constant image and a near-constant one."""
    from napari_siamforensic.core.data import normalise_intensity, normalise_intensity_batch, prepare_batch

    rng = np.random.default_rng(3)
    top = 255 if dtype == np.uint8 else 4095 if dtype == np.uint16 else 1.0
    ims = [(rng.random((128, 128)) ** 2 * top).astype(dtype) for _ in range(5)]
    ims += [(rng.random((90, 140)) * top).astype(dtype) for _ in range(3)]
    ims.append(np.full((128, 128), 3, dtype))                       # constant -> 0
    spike = np.zeros((128, 128), dtype)
    spike[0, 0] = 9                                                 # percentiles equal: min/max rule
    ims.append(spike)
    per_image = prepare_batch(ims, 64, device, on_device=False)
    batched = prepare_batch(ims, 64, device, on_device=True)
    torch.testing.assert_close(batched, per_image, rtol=0, atol=2e-6)
    assert float(batched[8].abs().max()) == 0.0 and float(batched[9].max()) > 0
    # the function itself, before resizing
    stack = np.stack(ims[:5]).astype(np.float32)
    want = np.stack([normalise_intensity(im) for im in stack])
    got = normalise_intensity_batch(torch.from_numpy(stack).to(device)).cpu().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
