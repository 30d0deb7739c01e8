"""cyclegan prepare on local folders: layouts, validation, splits, manifest, atomic output."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import CYCLEGAN, ROOT
from helpers.prepare import cfg, every_kind, jpeg_with_orientation, write_rgb
from training.prepare import prepare as prep
from training.prepare.manifest import MANIFEST, manifest_hash, read_manifest
from training.errors import UserError


def _folder(root, names, seed=0, size=(40, 30)):
    for i, name in enumerate(names):
        write_rgb(root / name, *size, seed=seed + i)
    return root


def _standard(root, n=(4, 3, 2, 2)):
    for k, (split, count) in enumerate(zip(("trainA", "trainB", "testA", "testB"), n)):
        _folder(root, [f"{split}/img_{i}.png" for i in range(count)], seed=100 * k)
    return root


def _manifest(out):
    return json.loads((out / MANIFEST).read_text())


def _reasons(manifest):
    return {entry["path"]: entry["reason"] for entry in manifest["skipped"]}


# -- the synthetic default ---------------------------------------------------------------------

def test_synthetic_default_is_deterministic_and_loadable(tmp_path):
    from training.config import DataConfig
    from training.data.dataset import UnalignedDataset

    s1 = prep.prepare(cfg(), None, str(tmp_path / "one"), progress=False)
    s2 = prep.prepare(cfg(), "synthetic", str(tmp_path / "two"), progress=False)
    assert s1["counts"] == {"trainA": 12, "trainB": 12, "testA": 6, "testB": 6}
    assert s1["copied"] == 36 and s1["skipped"] == 0
    assert (tmp_path / "one" / MANIFEST).read_bytes() == (tmp_path / "two" / MANIFEST).read_bytes()
    assert s1["test_set_hash"] == s2["test_set_hash"] == manifest_hash(tmp_path / "one")
    manifest = _manifest(tmp_path / "one")
    assert manifest["source"]["kind"] == "synthetic" and manifest["params"]["synthetic_size"] == 32
    entry = manifest["splits"]["testA"][0]
    assert set(entry) == {"path", "size", "sha256", "source"}
    assert (tmp_path / "one" / entry["path"]).stat().st_size == entry["size"]
    ds = UnalignedDataset(tmp_path / "one", DataConfig(load_size=32, crop_size=32), "test")
    assert len(ds) == 6


def test_worker_pool_gives_the_same_manifest(tmp_path):
    """Two processes and in-process work write byte-identical output."""
    small = dict(synthetic_train=40, synthetic_test=10)
    prep.prepare(cfg(workers=2, **small), "synthetic", str(tmp_path / "pool"), progress=False)
    prep.prepare(cfg(workers=0, **small), "synthetic", str(tmp_path / "inline"), progress=False)
    assert (tmp_path / "pool" / MANIFEST).read_bytes() == (tmp_path / "inline" / MANIFEST).read_bytes()


def test_manifest_hash_without_manifest_matches(tmp_path):
    prep.prepare(cfg(), "synthetic", str(tmp_path / "out"), progress=False)
    with_manifest = manifest_hash(tmp_path / "out")
    assert manifest_hash(tmp_path / "out", splits=("trainA",)) != with_manifest
    (tmp_path / "out" / MANIFEST).unlink()
    assert manifest_hash(tmp_path / "out") == with_manifest
    assert read_manifest(tmp_path / "out") is None


# -- validation --------------------------------------------------------------------------------

def test_every_kind_of_file(tmp_path):
    src = tmp_path / "src"
    expected = every_kind(src / "trainA")
    _folder(src, ["trainB/b0.png", "trainB/b1.png", "testA/t.png", "testB/t.png"], seed=50)
    summary = prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    manifest = _manifest(tmp_path / "out")
    reasons = _reasons(manifest)
    kept = {e["source"]: e for e in manifest["splits"]["trainA"]}
    for name, outcome in expected.items():
        source = f"trainA/{name}"
        if outcome in ("copied", "converted"):
            assert source in kept, (name, reasons.get(source))
            out = tmp_path / "out" / kept[source]["path"]
            with Image.open(out) as img:
                assert img.mode == "RGB", name
                if img.format == "PNG":
                    assert out.read_bytes()[24] == 8, f"{name}: not 8-bit"
            if outcome == "copied":
                assert out.read_bytes() == (src / source).read_bytes(), name
        else:
            assert reasons[source].startswith(outcome), (name, reasons.get(source))
    assert reasons["trainA/plain_copy.png"] == "duplicate: same bytes as trainA/plain.png"
    assert summary["skipped"] == len(manifest["skipped"]) == sum(
        1 for o in expected.values() if o not in ("copied", "converted"))
    assert summary["skipped_by_reason"]["corrupt"] == 1
    # Names: spaces, non-ASCII and nesting survive; upper-case extensions are normalised.
    assert "trainA/sub dir/nested ü.jpg" in {e["path"] for e in kept.values()}
    assert kept["trainA/photo.JPG"]["path"] == "trainA/photo.jpg"
    # EXIF orientation 6 on a 40x20 image: the stored pixels are 20 wide and 40 high.
    with Image.open(tmp_path / "out" / kept["trainA/rotated.jpg"]["path"]) as img:
        assert img.size == (20, 40)
    # 16-bit greyscale is scaled down, not clipped to white.
    with Image.open(tmp_path / "out" / kept["trainA/grey16.png"]["path"]) as img:
        assert 60 < np.asarray(img).mean() < 200


def test_exact_duplicates_keep_the_first_in_path_order(tmp_path):
    src = _standard(tmp_path / "src")
    shutil.copy(src / "trainA" / "img_0.png", src / "trainA" / "zz_copy.png")
    shutil.copy(src / "testA" / "img_0.png", src / "trainA" / "leak.png")  # test image repeated in train
    prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    manifest = _manifest(tmp_path / "out")
    reasons = _reasons(manifest)
    assert reasons["trainA/zz_copy.png"] == "duplicate: same bytes as trainA/img_0.png"
    assert reasons["trainA/leak.png"] == "duplicate: same bytes as testA/img_0.png"
    assert manifest["counts"] == {"trainA": 4, "trainB": 3, "testA": 2, "testB": 2}


def test_decompression_bomb_is_skipped_before_decoding(tmp_path, monkeypatch):
    src = _standard(tmp_path / "src")
    from helpers.prepare import bomb_png

    bomb_png(src / "trainB" / "bomb.png", side=200_000)
    decoded = []
    real_load = Image.Image.load

    def spy(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy)
    prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    assert (200_000, 200_000) not in decoded
    assert _reasons(_manifest(tmp_path / "out"))["trainB/bomb.png"].startswith("too large: the header claims 200000x200000")
    # The limit is a parameter: a lower one skips ordinary images too.
    with pytest.raises(UserError, match="domain A"):
        prep.prepare(cfg(max_pixels=1000), str(src), str(tmp_path / "out2"), progress=False)


@pytest.mark.parametrize("policy", ["upscale", "reject"])
def test_small_images(tmp_path, policy):
    src = _standard(tmp_path / "src")
    write_rgb(src / "trainA" / "tiny.png", 20, 10, seed=9)
    prep.prepare(cfg(min_size=30, small_images=policy), str(src), str(tmp_path / "out"), progress=False)
    manifest = _manifest(tmp_path / "out")
    if policy == "reject":
        assert _reasons(manifest)["trainA/tiny.png"].startswith("too small: 20x10")
    else:
        with Image.open(tmp_path / "out" / "trainA" / "tiny.png") as img:
            assert img.size == (60, 30)
        with Image.open(tmp_path / "out" / "trainA" / "img_0.png") as img:
            assert img.size == (40, 30)  # already large enough: untouched


def test_resize_to_cache_resolution(tmp_path):
    src = tmp_path / "src"
    for k, split in enumerate(("trainA", "trainB", "testA", "testB")):
        for i in range(2):
            write_rgb(src / split / f"p{i}.jpg", 200, 100, seed=10 * k + i, fmt="JPEG")
    summary = prep.prepare(cfg(resize_to=32), str(src), str(tmp_path / "out"), progress=False)
    assert summary["resized"] == 8 and summary["copied"] == 0
    for path in (tmp_path / "out").rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.size == (64, 32) and img.format == "JPEG"
    # Same run again: identical bytes (the reduced JPEG decode is deterministic too).
    prep.prepare(cfg(resize_to=32), str(src), str(tmp_path / "again"), progress=False)
    assert (tmp_path / "out" / MANIFEST).read_bytes() == (tmp_path / "again" / MANIFEST).read_bytes()


def test_exif_orientation_with_resize(tmp_path):
    src = _standard(tmp_path / "src")
    jpeg_with_orientation(src / "trainA" / "r.jpg", 80, 40, orientation=8)
    prep.prepare(cfg(resize_to=20), str(src), str(tmp_path / "out"), progress=False)
    with Image.open(tmp_path / "out" / "trainA" / "r.jpg") as img:
        assert img.size == (20, 40)


# -- empty domains and bad parameters ----------------------------------------------------------

def test_empty_domain_is_an_error_naming_it(tmp_path):
    src = _standard(tmp_path / "src")
    for path in (src / "trainB").iterdir():
        path.write_bytes(b"broken")
    with pytest.raises(UserError, match=r"domain B \(trainB\) is empty after validation.*3 not an image"):
        prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no temporary folder left behind


def test_empty_domain_cli_exit_code(tmp_path, cli_env):
    src = _standard(tmp_path / "src")
    shutil.rmtree(src / "trainA")
    (src / "trainA").mkdir()
    (src / "trainA" / "readme.txt").write_text("no images")
    result = subprocess.run([*CYCLEGAN, "prepare", "--source", str(src), "--out", str(tmp_path / "out"),
                             "--no-progress", "--set", "prepare.workers=0"],
                            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "domain A (trainA) is empty" in result.stderr


@pytest.mark.parametrize("key,value,message", [
    ("test_fraction", 1.0, "prepare.test_fraction"),
    ("resize_to", -1, "prepare.resize_to"),
    ("jpeg_quality", 0, "prepare.jpeg_quality"),
    ("synthetic_size", 8, "prepare.synthetic_size"),
])
def test_bad_parameters(tmp_path, key, value, message):
    with pytest.raises(UserError, match=message):
        prep.prepare(cfg(**{key: value}), "synthetic", str(tmp_path / "out"), progress=False)


def test_unknown_source(tmp_path):
    with pytest.raises(UserError, match="known dataset names: apple2orange"):
        prep.prepare(cfg(), "horse2zebraa", str(tmp_path / "out"), progress=False)
    with pytest.raises(UserError, match="no such file or folder"):
        prep.prepare(cfg(), str(tmp_path / "missing.zip"), str(tmp_path / "out"), progress=False)


# -- layouts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout,folders", [
    ("trainA/trainB/testA/testB", {"A": "trainA", "B": "trainB", "tA": "testA", "tB": "testB"}),
    ("train/{A,B} + test/{A,B}", {"A": "train/A", "B": "train/B", "tA": "test/A", "tB": "test/B"}),
    ("{A,B}/{train,test}", {"A": "a/Train", "B": "b/Train", "tA": "a/test", "tB": "b/test"}),
])
def test_detected_layouts_with_test_splits(tmp_path, layout, folders):
    src = tmp_path / "src"
    for key, folder in folders.items():
        _folder(src / "wrapper", [f"{folder}/x{i}.png" for i in range(3 if key in "AB" else 2)], seed=hash(key) % 1000)
    (src / "README.md").write_text("a wrapper folder and a loose file are skipped over")
    summary = prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    assert summary["layout"] == layout
    assert summary["counts"] == {"trainA": 3, "trainB": 3, "testA": 2, "testB": 2}


def test_a_b_layout_splits_by_content_hash_stably(tmp_path):
    src = tmp_path / "src"
    _folder(src, [f"A/a{i}.png" for i in range(30)], seed=0)
    _folder(src, [f"B/b{i}.png" for i in range(30)], seed=1000)
    summary = prep.prepare(cfg(test_fraction=0.3), str(src), str(tmp_path / "one"), progress=False)
    assert summary["layout"] == "A/B"
    first = _manifest(tmp_path / "one")
    assert 0 < summary["counts"]["testA"] < 30 and summary["counts"]["trainA"] + summary["counts"]["testA"] == 30
    # Add files: every old file stays on its side.
    _folder(src, [f"A/new{i}.png" for i in range(20)], seed=5000)
    prep.prepare(cfg(test_fraction=0.3), str(src), str(tmp_path / "two"), progress=False)
    second = _manifest(tmp_path / "two")
    side = {e["source"]: split for split, es in second["splits"].items() for e in es}
    for split, es in first["splits"].items():
        for e in es:
            assert side[e["source"]] == split


def test_tiny_domain_still_gets_a_test_image(tmp_path):
    src = tmp_path / "src"
    _folder(src, ["A/a0.png", "A/a1.png", "B/b0.png", "B/b1.png"], seed=0)
    summary = prep.prepare(cfg(test_fraction=0.01), str(src), str(tmp_path / "out"), progress=False)
    assert summary["counts"] == {"trainA": 1, "trainB": 1, "testA": 1, "testB": 1}


def test_named_domains_with_globs(tmp_path):
    src = tmp_path / "src"
    _folder(src, [f"photos/cats/c{i}.JPG" for i in range(4)] + [f"photos/dogs/d{i}.png" for i in range(4)]
            + ["photos/cats/held out/h.png", "photos/dogs/held out/h.png"], seed=0)
    summary = prep.prepare(cfg(domain_a="photos/cat*", domain_b="photos/dogs", test_a="**/cats/held out",
                               test_b="photos/dogs/held out/*.png"),
                           str(src), str(tmp_path / "out"), progress=False)
    assert summary["counts"] == {"trainA": 4, "trainB": 4, "testA": 1, "testB": 1}
    manifest = _manifest(tmp_path / "out")
    assert {e["path"] for e in manifest["splits"]["trainA"]} == {f"trainA/cats/c{i}.jpg" for i in range(4)}
    assert manifest["splits"]["testB"][0]["path"] == "testB/h.png"


def test_layout_errors(tmp_path):
    src = tmp_path / "src"
    _folder(src, ["horses/h0.png", "zebras/z0.png"], seed=0)
    with pytest.raises(UserError, match="cannot detect the layout.*horses, zebras.*prepare.domain_a"):
        prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    with pytest.raises(UserError, match="prepare.domain_b: 'giraffes' matches no files"):
        prep.prepare(cfg(domain_a="horses", domain_b="giraffes"), str(src), str(tmp_path / "out"), progress=False)
    with pytest.raises(UserError, match="name both domains"):
        prep.prepare(cfg(domain_a="horses"), str(src), str(tmp_path / "out"), progress=False)
    with pytest.raises(UserError, match="both domains"):
        prep.prepare(cfg(domain_a="*", domain_b="zebras"), str(src), str(tmp_path / "out"), progress=False)
    summary = prep.prepare(cfg(domain_a="horses", domain_b="zebras", test_fraction=0.0), str(src),
                           str(tmp_path / "out"), progress=False)
    assert summary["counts"]["trainA"] == 1 and summary["warnings"]


# -- links and atomic output ---------------------------------------------------------------------

def test_links_outside_the_source_are_rejected(tmp_path):
    secret = write_rgb(tmp_path / "outside" / "secret.png", seed=77)
    (tmp_path / "outside" / "more").mkdir()
    write_rgb(tmp_path / "outside" / "more" / "m.png", seed=78)
    src = _standard(tmp_path / "src")
    os.symlink(secret, src / "trainA" / "link.png")
    os.symlink(tmp_path / "outside" / "more", src / "trainB" / "linked dir")
    os.symlink(src / "trainA" / "img_1.png", src / "trainB" / "inside.png")  # inside the source: followed
    os.symlink(src / "trainA", src / "trainA" / "loop")
    prep.prepare(cfg(), str(src), str(tmp_path / "out"), progress=False)
    manifest = _manifest(tmp_path / "out")
    reasons = _reasons(manifest)
    assert reasons["trainA/link.png"].startswith("link outside the source")
    assert reasons["trainB/linked dir"].startswith("link outside the source")
    assert reasons["trainA/loop"].startswith("link loop")
    assert "trainB/inside.png" in {e["source"] for e in manifest["splits"]["trainB"]}
    sources = {e["source"] for es in manifest["splits"].values() for e in es}
    assert not any("secret" in s or "m.png" in s for s in sources)


def test_failure_midway_keeps_the_previous_output(tmp_path, monkeypatch):
    src = _standard(tmp_path / "src")
    out = tmp_path / "out"
    prep.prepare(cfg(), str(src), str(out), progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _folder(src, [f"trainA/new_{i}.png" for i in range(5)], seed=900)

    calls = {"n": 0}
    real = prep.process_bytes

    def dies_on_the_fourth(data, opts):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C half-way
        return real(data, opts)

    monkeypatch.setattr(prep, "process_bytes", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(cfg(), str(src), str(out), progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]

    monkeypatch.setattr(prep, "process_bytes", real)
    prep.prepare(cfg(), str(src), str(out), progress=False)
    assert _manifest(out)["counts"]["trainA"] == 9


def test_cli_prepare_prints_a_summary(tmp_path, cli_env):
    src = _standard(tmp_path / "src")
    (src / "trainA" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = subprocess.run([*CYCLEGAN, "prepare", "--source", str(src), "--out", str(tmp_path / "out"),
                             "--no-progress", "--set", "prepare.workers=0"],
                            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "trainA 4  trainB 3  testA 2  testB 2" in result.stderr
    assert "trainA/bad.jpg: " in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["skipped"] == 1 and summary["counts"]["trainA"] == 4


def test_refuses_to_replace_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    precious = tmp_path / "photos"
    write_rgb(precious / "holiday.png")
    with pytest.raises(UserError, match="not a prepared dataset"):
        prep.prepare(cfg(), "synthetic", str(precious), progress=False)
    assert [p.name for p in precious.iterdir()] == ["holiday.png"]
    (tmp_path / "empty").mkdir()
    prep.prepare(cfg(), "synthetic", str(tmp_path / "empty"), progress=False)  # an empty folder is fine
    prep.prepare(cfg(), "synthetic", str(tmp_path / "empty"), progress=False)  # and so is a dataset
