"""End-to-end screens: planted copies found, bad inputs skipped with reasons, modes, resuming."""
from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from napari_siamforensic.screening import ScreenProgress, iter_screen, screen

from .conftest import scene8

# PDFs are an optional extra ([screening]); CI installs it, a bare core install does not
needs_pdfium = pytest.mark.skipif(importlib.util.find_spec("pypdfium2") is None,
                                  reason="pypdfium2 is not installed (pip install 'napari-siamforensic[screening]')")


def _name(res, item_id) -> str:
    return os.path.basename(res.items.set_index("id").loc[int(item_id), "source"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("screen") / "figs"
    (d / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(scene8(20 + i, 200)).save(d / f"f{i}.png")
    Image.fromarray(scene8(20, 200)[:, ::-1].copy()).save(d / "sub" / "copy.png")   # recursive
    (d / "broken.png").write_bytes(b"\x89PNG nonsense")
    return d


@pytest.fixture(scope="module")
def folder_reports(folder, model):
    return list(iter_screen([str(folder)], model, localize=3))


def test_planted_mirror_copy_is_the_best_pair(folder_reports):
    reports = folder_reports
    assert all(isinstance(r, ScreenProgress) for r in reports)
    assert [r.stage for r in reports][-1] == "done" and reports[-1].result is not None
    assert {"embed", "search", "localize"} <= {r.stage for r in reports}
    res = reports[-1].result
    assert list(res.items.columns[:4]) == ["id", "source", "page", "panel"]
    assert len(res.items) == 5
    best = res.pairs.iloc[0]
    assert {_name(res, best["a"]), _name(res, best["b"])} == {"f0.png", "copy.png"}
    assert best["distance"] < 0.5 * res.pairs["distance"].iloc[1]
    assert best["transform"].startswith("mirrored") and "rotated" not in best["transform"]
    # the copy is the whole of the original: the matched regions are (nearly) the frames
    assert best["box_a"][2] - best["box_a"][0] > 180 and best["box_b"][3] - best["box_b"][1] > 180
    # best evidence first: keypoint-verified pairs, then the rest, each by the smaller of the
    # whole-image and the crop-window distance
    verified = (res.pairs["method"] == "orb-ransac").to_numpy()
    assert not (np.diff(verified.astype(int)) > 0).any()                 # no verified pair after an unverified one
    ev = np.fmin(res.pairs["distance"], res.pairs["crop_distance"]).to_numpy()
    assert (np.diff(ev[verified]) >= 0).all() and (np.diff(ev[~verified]) >= 0).all()
    assert res.pairs["crop_distance"].notna().all() and res.info["crop_rows"] == 36
    np.testing.assert_allclose(res.pairs["probability"], 1 / (1 + np.exp(-(1 - res.pairs["distance"]))))
    assert len(res.skipped) == 1 and res.skipped.iloc[0]["source"].endswith("broken.png")
    assert "could not read" in res.skipped.iloc[0]["reason"]


def test_rotated_inverted_copy_needs_the_poses(tmp_path, model):
    a = scene8(30, 180)
    arrays = [a, scene8(31, 180), scene8(32, 180), 255 - np.rot90(a)]
    with_poses = screen(arrays, model, poses="dihedral+invert", localize=1)
    best = with_poses.pairs.iloc[0]
    assert {int(best["a"]), int(best["b"])} == {0, 3}
    assert "inverted" in best["transform"] and "rotated 90" in best["transform"]
    without = screen(arrays, model, poses="none", localize=0)
    d_plain = without.pairs.set_index(["a", "b"])["distance"].get((0, 3))
    assert d_plain is None or d_plain > 10 * best["distance"]


@needs_pdfium
def test_bad_inputs_are_skipped_with_reasons(tmp_path, model):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 garbage")
    Image.fromarray(np.zeros((8, 8), np.uint8) + 3).save(tmp_path / "tiny.png")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp_path / "blank.png")
    Image.fromarray(scene8(1, 96)).save(tmp_path / "ok.png")
    Image.fromarray(scene8(1, 96)).save(tmp_path / "ok.pdf", "PDF")
    data = (tmp_path / "ok.pdf").read_bytes()
    cut = data.rfind(b"trailer")
    (tmp_path / "locked.pdf").write_bytes(
        data[:cut] + b"trailer\n<< /Size 7 /Root 3 0 R /Encrypt << /Filter /Standard /V 1 /R 2 /O <"
        + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >> /ID [<" + b"33" * 16 + b"> <" + b"33" * 16
        + b">] >>\nstartxref\n0\n%%EOF\n")
    res = screen([str(tmp_path), str(tmp_path / "missing.png"), np.zeros((2, 2))], model, localize=0, poses="none")
    reasons = {os.path.basename(s): r for s, r in zip(res.skipped["source"], res.skipped["reason"])}
    assert "could not read" in reasons["broken.tif"]
    assert "smaller than the 16 x 16" in reasons["tiny.png"]
    assert "blank" in reasons["blank.png"]
    assert "encrypted" in reasons["locked.pdf"]
    assert "no such file" in reasons["missing.png"]
    assert "smaller" in reasons["array[2]"]
    assert sorted(res.items["kind"]) == ["image", "pdf-image"]
    assert len(res.pairs) == 1   # ok.png and the image inside ok.pdf


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_is_skipped(tmp_path, model):
    locked = tmp_path / "locked"
    locked.mkdir()
    Image.fromarray(scene8(1, 64)).save(tmp_path / "a.png")
    Image.fromarray(scene8(2, 64)).save(tmp_path / "b.png")
    locked.chmod(0)
    try:
        res = screen([str(tmp_path)], model, localize=0)
    finally:
        locked.chmod(0o755)
    assert any("could not read the folder" in r for r in res.skipped["reason"])
    assert len(res.items) == 2


@needs_pdfium
def test_pdf_embedded_image_matches_the_file_it_came_from(tmp_path, model):
    pictures = [Image.fromarray(scene8(40 + i, 150)) for i in range(3)]
    pictures[0].save(tmp_path / "paper.pdf", "PDF", save_all=True, append_images=pictures[1:], resolution=100)
    Image.fromarray(scene8(41, 150)[::-1].copy()).save(tmp_path / "submitted.png")   # page 1, flipped
    res = screen([str(tmp_path / "paper.pdf"), str(tmp_path / "submitted.png")], model, localize=1)
    pdf_items = res.items[res.items["kind"] == "pdf-image"]
    assert list(pdf_items["page"]) == [0, 1, 2] and list(pdf_items["object"]) == [0, 0, 0]
    best = res.pairs.iloc[0]
    pages = res.items.set_index("id")["page"]
    names = {_name(res, best["a"]), _name(res, best["b"])}
    assert names == {"paper.pdf", "submitted.png"}
    pdf_side = best["a"] if _name(res, best["a"]) == "paper.pdf" else best["b"]
    assert pages[int(pdf_side)] == 1
    # PDF images are JPEG-compressed by Pillow: not exact, but far closer than anything else
    assert best["distance"] < 0.5 * res.pairs["distance"].iloc[1]


@needs_pdfium
def test_rendered_pdf_page_is_not_paired_with_its_own_images(tmp_path, model):
    from napari_siamforensic.screening import SourceOptions

    picture = Image.fromarray(scene8(44, 150))
    picture.save(tmp_path / "paper.pdf", "PDF", resolution=100)
    Image.fromarray(scene8(44, 150)[:, ::-1].copy()).save(tmp_path / "copy.png")
    res = screen([str(tmp_path / "paper.pdf"), str(tmp_path / "copy.png")], model, localize=0,
                 options=SourceOptions(pdf_pages="always", split_panels=False))
    kinds = res.items.set_index("id")["kind"]
    assert sorted(kinds) == ["image", "pdf-image", "pdf-page"]
    pair_kinds = [{kinds[int(a)], kinds[int(b)]} for a, b in zip(res.pairs["a"], res.pairs["b"])]
    assert {"pdf-page", "pdf-image"} not in pair_kinds     # the page contains that image
    assert {"image", "pdf-image"} in pair_kinds            # the copy is still found
    assert res.info["dropped_page_self_pairs"] == 1


@needs_pdfium
def test_pdf_page_without_images_is_rendered(tmp_path, model):
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    pdf.new_page(200, 200)      # an empty page: rendered, found blank, skipped with that reason
    pdf.save(str(tmp_path / "empty.pdf"))
    pdf.close()
    res = screen([str(tmp_path / "empty.pdf"), scene8(3, 64), scene8(4, 64)], model, localize=0)
    row = res.skipped[res.skipped["source"].str.endswith("empty.pdf")]
    assert len(row) == 1 and "blank" in row.iloc[0]["reason"] and row.iloc[0]["page"] == 0


def test_multipage_16bit_tiff_pages_are_items(tmp_path, model):
    import tifffile

    from .conftest import scene

    stack = np.stack([scene(50, 96), scene(51, 96), np.rot90(scene(50, 96)).copy()])
    assert stack.dtype == np.uint16
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    res = screen([str(tmp_path / "stack.tif")], model, localize=1)
    assert list(res.items["page"]) == [0, 1, 2]
    best = res.pairs.iloc[0]
    assert (int(best["a"]), int(best["b"])) == (0, 2)
    assert "rotated 90" in best["transform"]


def _two_panel_figure(seed_left, seed_right, copy_left=False):
    fig = np.full((180, 350), 255, np.uint8)
    fig[10:170, 10:170] = scene8(seed_left, 160)
    fig[10:170, 180:340] = scene8(seed_left, 160)[:, ::-1] if copy_left else scene8(seed_right, 160)
    return fig


def test_modes_within_and_across_documents(tmp_path, model):
    Image.fromarray(_two_panel_figure(60, 0, copy_left=True)).save(tmp_path / "fig1.png")   # copy inside
    Image.fromarray(_two_panel_figure(61, 62)).save(tmp_path / "fig2.png")
    Image.fromarray(scene8(62, 160)).save(tmp_path / "fig3.png")                           # copy across
    sources = [str(tmp_path)]
    within = screen(sources, model, mode="within", localize=0, poses="dihedral")
    across = screen(sources, model, mode="across", localize=0, poses="dihedral")
    both = screen(sources, model, mode="all", localize=0, poses="dihedral")
    assert len(within.items) == 5 and within.items["panel"].notna().sum() == 4
    docs = within.items.set_index("id")["document"]
    assert all(docs[a] == docs[b] for a, b in zip(within.pairs["a"], within.pairs["b"]))
    assert all(docs[a] != docs[b] for a, b in zip(across.pairs["a"], across.pairs["b"]))
    first = within.pairs.iloc[0]
    assert {_name(within, first["a"]), _name(within, first["b"])} == {"fig1.png"}
    first = across.pairs.iloc[0]
    assert {_name(across, first["a"]), _name(across, first["b"])} == {"fig2.png", "fig3.png"}
    top2 = {frozenset((int(a), int(b))) for a, b in both.pairs[["a", "b"]].head(2).to_numpy()}
    assert top2 == {frozenset((int(within.pairs.iloc[0]["a"]), int(within.pairs.iloc[0]["b"]))),
                    frozenset((int(across.pairs.iloc[0]["a"]), int(across.pairs.iloc[0]["b"])))}


def test_threshold_and_candidates_limit_the_pairs(folder, model):
    res_all = screen([str(folder)], model, candidates=4, localize=0, poses="none")
    assert len(res_all.pairs) == 10          # 5 items, every pair is a candidate
    res_k1 = screen([str(folder)], model, candidates=1, localize=0, poses="none", wider=0, texture=0)
    assert len(res_k1.pairs) <= 5            # each item's nearest (no wider search: it adds pairs)
    evidence = np.fmin(res_all.pairs["distance"], res_all.pairs["crop_distance"])
    cut = float(evidence.iloc[2])
    res_t = screen([str(folder)], model, threshold=cut, localize=0, poses="none")
    assert (np.fmin(res_t.pairs["distance"], res_t.pairs["crop_distance"]) <= cut).all() and len(res_t.pairs) == 3
    # without crop windows the threshold and the order are those of the whole-image distance
    res_w = screen([str(folder)], model, candidates=4, localize=0, poses="none", crops=False)
    assert res_w.pairs["crop_distance"].isna().all() and res_w.info["crop_rows"] == 0
    assert res_w.pairs["distance"].is_monotonic_increasing
    cut = float(res_w.pairs["distance"].iloc[2])
    res_wt = screen([str(folder)], model, threshold=cut, localize=0, poses="none", crops=False)
    assert (res_wt.pairs["distance"] <= cut).all() and len(res_wt.pairs) == 3


def test_store_resumes_and_screens_new_sources_against_it(folder, model, tmp_path):
    store = tmp_path / "store"
    first = screen([str(folder)], model, store=store, localize=0, poses="dihedral")
    assert first.info["restored"] == 0
    assert (store / "manifest.json").is_file() and list(store.glob("chunk-*.npy"))
    Image.fromarray(scene8(21, 200)[::-1, ::-1].copy()).save(tmp_path / "new.png")   # copy of f1
    second = screen([str(folder), str(tmp_path / "new.png")], model, store=store, localize=0, poses="dihedral")
    assert second.info["restored"] == 5 and len(second.items) == 6
    assert len(second.skipped) == 1          # broken.png's reason restored, not re-read
    best = second.pairs.iloc[0]
    assert {_name(second, best["a"]), _name(second, best["b"])} in ({"f0.png", "copy.png"}, {"f1.png", "new.png"})
    names = {frozenset((_name(second, a), _name(second, b))) for a, b in second.pairs[["a", "b"]].head(2).to_numpy()}
    assert names == {frozenset(("f0.png", "copy.png")), frozenset(("f1.png", "new.png"))}
    # same distances for the pairs the two screens share
    key = ["source_a", "source_b"]
    d1 = first.pairs_with_provenance().set_index(key)["distance"]
    d2 = second.pairs_with_provenance().set_index(key)["distance"]
    shared = d1.index.intersection(d2.index)
    assert len(shared) >= 5
    np.testing.assert_allclose(d1[shared], d2[shared], rtol=1e-5)
    with pytest.raises(ValueError, match="poses"):
        screen([str(folder)], model, store=store, poses="dihedral+invert")


def test_bad_arguments_raise(folder, model):
    with pytest.raises(ValueError, match="mode"):
        screen([str(folder)], model, mode="everything")
    with pytest.raises(ValueError, match="poses"):
        screen([str(folder)], model, poses="mirror")
    with pytest.raises(ValueError, match="candidates"):
        screen([str(folder)], model, candidates=0)
    with pytest.raises(TypeError, match="model"):
        screen([str(folder)], model=3)
    with pytest.raises(TypeError, match="hub_correction"):
        screen([str(folder)], model, hub_correction="no")


def test_reports_html_csv_json(folder_reports, tmp_path):
    res = folder_reports[-1].result
    html_path = res.to_html(tmp_path / "report.html")
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "$" not in page.split("<main>")[1][:200]
    assert page.count('<section class="pair') == len(res.pairs)
    shown = sum(int(a) in res.thumbnails and int(b) in res.thumbnails for a, b in res.pairs[["a", "b"]].to_numpy())
    assert shown >= 2 and page.count("data:image/png;base64,") == 2 * shown
    assert "copy.png" in page and "broken.png" in page and res.pairs.iloc[0]["transform"] in page
    assert "http" not in page.replace("http-equiv", "")          # self-contained
    csv = pd.read_csv(res.to_csv(tmp_path / "pairs.csv"))
    for col in ("a", "b", "distance", "probability", "transform", "box_a", "box_b",
                "source_a", "page_a", "panel_a", "source_b", "page_b", "panel_b"):
        assert col in csv.columns
    assert len(csv) == len(res.pairs)
    assert csv.loc[0, "box_a"].count(" ") == 3
    doc = json.loads(res.to_json(tmp_path / "screen.json").read_text())
    assert set(doc) == {"info", "items", "pairs", "skipped"}
    assert len(doc["pairs"]) == len(res.pairs) and doc["pairs"][0]["box_a"] == list(res.pairs.iloc[0]["box_a"])


def test_model_path_is_accepted(folder, model_path):
    res = screen([str(folder)], str(model_path), localize=0, poses="dihedral")
    best = res.pairs.iloc[0]
    assert {_name(res, best["a"]), _name(res, best["b"])} == {"f0.png", "copy.png"}


def test_pose_basis_and_all_poses_find_the_same_copies(tmp_path, model):
    a, c = scene8(40, 160), scene8(41, 160)
    arrays = [a, c, scene8(42, 160), 255 - np.rot90(a[:, ::-1]).copy(), np.rot90(c, 2).copy()]
    basis = screen(arrays, model, localize=0)                               # the default
    full = screen(arrays, model, localize=0, pose_embedding="all")
    assert basis.info["pose_embedding"] == "basis" and basis.info["stored_poses"] == 6
    assert full.info["stored_poses"] == 16
    for res in (basis, full):
        top = {frozenset(p) for p in res.pairs[["a", "b"]].head(2).to_numpy().tolist()}
        assert top == {frozenset((0, 3)), frozenset((1, 4))}
    # exact copies in a pose: both score (nearly) 0; the basis' best pose is the copy's pose
    for res in (basis, full):
        first = res.pairs.set_index(["a", "b"])
        assert first.loc[(0, 3), "distance"] < 0.05 and first.loc[(1, 4), "distance"] < 0.05
        assert "inverted" in first.loc[(0, 3), "transform"] and "mirrored" in first.loc[(0, 3), "transform"]
        assert first.loc[(1, 4), "transform"] == "rotated 180°"
    # a store keeps the stored poses it was built with
    store = tmp_path / "store"
    screen(arrays[:2], model, localize=0, store=store)
    with pytest.raises(ValueError, match="pose_embedding"):
        screen(arrays[:2], model, localize=0, store=store, pose_embedding="all")
    with pytest.raises(ValueError, match="pose_embedding"):
        screen(arrays, model, pose_embedding="some")


def test_pdf_without_pypdfium2_is_skipped_saying_what_to_install(tmp_path, model, monkeypatch):
    import sys

    Image.fromarray(scene8(1, 96)).save(tmp_path / "paper.pdf", "PDF")
    Image.fromarray(scene8(2, 96)).save(tmp_path / "fig.png")
    monkeypatch.setitem(sys.modules, "pypdfium2", None)      # `import pypdfium2` now fails
    res = screen([str(tmp_path / "paper.pdf"), str(tmp_path / "fig.png")], model)
    reasons = dict(zip(res.skipped["source"].map(lambda s: os.path.basename(s)), res.skipped["reason"]))
    assert "pypdfium2" in reasons["paper.pdf"] and "pip install" in reasons["paper.pdf"]
    assert list(res.items["kind"]) == ["image"]              # the rest of the screen went on


def test_a_copy_cut_from_a_larger_panel_is_found_through_the_crop_windows(model, tmp_path):
    """The copy is the top-right 3/4 x 3/4 of a panel, turned a quarter: as a whole image it is
    another picture, but one crop window of the panel is it. With crops the pair comes first with
    a crop distance far below its whole-image distance; the whole-image distance is unchanged."""
    big = scene8(40, 171)
    Image.fromarray(big).save(tmp_path / "panel.png")
    Image.fromarray(np.rot90(big[0:128, 43:171]).copy()).save(tmp_path / "cut.png")
    for i in range(6):
        Image.fromarray(scene8(41 + i, 171)).save(tmp_path / f"other{i}.png")
    res = screen([str(tmp_path)], model, candidates=3, localize=0)
    best = res.pairs.iloc[0]
    assert {_name(res, best["a"]), _name(res, best["b"])} == {"panel.png", "cut.png"}
    assert best["crop_distance"] < 0.25 * best["f"]
    # the transform is the crop window's pose (cut.png is a; the panel is it turned back clockwise)
    assert _name(res, best["a"]) == "cut.png" and best["transform"] == "rotated 90° cw"
    assert best["crop_distance"] < np.fmin(res.pairs["distance"], res.pairs["crop_distance"]).iloc[1:].min()
    plain = screen([str(tmp_path)], model, candidates=6, localize=0, crops=False)
    row = plain.pairs[(plain.pairs[["a", "b"]].to_numpy() == [best["a"], best["b"]]).all(1)]
    assert len(row) == 1 and row["f"].iloc[0] == pytest.approx(best["f"], rel=1e-6)
    # every pose stored: the index holds pose 0 only, so the windows go in all 16 poses
    every = screen([str(tmp_path)], model, candidates=3, localize=0, pose_embedding="all")
    assert every.info["crop_rows"] == 9 * 16
    top = every.pairs.iloc[0]
    assert {_name(every, top["a"]), _name(every, top["b"])} == {"panel.png", "cut.png"}
    assert top["crop_distance"] < 0.25 * top["f"] and top["transform"] == "rotated 90° cw"


def test_a_store_built_without_crop_windows_is_refused_with_the_fix(folder, model, tmp_path):
    store = tmp_path / "store"
    screen([str(folder)], model, store=store, localize=0, poses="none", crops=False)
    with pytest.raises(ValueError, match=r"without crop windows.*crops=False"):
        screen([str(folder)], model, store=store, localize=0, poses="none")
    again = screen([str(folder)], model, store=store, localize=0, poses="none", crops=False)
    assert again.info["restored"] == 5
    with pytest.raises(ValueError, match="crops"):
        screen([str(folder)], model, crops="yes")


def test_a_store_keeps_the_crop_layout_it_was_built_with(folder, model, tmp_path):
    """A store records how its crop windows were embedded; a store of before the nineteenth session
    (no "crop_layout" in its manifest) has windows cut from the pixels. A screen asking for
    another layout is refused with the fix, so every item of a store is comparable; new items go
    in the store's layout."""
    from napari_siamforensic.screening.index import EmbeddingStore, embed_poses, stored_pose_ids

    img = scene8(31, 200)
    Image.fromarray(img).save(tmp_path / "new.png")
    for layout in ("pixels", "features"):
        store = tmp_path / f"store-{layout}"
        first = screen([str(folder)], model, store=store, localize=0, poses="none", verify=False,
                       crops=True if layout == "pixels" else layout)
        assert first.info["crop_layout"] == layout
        man = json.loads((store / "manifest.json").read_text())
        assert man["crop_layout"] == layout and man["crop_poses"] == [0]
        if layout == "pixels":
            del man["crop_layout"]                            # as the stores of before wrote it
            (store / "manifest.json").write_text(json.dumps(man))
        other = "features" if layout == "pixels" else "pixels"
        with pytest.raises(ValueError, match=f"in the '{layout}' layout.*crops='{layout}'"):
            screen([str(folder)], model, store=store, localize=0, poses="none", verify=False, crops=other)
        res = screen([str(folder), str(tmp_path / "new.png")], model, store=store, localize=0, poses="none",
                     verify=False, crops=layout)
        assert res.info["restored"] == 5 and len(res.items) == 6 and res.info["crop_layout"] == layout
        st = EmbeddingStore(store, model_id=model.identity(), poses="none", dim=128,
                            pose_ids=stored_pose_ids("none", "basis"), crop_poses=(0,), crop_layout=layout)
        refs, chunks, _ = st.restore()
        new_row = np.concatenate(chunks)[[i for i, r in enumerate(refs) if r.source.endswith("new.png")][0]]
        for emb_layout in ("pixels", "features"):
            want = embed_poses(model, [img], "none", (0,), (0,), emb_layout)[0]
            assert np.allclose(new_row, want, rtol=1e-4, atol=1e-5) == (emb_layout == layout), emb_layout
    man["crop_layout"] = "tiles"
    (store / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="'tiles' layout"):
        screen([str(folder)], model, store=store, localize=0, poses="none", verify=False)
    for bad, err in (("tiles", ValueError), (1, TypeError), (None, TypeError)):
        with pytest.raises(err, match="crops"):
            screen([str(folder)], model, localize=0, crops=bad)


def test_keypoint_verified_pairs_come_first(folder, model, monkeypatch):
    """A pair whose keypoints RANSAC verified outranks every unverified one; each group keeps
    the order of the distances (no pixel check here: it would verify the folder's real copy)."""
    import dataclasses

    import napari_siamforensic.screening as screening_module
    from napari_siamforensic.screening.localize import pose_match

    plain = screen([str(folder)], model, candidates=4, localize=0, poses="none", verify=False)
    evidence = np.fmin(plain.pairs["distance"], plain.pairs["crop_distance"]).to_numpy()
    target = (int(plain.pairs["a"].iloc[6]), int(plain.pairs["b"].iloc[6]))      # 7th of 10 by distance
    names = {i: os.path.basename(s) for i, s in zip(plain.items["id"], plain.items["source"])}

    class FakeLocalizer:
        def __call__(self, img_a, img_b, *, key_a, key_b, pose_hint, pose_of_b):
            m = pose_match(img_a.shape, img_b.shape, pose_hint, pose_of_b)
            if (key_a, key_b) == target:
                return dataclasses.replace(m, method="orb-ransac", inliers=40)
            return m

    monkeypatch.setattr(screening_module, "Localizer", FakeLocalizer)
    res = screen([str(folder)], model, candidates=4, localize=10, poses="none", verify=False)
    assert {names[int(res.pairs["a"].iloc[0])], names[int(res.pairs["b"].iloc[0])]} == {names[t] for t in target}
    assert res.pairs["method"].iloc[0] == "orb-ransac" and res.pairs["inliers"].iloc[0] == 40
    assert (res.pairs["method"].iloc[1:] == "pose").all()
    rest = np.fmin(res.pairs["distance"], res.pairs["crop_distance"]).to_numpy()[1:]
    np.testing.assert_allclose(rest, np.delete(evidence, 6), rtol=1e-6)            # the others in order
