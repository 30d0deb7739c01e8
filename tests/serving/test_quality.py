"""The quality signal: the cycle PSNR as the evaluation computes it, the threshold export
records from an evaluation's metrics, the flag on /v1/translate (headers), v2 infer (outputs)
and `cyclegan translate --quality` (quality.csv, both paths), and that the return generator
runs only when asked."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from helpers import TESTS_PROFILE
from helpers.serving import cli, cli_main, shared_export, write_evaluation


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return shared_export(tmp_path_factory)


def images(count: int, h: int = 36, w: int = 44, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_cycle_psnr_is_the_evaluations():
    import torch

    from serving.quality import cycle_psnr
    from training.evaluation.metrics import psnr, to_unit

    rng = np.random.default_rng(0)
    x = rng.random((3, 3, 20, 24), dtype=np.float32) * 2 - 1
    rec = np.clip(x + rng.normal(0, 0.1, x.shape).astype(np.float32), -1.2, 1.2)
    expected = psnr(to_unit(torch.from_numpy(rec)), to_unit(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(cycle_psnr(x, rec, "NCHW"), expected, atol=1e-4)
    assert cycle_psnr(x, x, "NCHW").tolist() == [100.0] * 3           # capped, as the evaluation
    u8 = (rng.random((2, 8, 8, 3)) * 255).astype(np.uint8)
    np.testing.assert_allclose(cycle_psnr(u8, u8 // 2, "NHWC"),
                               cycle_psnr(u8.transpose(0, 3, 1, 2) / 127.5 - 1,
                                          (u8 // 2).transpose(0, 3, 1, 2) / 127.5 - 1, "NCHW"), atol=1e-6)


def test_the_csv_name_is_the_layouts():
    from serving.quality import QUALITY_CSV
    from training.layout import Translation

    assert Translation("out").quality.name == QUALITY_CSV


# -- the threshold at export ----------------------------------------------------------------------

def test_thresholds_follow_the_domains_and_the_checkpoint(tmp_path):
    from training.errors import UserError
    from training.export.quality import THRESHOLD_KEY, thresholds

    metrics = write_evaluation(tmp_path / "eval", "c" * 64, a=11.5, b=17.25)
    plain = thresholds(str(metrics), "AtoB", "c" * 64)
    assert plain["AtoB"][THRESHOLD_KEY] == "11.5000" and plain["BtoA"][THRESHOLD_KEY] == "17.2500"
    assert "5.0th percentile" in plain["AtoB"]["quality_threshold_source"]
    swapped = thresholds(str(metrics), "BtoA", "c" * 64)   # G_A then reads folder B
    assert swapped["AtoB"][THRESHOLD_KEY] == "17.2500"
    with pytest.raises(UserError, match="metrics are of checkpoint cccccccccccc"):
        thresholds(str(metrics), "AtoB", "d" * 64)
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"cycle_psnr_A": 20.0}))
    with pytest.raises(UserError, match="ood_cycle_psnr_A is missing"):
        thresholds(str(metrics), "AtoB", "c" * 64)


@pytest.fixture(scope="module")
def flagged(exported, tmp_path_factory):
    """The shared checkpoint exported with thresholds at the median cycle PSNR of six images
    (so some are flagged and some not), plus those images and their cycle PSNR."""
    from serving.quality import cycle_psnr
    from serving.session import load_session
    from training.utils import sha256_file

    _, checkpoint, plain = exported
    G, F = (load_session(plain / f"G_{d}.onnx") for d in ("AtoB", "BtoA"))
    pictures = images(6, seed=3)
    values = [float(cycle_psnr(G.to_model_input(a[None]), F.run_any_size(G.run_any_size(G.to_model_input(a[None]))),
                               "NCHW")[0]) for a in pictures]
    root = tmp_path_factory.mktemp("flagged")
    metrics = write_evaluation(root / "eval", sha256_file(checkpoint), a=float(np.median(values)), b=99.0)
    assert cli_main("export", "--checkpoint", str(checkpoint), "--out", str(root / "export"), "--metrics",
                    str(metrics), "--params", str(TESTS_PROFILE), "--no-progress") == 0
    return {"export": root / "export", "images": pictures, "psnr": values, "threshold": float(np.median(values)),
            "metrics": metrics, "checkpoint": checkpoint}


def test_export_records_the_threshold_in_each_model(flagged):
    import onnx

    meta = {d: {p.key: p.value for p in onnx.load(str(flagged["export"] / f"G_{d}.onnx")).metadata_props}
            for d in ("AtoB", "BtoA")}
    assert float(meta["AtoB"]["quality_threshold_db"]) == pytest.approx(flagged["threshold"], abs=1e-4)
    assert float(meta["BtoA"]["quality_threshold_db"]) == 99.0
    assert "testA" in meta["AtoB"]["quality_threshold_source"]


# -- serving --------------------------------------------------------------------------------------

class CountingSession:
    """An ORT session that counts its runs (what 'the return generator was not run' means)."""

    def __init__(self, session):
        self._session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self._session.run(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture(scope="module")
def client(flagged):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.config import load_serve_config
    from serving.session import load_session

    sessions = {d: load_session(flagged["export"] / f"G_{d}.onnx") for d in ("AtoB", "BtoA")}
    for session in sessions.values():
        session.session = CountingSession(session.session)
    cfg = load_serve_config({"tile_above_pixels": 64 * 64, "tile_size": 64, "tile_overlap": 16})
    app = create_app(sessions, cfg)
    with TestClient(app) as c:
        c.sessions, c.tilers = sessions, {m.direction: m.tiler for m in app.state.models.values()}
        yield c


def counted(client) -> dict[str, int]:
    """Runs so far per direction: the whole-image session and the derived tiling sessions."""
    out = {}
    for d, session in client.sessions.items():
        tiler = client.tilers[d]
        out[d] = session.session.runs + sum(getattr(s, "runs", 0) for s in
                                            [tiler.stats_session, tiler.tile_session, *tiler.sum_sessions])
    return out


@pytest.fixture(autouse=False)
def count_tiles(client):
    for tiler in client.tilers.values():
        for name in ("stats_session", "tile_session"):
            if not isinstance(getattr(tiler, name), CountingSession):
                setattr(tiler, name, CountingSession(getattr(tiler, name)))
        tiler.sum_sessions = [s if isinstance(s, CountingSession) else CountingSession(s) for s in tiler.sum_sessions]


@pytest.mark.parametrize("size", [(36, 44), (120, 100)], ids=["whole", "tiled"])
def test_the_return_generator_runs_only_when_asked(client, count_tiles, size):
    body = png(images(1, *size, seed=5)[0])
    before = counted(client)
    r = client.post("/v1/translate?direction=AtoB", content=body, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and "X-Cycle-PSNR" not in r.headers
    middle = counted(client)
    assert middle["BtoA"] == before["BtoA"] and middle["AtoB"] > before["AtoB"]
    r = client.post("/v1/translate?direction=AtoB&quality=true", content=body, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and "X-Cycle-PSNR" in r.headers
    after = counted(client)
    assert after["BtoA"] - middle["BtoA"] == after["AtoB"] - middle["AtoB"]   # one return pass, same shape
    assert (r.headers["X-Tiles"] != "0") == (size == (120, 100))


def test_v1_translate_reports_cycle_psnr_and_the_flag(client, flagged):
    for picture, value in zip(flagged["images"], flagged["psnr"]):
        r = client.post("/v1/translate?direction=AtoB&quality=true", content=png(picture),
                        headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        assert float(r.headers["X-Cycle-PSNR"]) == pytest.approx(value, abs=0.01)
        assert float(r.headers["X-Quality-Threshold"]) == pytest.approx(flagged["threshold"], abs=0.01)
        assert r.headers["X-Out-Of-Domain"] == ("true" if value < flagged["threshold"] else "false")
    flags = [v < flagged["threshold"] for v in flagged["psnr"]]
    assert any(flags) and not all(flags)


def test_v2_infer_returns_quality_outputs(client, flagged):
    x = np.stack([a.transpose(2, 0, 1) for a in flagged["images"][:4]]).astype(np.float32) / 127.5 - 1
    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "parameters": {"quality": True}}
    r = client.post("/v2/models/cyclegan-AtoB/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert set(out) == {"output", "cycle_psnr_db", "out_of_domain"}
    assert out["cycle_psnr_db"]["datatype"] == "FP32" and out["out_of_domain"]["datatype"] == "BOOL"
    np.testing.assert_allclose(out["cycle_psnr_db"]["data"], flagged["psnr"][:4], atol=0.01)
    assert out["out_of_domain"]["data"] == [v < flagged["threshold"] for v in flagged["psnr"][:4]]
    # asking for one quality output by name asks for quality too, and returns only what was asked
    body = {"inputs": body["inputs"], "outputs": [{"name": "cycle_psnr_db"}]}
    r = client.post("/v2/models/cyclegan-AtoB/infer", json=body)
    assert [o["name"] for o in r.json()["outputs"]] == ["cycle_psnr_db"]
    # tritonclient reads BOOL outputs in binary
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    request, json_size = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in ("output", "out_of_domain")],
        parameters={"quality": True})
    r = client.post("/v2/models/cyclegan-AtoB/infer", content=request,
                    headers={"Inference-Header-Content-Length": str(json_size)})
    result = httpclient.InferenceServerClient.parse_response_body(
        r.content, header_length=int(r.headers["Inference-Header-Content-Length"]))
    assert result.as_numpy("out_of_domain").tolist() == [v < flagged["threshold"] for v in flagged["psnr"][:4]]


def test_bad_quality_requests_are_400(client, exported):
    r = client.post("/v1/translate?quality=maybe", content=png(images(1)[0]), headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "quality" in r.json()["error"]
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    tensor = {"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": x.ravel().tolist()}
    r = client.post("/v2/models/cyclegan-AtoB/infer", json={"inputs": [tensor], "parameters": {"quality": "yes"}})
    assert r.status_code == 400 and r.json()["error"] == "parameters.quality: expected true or false, got 'yes'"


def test_a_model_without_threshold_reports_psnr_and_an_unknown_flag(exported):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.session import load_session

    sessions = {d: load_session(exported[2] / f"G_{d}.onnx") for d in ("AtoB", "BtoA")}
    with TestClient(create_app(sessions)) as c:
        r = c.post("/v1/translate?quality=true", content=png(images(1)[0]), headers={"Content-Type": "image/png"})
        assert r.status_code == 200 and float(r.headers["X-Cycle-PSNR"]) > 0
        assert r.headers["X-Out-Of-Domain"] == "unknown" and "X-Quality-Threshold" not in r.headers
        tensor = {"name": "input", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0.0] * 192}
        r = c.post("/v2/models/cyclegan-AtoB/infer", json={"inputs": [tensor], "parameters": {"quality": True}})
        assert [o["name"] for o in r.json()["outputs"]] == ["output", "cycle_psnr_db"]
        r = c.post("/v2/models/cyclegan-AtoB/infer", json={"inputs": [tensor], "outputs": [{"name": "out_of_domain"}]})
        assert r.status_code == 400 and "out_of_domain needs a quality threshold" in r.json()["error"]


# -- cyclegan translate --quality -----------------------------------------------------------------

def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_translate_quality_csv_on_both_paths(flagged, tmp_path):
    from PIL import Image

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    names = []
    for i, picture in enumerate(flagged["images"]):
        name = f"sub/img_{i}.png" if i % 2 else f"img_{i}.png"
        Image.fromarray(picture).save(folder / name)
        names.append(name)
    common = ["--direction", "AtoB", "--input", str(folder), "--no-progress", "--quality"]
    assert cli_main("translate", "--model", str(flagged["export"]), "--output", str(tmp_path / "onnx"), *common) == 0
    assert cli_main("translate", "--checkpoint", str(flagged["checkpoint"]), "--output", str(tmp_path / "torch"),
                    "--metrics", str(flagged["metrics"]), *common) == 0
    by_path = {}
    for path in ("onnx", "torch"):
        rows = read_csv(tmp_path / path / "quality.csv")
        assert list(rows[0]) == ["file", "cycle_psnr_db", "out_of_domain"]
        by_path[path] = {r["file"]: r for r in rows}
        assert set(by_path[path]) == set(names)
    for name, value in zip(names, flagged["psnr"]):
        for path in ("onnx", "torch"):
            row = by_path[path][name]
            assert float(row["cycle_psnr_db"]) == pytest.approx(value, abs=0.01)
            assert row["out_of_domain"] == ("true" if value < flagged["threshold"] else "false")
    # without --quality, no file; a threshold file without --quality, or with --model, is refused
    assert cli_main("translate", "--model", str(flagged["export"]), "--output", str(tmp_path / "plain"),
                    "--direction", "AtoB", "--input", str(folder), "--no-progress") == 0
    assert not (tmp_path / "plain" / "quality.csv").exists()
    assert cli_main("translate", "--model", str(flagged["export"]), "--output", str(tmp_path / "x"), "--metrics",
                    str(flagged["metrics"]), *common) == 2
    assert cli_main("translate", "--checkpoint", str(flagged["checkpoint"]), "--output", str(tmp_path / "y"),
                    "--metrics", str(flagged["metrics"]), "--direction", "AtoB", "--input", str(folder),
                    "--no-progress") == 2


def test_translate_quality_needs_the_other_generator(flagged, tmp_path):
    from PIL import Image

    Image.fromarray(flagged["images"][0]).save(tmp_path / "one.png")
    result = cli("translate", "--model", str(flagged["export"] / "G_AtoB.onnx"), "--direction", "AtoB",
                 "--input", str(tmp_path / "one.png"), "--output", str(tmp_path / "out"), "--quality",
                 "--no-progress", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == ("cyclegan translate: error: --quality: needs the BtoA generator too; "
                                     f"{flagged['export'] / 'G_AtoB.onnx'} has only AtoB (give the export folder "
                                     "or a registered version)")
