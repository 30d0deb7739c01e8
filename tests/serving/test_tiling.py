"""Tiled translation (serving/tiling.py, training/tiling.py): the grid and its blending weights,
the derived statistics/tile graphs against the generator, PSNR of the tiled output against the
whole-image output on the trained tests-profile model, flat model-call size as images grow,
output size and orientation, the PyTorch path against the ONNX path, and the HTTP routes."""
from __future__ import annotations

import io

import numpy as np
import pytest

from helpers.serving import shared_export

TILE, OVERLAP, ABOVE = 64, 16, 64 * 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


@pytest.fixture(scope="module")
def generator(exported):
    from serving.session import load_session

    return load_session(exported[2] / "G_AtoB.onnx")


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like uint8 image: gradients, a few soft blobs and mild noise (random
    pixel noise alone has no structure at any scale, unlike a photo)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 23.0 + yy / 31.0)], axis=-1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * min(h, w)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - blob) + rng.random(3) * blob
    image += rng.normal(0, 0.02, image.shape)
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    to8 = lambda x: np.rint((np.clip(x, -1, 1) + 1) * 127.5)  # noqa: E731
    mse = float(np.mean((to8(a) - to8(b)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


# -- the grid ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [64, 68, 120, 200, 256, 1000, 4000])
def test_tiles_cover_the_axis_on_the_grid_and_weights_sum_to_one(length):
    from serving.tiling import owned, ramps, tile_side, tile_starts

    most, overlap, m = 64, 16, 4
    tile = tile_side(length, most, overlap, m)
    assert tile <= most and tile % m == 0 or tile == length
    # no fewer tiles than the full side would need: shrinking only trims the overlap
    assert len(tile_starts(length, tile, overlap, m)) == len(tile_starts(length, most, overlap, m))
    starts = tile_starts(length, tile, overlap, m)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] == length - size
    assert all(s % m == 0 for s in starts) and starts == sorted(set(starts))
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))   # neighbours share >= overlap
    total = np.zeros(length)
    for start, w in zip(starts, ramps(starts, tile, length)):
        assert w.shape == (size,) and (w >= 0).all()
        total[start:start + size] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    parts = owned(starts, tile, length, m)
    covered = np.zeros(length, dtype=int)
    for start, (a, b) in zip(starts, parts):
        assert 0 <= a < b <= size
        covered[start + a:start + b] += 1
    assert (covered == 1).all()


def test_the_torch_path_mirrors_the_numpy_grid():
    from serving import tiling as S
    from training import tiling as T

    for length in (8, 68, 300, 1236):   # padded lengths: multiples of the size multiple
        for tile, overlap in ((64, 16), (512, 64), (32, 0)):
            starts = S.tile_starts(length, tile, overlap, 4)
            assert T.tile_starts(length, tile, overlap, 4) == starts
            for a, b in zip(S.ramps(starts, tile, length), T.ramps(starts, tile, length)):
                np.testing.assert_array_equal(a, b)
            assert S.owned(starts, tile, length, 4) == T.owned(starts, tile, length, 4)
            assert S.tile_side(length, tile, overlap, 4) == T.tile_side(length, tile, overlap, 4)
    assert S.statistics_size(3000, 4000, 1 << 20, 4, 8) == T.statistics_size(3000, 4000, 1 << 20, 4, 8)
    h, w = S.statistics_size(3000, 4000, 1 << 20, 4, 8)
    assert h * w <= 1 << 20 and h % 4 == 0 and w % 4 == 0 and abs(w / h - 4 / 3) < 0.01


# -- the derived graphs -------------------------------------------------------------------------

def test_statistics_and_tile_graphs_reproduce_the_generator(generator):
    """With an image's own statistics the tile model is the generator: the graph rewrite is exact."""
    from serving.tiling import STATISTICS, load_tiler

    tiler, status = load_tiler(generator, TILE, OVERLAP, ABOVE)
    assert status == "on" and len(tiler.graphs.channels) == 9   # resnet_2blocks: 3 + 2 x 2 + 2 norms
    x = generator.to_model_input(photo(40, 52)[None])
    stats = tiler.stats_session.run(None, {"input": x})[0]
    assert stats.shape == (1, tiler.graphs.width)
    got = tiler.tile_session.run(None, {"input": x, STATISTICS: stats})[0]
    assert np.abs(got - generator.run(x)).max() <= 1e-4


def test_statistics_summed_over_tiles_equal_the_whole_images(generator):
    """The first norms summed exactly over the tiles give the whole image's statistics (their
    receptive field is within the overlap); deeper ones summed exactly are off only by tile
    borders, several times less than the downscaled copy's estimate."""
    from serving.images import pad_to_multiple
    from serving.tiling import load_tiler

    x = generator.to_model_input(photo(200, 168, seed=1)[None])
    padded, _ = pad_to_multiple(x, 4, (2, 3), 8)
    deep_error = {}
    for exact in (9, 3):
        tiler, _ = load_tiler(generator, TILE, OVERLAP, ABOVE, exact_norms=exact)
        plan = tiler.plan(200, 168)
        assert plan.statistics != plan.padded and plan.exact == exact
        stats = tiler.statistics(padded, plan)
        truth = tiler.stats_session.run(None, {"input": padded})[0]
        first3 = 2 * sum(tiler.graphs.channels[:3])
        np.testing.assert_allclose(stats[:, :first3], truth[:, :first3], atol=1e-5)
        deep_error[exact] = np.abs(stats[:, first3:] - truth[:, first3:]).max()
    assert deep_error[9] <= 1e-2 and deep_error[3] > 3 * deep_error[9], deep_error


# -- the translation ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(256, 256), (250, 190)], ids=["square", "odd-sided"])
def test_tiled_output_is_within_30_db_of_the_whole_image(generator, size):
    """An image that fits whole, translated in 64-pixel tiles with statistics from a copy at
    half its side: PSNR against the whole-image output >= 30 dB, same shape."""
    from serving.tiling import load_tiler

    tiler, _ = load_tiler(generator, TILE, OVERLAP, size[0] * size[1] // 4)
    for seed in range(3):
        x = generator.to_model_input(photo(*size, seed=seed)[None])
        whole = generator.run_any_size(x)
        tiled = tiler.translate(x)
        assert tiled.shape == whole.shape == x.shape
        assert tiler.plan(*size).tiles >= 16
        assert psnr_uint8(tiled, whole) >= 30.0, seed


def test_orientation_is_kept(generator):
    """A tall image stays tall and its top stays on top: the tiles go back where they came from."""
    from serving.tiling import load_tiler

    tiler, _ = load_tiler(generator, TILE, OVERLAP, ABOVE)
    image = photo(300, 120, seed=4)
    image[:100] = 255   # a white top third
    x = generator.to_model_input(image[None])
    whole, tiled = generator.run_any_size(x), tiler.translate(x)
    assert tiled.shape == (1, 3, 300, 120)
    top, bottom = tiled[..., :100, :], tiled[..., 200:, :]
    assert np.abs(top - whole[..., :100, :]).mean() < np.abs(bottom - whole[..., :100, :]).mean()
    assert psnr_uint8(tiled, whole) >= 25.0


def test_model_calls_stay_at_the_tile_size_as_images_grow(generator):
    """What bounds memory: past the tile size, the largest input any model call sees is the
    tile or the statistics copy, whatever the image size; only the count of tiles grows."""
    from serving.tiling import load_tiler

    largest, tiles = [], []
    for side in (128, 256, 512, 768):
        tiler, _ = load_tiler(generator, TILE, OVERLAP, ABOVE)
        x = np.zeros((1, 3, side, side), dtype=np.float32)
        tiler.translate(x)
        largest.append(tiler.largest_call)
        tiles.append(tiler.plan(side, side).tiles)
    assert largest == [ABOVE] * 4      # the statistics copy (64 x 64), then 64 x 64 tiles
    assert tiles == sorted(tiles) and tiles[-1] > 25 * tiles[0]   # 36x the pixels, 28x the tiles


def test_pytorch_tiles_match_onnx_tiles(exported, generator):
    import torch

    from serving.tiling import load_tiler
    from training.engine.checkpoint import load_generators
    from training.translate import Tiling, translate_image

    G_A, _, _ = load_generators(exported[1])
    x = generator.to_model_input(photo(150, 230, seed=2)[None])
    for exact in (0, 3, 9):
        tiler, _ = load_tiler(generator, TILE, OVERLAP, ABOVE, exact)
        expected = tiler.translate(x)
        got = translate_image(G_A, torch.from_numpy(x), Tiling(ABOVE, TILE, OVERLAP, exact)).numpy()
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_a_model_that_fails_the_self_check_is_served_whole(generator, monkeypatch):
    from serving import tiling

    def broken(model, layout, exact):
        graphs = original(model, layout, exact)
        eps = [t for t in graphs.tile.graph.initializer if t.name.endswith("_eps")][0]
        eps.float_data[:] = [10.0]   # a wrong epsilon: the tile model no longer matches
        return graphs

    original = tiling.derive_graphs
    monkeypatch.setattr(tiling, "derive_graphs", broken)
    tiler, status = tiling.load_tiler(generator, TILE, OVERLAP, ABOVE)
    assert tiler is None and status.startswith("off:") and "differs from the generator" in status


def test_bad_tiling_settings_are_one_line_errors():
    from serving.config import load_serve_config
    from serving.errors import ServingError

    with pytest.raises(ServingError, match=r"serve.tile_overlap \(40\) must be at most half of serve.tile_size \(64\)"):
        load_serve_config({"tile_size": 64, "tile_overlap": 40})
    with pytest.raises(ServingError, match="serve.tile_size"):
        load_serve_config({"tile_size": 0})


# -- the routes and the command -------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(exported):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.config import load_serve_config
    from serving.session import load_session

    sessions = {d: load_session(exported[2] / f"G_{d}.onnx") for d in ("AtoB", "BtoA")}
    cfg = load_serve_config({"tile_above_pixels": ABOVE, "tile_size": TILE, "tile_overlap": OVERLAP})
    with TestClient(create_app(sessions, cfg)) as c:
        c.sessions = sessions
        yield c


def png(array: np.ndarray, exif_orientation: int | None = None, fmt: str = "PNG") -> bytes:
    from PIL import Image

    img = Image.fromarray(array)
    buffer = io.BytesIO()
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buffer, format=fmt, exif=exif)
    else:
        img.save(buffer, format=fmt)
    return buffer.getvalue()


def test_v1_translate_tiles_a_large_image(client):
    from PIL import Image

    from serving.tiling import load_tiler

    image = photo(180, 260, seed=5)
    r = client.post("/v1/translate?direction=AtoB&job=big-1", content=png(image), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    session = client.sessions["AtoB"]
    tiler, _ = load_tiler(session, TILE, OVERLAP, ABOVE)
    assert int(r.headers["X-Tiles"]) == tiler.plan(180, 260).tiles
    out = np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.int16)
    expected = session.to_images(tiler.translate(session.to_model_input(image[None])))[0]
    assert out.shape == image.shape and np.abs(out - expected).max() <= 1
    done = client.get("/v1/progress/big-1").json()
    assert done["finished"] and done["done"] == done["total"] > 1
    small = client.post("/v1/translate?direction=AtoB", content=png(photo(40, 40)),
                        headers={"Content-Type": "image/png"})
    assert small.status_code == 200 and small.headers["X-Tiles"] == "0"


def test_v1_translate_tiles_an_exif_rotated_photo_upright(client):
    from PIL import Image

    stored = photo(120, 200, seed=6)                        # stored landscape, tag 6: shown portrait
    r = client.post("/v1/translate?direction=BtoA", content=png(stored, exif_orientation=6, fmt="JPEG"),
                    headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert int(r.headers["X-Tiles"]) > 1
    assert Image.open(io.BytesIO(r.content)).size == (120, 200)    # width x height: upright


def test_v2_infer_tiles_a_large_tensor(client):
    from serving.tiling import load_tiler

    x = photo(160, 140, seed=7)[None].transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = client.post("/v2/models/cyclegan-BtoA/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"]
    assert [o["name"] for o in out] == ["output"]
    y = np.asarray(out[0]["data"], dtype=np.float32).reshape(out[0]["shape"])
    tiler, _ = load_tiler(client.sessions["BtoA"], TILE, OVERLAP, ABOVE)
    assert y.shape == x.shape and np.abs(y - tiler.translate(x)).max() <= 1e-5
    assert psnr_uint8(y, client.sessions["BtoA"].run_any_size(x)) >= 25.0   # the statistics copy: a third of the side


def test_progress_of_an_unknown_or_malformed_job(client):
    r = client.get("/v1/progress/never-started")
    assert r.status_code == 404 and "not known" in r.json()["error"]
    r = client.post("/v1/translate?job=no%20spaces%21", content=png(photo(20, 20)),
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and r.json()["error"].startswith("job:")


def test_translate_command_tiles_large_files(exported, tmp_path):
    from PIL import Image

    from helpers.serving import cli_main

    folder = tmp_path / "in"
    folder.mkdir()
    images = {"big.png": photo(200, 150, seed=8), "small.png": photo(30, 20, seed=9)}
    for name, array in images.items():
        Image.fromarray(array).save(folder / name)
    sets = ["--set", f"serve.tile_above_pixels={ABOVE}", "--set", f"serve.tile_size={TILE}",
            "--set", f"serve.tile_overlap={OVERLAP}"]
    assert cli_main("translate", "--model", str(exported[2]), "--direction", "AtoB", "--input", str(folder),
                    "--output", str(tmp_path / "onnx"), "--no-progress", *sets) == 0
    assert cli_main("translate", "--checkpoint", str(exported[1]), "--direction", "AtoB", "--input", str(folder),
                    "--output", str(tmp_path / "torch"), "--no-progress", *sets) == 0
    for name, array in images.items():
        onnx_out = np.asarray(Image.open(tmp_path / "onnx" / name), dtype=np.int16)
        torch_out = np.asarray(Image.open(tmp_path / "torch" / name), dtype=np.int16)
        assert onnx_out.shape == torch_out.shape == array.shape
        assert np.abs(onnx_out - torch_out).max() <= 1


@pytest.mark.slow   # exports the uint8 and int8 variants (int8 calibration)
def test_the_uint8_and_int8_variants_tile_too(exported, tmp_path):
    """The derived graphs work on the uint8 model (NHWC, normalisation inside) and on the int8
    model (quantised convolutions, fp32 instance norms) as on fp32."""
    from helpers import TESTS_PROFILE
    from helpers.serving import cli_main
    from serving.session import load_session
    from serving.tiling import load_tiler

    data, checkpoint, _ = exported
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "variants"), "--data", str(data),
                    "--params", str(TESTS_PROFILE), "--set", "export.uint8_variant=true", "--set",
                    "export.quantize=true", "--no-progress") == 0
    image = photo(150, 130, seed=11)[None]
    for variant, dtype in (("uint8", np.uint8), ("int8", np.float32)):
        session = load_session(tmp_path / "variants" / f"G_AtoB_{variant}.onnx")
        tiler, status = load_tiler(session, TILE, OVERLAP, 150 * 130 // 4)
        assert status == "on", status
        x = session.to_model_input(image)
        tiled, whole = tiler.translate(x), session.run_any_size(x)
        assert tiled.dtype == dtype and tiled.shape == whole.shape
        a, b = session.to_images(tiled).astype(float), session.to_images(whole).astype(float)
        assert 10 * np.log10(255 ** 2 / np.mean((a - b) ** 2)) >= 30.0, variant
