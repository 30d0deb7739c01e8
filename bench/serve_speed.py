"""Translation speed at 256x256, in one run: PyTorch eager vs ONNX Runtime vs the HTTP server vs int8.

  (a) PyTorch eager, inference mode, default threads, batch 1
  (b) ONNX Runtime, fp32, batch 1 (the exported model, graph optimisation on)
  (c) the HTTP server (`cyclegan serve`, v2 binary tensors via tritonclient) under concurrent load
  (d) ONNX Runtime, the int8 model (static QDQ quantisation), with its PSNR against fp32
  (e) ONNX Runtime, the fp16 model (`export.fp16_variant`) on the CPU provider, with its PSNR
      against fp32: fp16 is for GPUs; this row says what it costs where there is none
  (f) CUDA provider fp32, (g) CUDA provider fp16, (h) TensorRT provider with fp16 kernels,
      each with serve's GPU options (I/O binding, cuDNN search, TensorRT profile and cache):
      "not measured" without a CUDA device

The generator is the paper's (resnet_9blocks, ngf 64) with the authors' random
initialisation (N(0, 0.02)), exported and verified like `cyclegan export` does. Calibration
and PSNR images come from ../shared/datasets/horse2zebra.zip when it is there (read in
place, never extracted), random images otherwise.

Goals: (b) >= 1.0x (a), (c) >= 0.85x (b), (d) >= 1.5x (b) at >= 30 dB; (e) >= 40 dB (no speed goal on
a CPU); (g), (h) faster than (f) on a GPU.

    .venv/bin/python bench/serve_speed.py [--iters 20] [--requests 40] [--concurrency 4] [--json out.json]

Tiled translation (serving/tiling.py), ``--tiled``, instead of the rows (a)-(h):

  (i) peak memory (VmHWM of a fresh process that loads the paper generator and translates one
      image) against image size, whole and tiled (serve.* tiling defaults): flat past the tile size
      (whole stops at 3 MP: 4 MP and more would take most of a shared 23 GB machine)
  (j) speed of a tiled against a whole translation of an image that fits whole (--repeats each)
  (k) PSNR of the tiled output against the whole-image output, with --checkpoint's trained
      generator (exported here), on in-domain images and photos; PNGs of the output and of the
      difference (x8) go to --pictures for a person to look at

    .venv/bin/python bench/serve_speed.py --tiled --checkpoint RUN/checkpoints/latest.pt [--pictures DIR] [--json out.json]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ZIP = ROOT.parent / "shared" / "datasets" / "horse2zebra.zip"
SIZE = 256


def summary(latencies: list[float], wall: float, images: int) -> dict:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"images_per_s": images / wall, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "n": len(latencies)}


def timed_loop(fn, iters: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    latencies = []
    started = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - started, iters)


def domain_images(split: str, count: int, seed: int) -> list[np.ndarray]:
    """float 1 x 3 x 256 x 256 in [-1, 1]: horse2zebra images if available, else noise."""
    from PIL import Image

    if ZIP.is_file():
        with zipfile.ZipFile(ZIP) as z:
            names = sorted(n for n in z.namelist() if f"/{split}/" in n and n.endswith(".jpg"))[:count]
            arrays = []
            for name in names:
                with z.open(name) as f:
                    img = Image.open(f).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
                arrays.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None] / 127.5 - 1)
            return arrays
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) * 2 - 1 for _ in range(count)]


def build_models(folder: Path) -> tuple[object, dict]:
    """The paper generator, exported + verified (fp32) and quantised (int8) into ``folder``."""
    import torch

    from training.config import ExportConfig, ModelConfig
    from training.export.fp16 import convert_to_fp16
    from training.export.onnx import (
        NORMALISATION,
        check_model,
        compare_with_torch,
        export_onnx,
        finish_model,
        int8_report,
        quantize_int8,
    )
    from training.models.registry import build_generator

    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_9blocks", ngf=64)).eval()
    info = {}
    for direction in ("AtoB", "BtoA"):  # the server loads both; the benchmark times AtoB
        path = folder / f"G_{direction}.onnx"
        started = time.perf_counter()
        export_onnx(net, path, torch.zeros(1, 3, SIZE, SIZE), ExportConfig().opset, 4)
        finish_model(path, {"direction": direction, "variant": "fp32", "layout": "NCHW", "dtype": "float32",
                            "training_size": SIZE, "size_multiple": 4, "min_size": 8, "normalisation": NORMALISATION})
        check_model(path)
        if direction == "AtoB":
            info["export_s"] = time.perf_counter() - started
            info["verify"] = compare_with_torch(path, net, [(1, SIZE, SIZE), (2, 64, 64)], 3, "NCHW", 1e-4)
    started = time.perf_counter()
    quantize_int8(folder / "G_AtoB.onnx", folder / "G_AtoB_int8.onnx", domain_images("trainA", 32, 1))
    info["quantize_s"] = time.perf_counter() - started
    info["int8"] = int8_report(folder / "G_AtoB.onnx", folder / "G_AtoB_int8.onnx", domain_images("testA", 16, 2))
    started = time.perf_counter()
    convert_to_fp16(folder / "G_AtoB.onnx", folder / "G_AtoB_fp16.onnx")
    finish_model(folder / "G_AtoB_fp16.onnx", {"direction": "AtoB", "variant": "fp16", "layout": "NCHW",
                                               "dtype": "float32", "precision": "float16", "training_size": SIZE,
                                               "size_multiple": 4, "min_size": 8, "normalisation": NORMALISATION})
    check_model(folder / "G_AtoB_fp16.onnx")
    info["fp16_convert_s"] = time.perf_counter() - started
    info["fp16"] = int8_report(folder / "G_AtoB.onnx", folder / "G_AtoB_fp16.onnx", domain_images("testA", 16, 2),
                               goal_db=40.0)
    info["images"] = "horse2zebra trainA (32, calibration) / testA (16, PSNR)" if ZIP.is_file() else "random noise"
    return net, info


def bench_server(folder: Path, x: np.ndarray, requests: int, concurrency: int, max_batch: int) -> dict:
    import socket

    import httpx
    import tritonclient.http as httpclient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CYCLEGAN_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", "serve", "--model", str(folder), "--port", str(port),
                             "--set", f"serve.max_batch_size={max_batch}", "--set", "serve.variant=fp32"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.5)

        # tritonclient's own transport is gevent-based and not thread-safe, so the body is
        # built and the answer parsed by tritonclient, and threads send them with httpx.
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
        headers = {"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}
        url = f"http://127.0.0.1:{port}/v2/models/cyclegan-AtoB/infer"
        clients = [httpx.Client(timeout=300) for _ in range(concurrency)]

        def one(i: int) -> float:
            t = time.perf_counter()
            response = clients[i % concurrency].post(url, content=body, headers=headers)
            elapsed = time.perf_counter() - t
            response.raise_for_status()
            result = httpclient.InferenceServerClient.parse_response_body(
                response.content, header_length=int(response.headers["Inference-Header-Content-Length"]))
            assert result.as_numpy("output").shape == x.shape
            return elapsed

        for i in range(concurrency):  # warm the connections and the batch shapes
            one(i)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            latencies = list(pool.map(one, range(requests)))
        result = summary(latencies, time.perf_counter() - started, requests)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        total = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("cyclegan_batch_size_sum"))
        count = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("cyclegan_batch_size_count"))
        result["mean_batch"] = total / count if count else 0.0
        return result
    finally:
        proc.terminate()
        proc.wait(60)


# (f), (g), (h): label, provider, model file, serve: settings, goal
GPU_ROWS = {
    "f_cuda_fp32": ("(f) CUDA provider, fp32", "cuda", "G_AtoB.onnx", {}, "the GPU baseline"),
    "g_cuda_fp16": ("(g) CUDA provider, fp16 model", "cuda", "G_AtoB_fp16.onnx", {}, "> (f)"),
    "h_tensorrt_fp16": ("(h) TensorRT, fp16 kernels", "tensorrt", "G_AtoB.onnx", {"trt_fp16": True}, "> (f)"),
}


def bench_gpu(folder: Path, x: np.ndarray, iters: int, max_batch: int) -> dict:
    """(f)-(h) through serving's load_session (the options `cyclegan serve` uses), or why not."""
    import torch

    from serving.config import ServeConfig
    from serving.errors import ServingError
    from serving.session import load_session

    results = {}
    for key, (_, provider, file, settings, _) in GPU_ROWS.items():
        if not torch.cuda.is_available():
            results[key] = {"not_measured": "no CUDA device"}
            continue
        cfg = ServeConfig(provider=provider, max_batch_size=max_batch, trt_cache_dir=str(folder / "trt-cache"),
                          trt_opt_side=SIZE, trt_max_side=SIZE, **settings)
        try:
            started = time.perf_counter()
            session = load_session(folder / file, provider, settings=cfg)   # TensorRT builds its engine here
            load_s = time.perf_counter() - started
        except ServingError as e:
            results[key] = {"not_measured": str(e)[:200]}
            continue
        results[key] = {**timed_loop(functools.partial(session.run, x), iters), "load_s": load_s}
    return results


# -- tiled translation ---------------------------------------------------------------------------

def memory_child(model: str, h: int, w: int, mode: str) -> None:
    """In a fresh process: load ``model``, translate one h x w image whole or tiled (serve.*
    defaults), print the peak resident memory (VmHWM) and the time as JSON."""
    from serving.config import ServeConfig
    from serving.session import load_session
    from serving.tiling import load_tiler

    def rss_mb(key: str = "VmRSS") -> float:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(key))) / 1024

    cfg = ServeConfig()
    session = load_session(model, warm_up=False)
    generator_only = rss_mb()
    tiler, _ = load_tiler(session, cfg.tile_size, cfg.tile_overlap, cfg.tile_above_pixels, cfg.tile_exact_norms)
    loaded = rss_mb()
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32) * 2 - 1
    started = time.perf_counter()
    y = tiler.translate(x) if mode == "tiled" else session.run_any_size(x)
    seconds = time.perf_counter() - started
    assert y.shape == x.shape
    print(json.dumps({"peak_rss_mb": rss_mb("VmHWM"), "seconds": seconds, "rss_generator_loaded_mb": generator_only,
                      "rss_with_tiling_models_mb": loaded, "tiles": tiler.plan(h, w).tiles if mode == "tiled" else 0}))


def measure_memory(model: Path, h: int, w: int, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(model), str(h), str(w), mode],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {h}x{w} {mode} failed: {out.stderr[-2000:]}")
    return {"height": h, "width": w, "mode": mode, **json.loads(out.stdout.strip().splitlines()[-1])}


def export_checkpoint(checkpoint: str, folder: Path) -> None:
    from training.config import ExportConfig
    from training.export.onnx import export_generators

    folder.mkdir(parents=True, exist_ok=True)
    export_generators(checkpoint, folder, ExportConfig(verify_sizes=[64], verify_batches=[1]), progress=False)


def test_pictures(h: int, w: int) -> dict[str, np.ndarray]:
    """uint8 h x w x 3: two in-domain synthetic images (rendered at this size) and two
    horse2zebra photos (bicubic to this size) when the zip is there."""
    from PIL import Image

    from training.prepare.synthetic import image_rng, render

    side = max(h, w)
    pictures = {f"synthetic_A{i}": render(image_rng(7, "test", "A", i), side, "A")[:h, :w] for i in range(2)}
    if ZIP.is_file():
        with zipfile.ZipFile(ZIP) as z:
            names = sorted(n for n in z.namelist() if "/testA/" in n and n.endswith(".jpg"))[:2]
            for name in names:
                with z.open(name) as f:
                    img = Image.open(f).convert("RGB").resize((w, h), Image.BICUBIC)
                pictures[f"horse_{Path(name).stem}"] = np.asarray(img)
    return pictures


def bench_tiled(args) -> dict:
    import onnxruntime as ort

    from training.export.onnx import psnr_uint8

    from serving.config import ServeConfig
    from serving.session import load_session
    from serving.tiling import load_tiler

    cfg = ServeConfig()
    report: dict = {"settings": {k: getattr(cfg, k) for k in ("tile_above_pixels", "tile_size", "tile_overlap",
                                                              "tile_exact_norms")},
                    "machine": {"cores": os.cpu_count(), "onnxruntime": ort.__version__,
                                "loadavg_1m_start": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory(prefix="serve-tiled-") as tmp:
        folder = Path(tmp)
        # (i) memory: the paper generator (memory does not depend on its weights)
        build_paper(folder / "paper")
        rows = []
        for h, w, modes in args.memory_sizes:
            for mode in modes:
                row = measure_memory(folder / "paper" / "G_AtoB.onnx", h, w, mode)
                rows.append(row)
                print(f"(i) {h}x{w} {mode}: peak {row['peak_rss_mb']:.0f} MB, {row['seconds']:.1f} s, "
                      f"{row['tiles']} tiles (loaded: {row['rss_generator_loaded_mb']:.0f} MB, with the tiling "
                      f"models {row['rss_with_tiling_models_mb']:.0f} MB)", flush=True)
        report["memory"] = rows
        # (j), (k): a trained generator
        export_checkpoint(args.checkpoint, folder / "trained")
        session = load_session(folder / "trained" / "G_AtoB.onnx")
        h, w = args.fits_whole
        variants = {"default": cfg.tile_exact_norms, "exact 0": 0, "exact all": 999}
        tilers = {name: load_tiler(session, cfg.tile_size, cfg.tile_overlap, cfg.tile_above_pixels, k)[0]
                  for name, k in variants.items()}
        pictures = test_pictures(h, w)
        x0 = session.to_model_input(next(iter(pictures.values()))[None])
        speed = {"whole": [], "tiled": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            session.run_any_size(x0)
            speed["whole"].append(time.perf_counter() - t)
            t = time.perf_counter()
            tilers["default"].translate(x0)
            speed["tiled"].append(time.perf_counter() - t)
        report["speed"] = {"size": [h, w], "tiles": tilers["default"].plan(h, w).tiles,
                           "calls": tilers["default"].plan(h, w).calls, "seconds": speed}
        print(f"(j) {h}x{w}: whole {min(speed['whole']):.1f}-{max(speed['whole']):.1f} s, tiled "
              f"{min(speed['tiled']):.1f}-{max(speed['tiled']):.1f} s ({args.repeats} runs each)", flush=True)
        quality = []
        for name, picture in pictures.items():
            x = session.to_model_input(picture[None])
            whole = session.run_any_size(x)
            row = {"image": name}
            for variant, tiler in tilers.items():
                tiled = tiler.translate(x)
                row[variant] = psnr_uint8(tiled, whole)   # the export's own uint8 PSNR
                if variant == "default" and args.pictures:
                    save_pictures(Path(args.pictures), name, picture, session.to_images(whole)[0],
                                  session.to_images(tiled)[0], tiler.plan(h, w))
            quality.append(row)
            print(f"(k) {name} {h}x{w}: " + ", ".join(f"{k} {v:.1f} dB" for k, v in row.items() if k != "image"),
                  flush=True)
        report["psnr_tiled_vs_whole"] = {"size": [h, w], "rows": quality}
    report["machine"]["loadavg_1m_end"] = os.getloadavg()[0]
    return report


def build_paper(folder: Path) -> None:
    """The paper generator (random init) exported like build_models does, fp32 only."""
    import torch

    from training.config import ExportConfig, ModelConfig
    from training.export.onnx import NORMALISATION, check_model, export_onnx, finish_model
    from training.models.registry import build_generator

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = build_generator(ModelConfig(netG="resnet_9blocks", ngf=64)).eval()
    path = folder / "G_AtoB.onnx"
    export_onnx(net, path, torch.zeros(1, 3, SIZE, SIZE), ExportConfig().opset, 4)
    finish_model(path, {"direction": "AtoB", "variant": "fp32", "layout": "NCHW", "dtype": "float32",
                        "training_size": SIZE, "size_multiple": 4, "min_size": 8, "normalisation": NORMALISATION})
    check_model(path)


def save_pictures(folder: Path, name: str, picture, whole, tiled, plan) -> None:
    """input, whole, tiled, |tiled - whole| x 8 (with the tile grid drawn faintly) as PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    diff = np.clip(np.abs(tiled.astype(np.int16) - whole.astype(np.int16)) * 8, 0, 255).astype(np.uint8)
    grid = diff.copy()
    th, tw = plan.tile
    for y0 in plan.rows:
        grid[min(y0, grid.shape[0] - 1), :, 2] = 96
        grid[min(y0 + th - 1, grid.shape[0] - 1), :, 2] = 96
    for x0 in plan.cols:
        grid[:, min(x0, grid.shape[1] - 1), 2] = 96
        grid[:, min(x0 + tw - 1, grid.shape[1] - 1), 2] = 96
    for label, array in (("input", picture), ("whole", whole), ("tiled", tiled), ("diff_x8", diff),
                         ("diff_x8_grid", grid)):
        Image.fromarray(array).save(folder / f"{name}_{label}.png")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20, help="timed single-image calls for (a), (b), (d)")
    parser.add_argument("--requests", type=int, default=40, help="HTTP requests for (c)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients for (c)")
    parser.add_argument("--max-batch", type=int, default=4, help="serve.max_batch_size for (c)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--tiled", action="store_true", help="the tiled-translation rows (i)-(k) instead")
    parser.add_argument("--checkpoint", default=None, help="--tiled: a trained checkpoint for (j) and (k)")
    parser.add_argument("--pictures", default=None, help="--tiled: write input/whole/tiled/difference PNGs here")
    parser.add_argument("--repeats", type=int, default=3, help="--tiled: runs of each mode for (j)")
    parser.add_argument("--fits-whole", type=int, nargs=2, default=[1536, 2048], metavar=("H", "W"),
                        help="--tiled: the image size of (j) and (k) (it must fit whole)")
    args = parser.parse_args()
    if args.tiled:
        if not args.checkpoint:
            parser.error("--tiled needs --checkpoint (a trained generator for the PSNR rows)")
        # (height, width, modes): whole only where it fits this machine's memory
        args.memory_sizes = [(1024, 1024, ("whole", "tiled")), (1536, 2048, ("whole", "tiled")),
                             (2048, 2048, ("tiled",)), (3000, 4000, ("tiled",))]
        report = bench_tiled(args)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return

    import onnxruntime as ort
    import torch

    from serving.session import load_session

    with tempfile.TemporaryDirectory(prefix="serve-speed-") as tmp:
        folder = Path(tmp)
        net, info = build_models(folder)
        x = domain_images("testA", 1, 3)[0]
        xt = torch.from_numpy(x)
        results = {}
        with torch.inference_mode():
            results["a_pytorch_eager"] = timed_loop(lambda: net(xt), args.iters)
        fp32 = load_session(folder / "G_AtoB.onnx")
        results["b_ort_fp32"] = timed_loop(functools.partial(fp32.run, x), args.iters)
        int8 = load_session(folder / "G_AtoB_int8.onnx")
        results["d_ort_int8"] = timed_loop(functools.partial(int8.run, x), args.iters)
        fp16 = load_session(folder / "G_AtoB_fp16.onnx")
        results["e_ort_fp16_cpu"] = timed_loop(functools.partial(fp16.run, x), args.iters)
        del fp32, int8, fp16  # free the cores' caches for the server process
        results.update(bench_gpu(folder, x, args.iters, args.max_batch))
        results["c_http_server"] = bench_server(folder, x, args.requests, args.concurrency, args.max_batch)

    a, b, c, d, e = (results[k]["images_per_s"] for k in ("a_pytorch_eager", "b_ort_fp32", "c_http_server", "d_ort_int8",
                                                          "e_ort_fp16_cpu"))
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "onnxruntime": ort.__version__, "torch": torch.__version__,
                    "loadavg_1m": os.getloadavg()[0]},
        "size": SIZE, "model": "resnet_9blocks ngf 64 (random init)", **info, "results": results,
        "ratios": {"b_over_a": b / a, "c_over_b": c / b, "d_over_b": d / b, "e_over_b": e / b},
        "goals": {"b_over_a": 1.0, "c_over_b": 0.85, "d_over_b": 1.5, "int8_psnr_db": 30.0, "fp16_psnr_db": 40.0},
        "settings": vars(args),
    }
    print(f"\n256x256, resnet_9blocks ngf 64, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"export {info['export_s']:.1f} s, verify max abs diff {info['verify']['max_abs_diff']:.2g}, "
          f"quantise {info['quantize_s']:.1f} s, int8 PSNR {info['int8']['psnr_db_mean']:.2f} dB "
          f"(min {info['int8']['psnr_db_min']:.2f}) on {info['images']}")
    print(f"fp16 conversion {info['fp16_convert_s']:.1f} s, fp16 PSNR {info['fp16']['psnr_db_mean']:.2f} dB "
          f"(min {info['fp16']['psnr_db_min']:.2f}) on the same test images")
    print("| mode | images/s | p50 ms | p99 ms | vs (b) | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [("(a) PyTorch eager", "a_pytorch_eager", a / b, "(b) >= 1.0x (a)"),
            ("(b) ORT fp32", "b_ort_fp32", 1.0, f"{b / a:.2f}x (a)"),
            (f"(c) HTTP server, {args.concurrency} clients", "c_http_server", c / b, ">= 0.85x (b)"),
            ("(d) ORT int8", "d_ort_int8", d / b, ">= 1.5x (b), >= 30 dB"),
            ("(e) ORT fp16, CPU provider", "e_ort_fp16_cpu", e / b, ">= 40 dB (fp16 is for GPUs)")]
    rows += [(label, key, None, goal) for key, (label, *_rest, goal) in GPU_ROWS.items()]
    for label, key, ratio, goal in rows:
        r = results[key]
        if "not_measured" in r:
            print(f"| {label} | not measured | - | - | - | {goal} ({r['not_measured']}) |")
            continue
        shown = f"{ratio:.2f}x" if ratio is not None else f"{r['images_per_s'] / b:.2f}x"
        print(f"| {label} | {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {shown} | {goal} |")
    print(f"(c) mean batch size at the server: {results['c_http_server']['mean_batch']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
