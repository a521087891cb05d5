"""The dask screen gives the single-process screen's items and pairs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from napari_siamforensic.screening import screen

from .conftest import scene8

distributed = pytest.importorskip("distributed")


@pytest.mark.slow   # a LocalCluster start plus two screens: minutes on a busy 2-core machine
def test_cluster_screen_equals_local_screen(tmp_path, model_path):
    from napari_siamforensic.screening import DEFAULT_TEXTURE
    from napari_siamforensic.screening.cluster import screen_on_cluster

    for i in range(5):
        Image.fromarray(scene8(70 + i, 120)).save(tmp_path / f"f{i}.png")
    Image.fromarray(np.rot90(scene8(72, 120)).copy()).save(tmp_path / "copy.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    kw = dict(poses="dihedral", candidates=3, localize=1, wider=2)      # wider: every other item, first-passed
    local = screen([str(tmp_path)], str(model_path), **kw)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = screen_on_cluster([str(tmp_path)], str(model_path), client=client, files_per_task=2,
                                   store=tmp_path.parent / "cluster-store", **kw)
        # the workers embed crop windows in the layout asked for (here the approximate, shared-pass
        # one); and the gate on the nearest pairs reaches the cluster screen's check
        remote_f = screen_on_cluster([str(tmp_path)], str(model_path), client=client, files_per_task=2,
                                     crops="features", gate_nearest=True, **kw)
    local_f = screen([str(tmp_path)], str(model_path), crops="features", gate_nearest=True, **kw)
    assert remote_f.info["gate_nearest"] and local_f.info["gate_nearest"] and not local.info["gate_nearest"]
    assert remote_f.info["nearest_pairs_gated"] == local_f.info["nearest_pairs_gated"]
    np.testing.assert_allclose(remote_f.pairs["match"], local_f.pairs["match"], rtol=1e-6)     # NaN where gated
    assert remote_f.info["crop_layout"] == local_f.info["crop_layout"] == "features"
    assert local.info["crop_layout"] == "pixels"
    assert remote_f.pairs[["a", "b"]].equals(local_f.pairs[["a", "b"]])
    np.testing.assert_allclose(remote_f.pairs["crop_distance"], local_f.pairs["crop_distance"], rtol=1e-5)
    both = local_f.pairs.merge(local.pairs, on=["a", "b"], suffixes=("_f", "_p"))    # and not the pixel windows
    assert len(both) and not np.allclose(both["crop_distance_f"], both["crop_distance_p"])
    assert remote.items.drop(columns=[]).equals(local.items)
    assert remote.info["wider"] == local.info["wider"] == 2
    assert remote.info["wider_pairs_kept"] == local.info["wider_pairs_kept"]
    assert remote.info["texture"] == local.info["texture"] == DEFAULT_TEXTURE          # the default reaches both
    assert remote.info["texture_pairs"] == local.info["texture_pairs"]
    assert remote.pairs[["a", "b"]].equals(local.pairs[["a", "b"]])
    np.testing.assert_allclose(remote.pairs["distance"], local.pairs["distance"], rtol=1e-6)
    assert list(remote.skipped["source"]) == list(local.skipped["source"])
    assert remote.pairs.iloc[0]["transform"] == local.pairs.iloc[0]["transform"]
