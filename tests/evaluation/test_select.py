"""The checkpoint selection (`cyclegan select`, training/evaluation/select.py): the order and the
ties of the choice, the fixed validation subset, scoring real generators-only epoch checkpoints
on tiny data (a solid-red epoch never wins), the selected checkpoint and its record, the report's
scores by epoch, and bad input as one-line errors."""
from __future__ import annotations

import csv
import json
import math
import subprocess

import pytest

from helpers import CYCLEGAN, ROOT, TESTS_PROFILE, cli_env
from helpers.checkpoints import paint_solid, same_generators, write_generator_checkpoint
from training.config import load_config
from training.errors import UserError
from training.evaluation import select as S
from training.layout import Selection, TrainRun


def _row(epoch, kid_a, kid_b, success_a=0.5, success_b=0.5):
    return {"epoch": epoch, "kid_AtoB_mean": kid_a, "kid_BtoA_mean": kid_b, "domain_success_AtoB": success_a,
            "domain_success_BtoA": success_b}


# -- the choice (pure) -----------------------------------------------------------------------

def test_kid_picks_the_lowest_mean_of_both_directions_not_the_latest():
    rows = [_row(1, 0.30, 0.30), _row(2, 0.10, 0.20), _row(3, 0.05, 0.40)]   # means 0.30, 0.15, 0.225
    assert S.choose(rows, "kid")["epoch"] == 2
    assert S.score(rows[1], "kid") == pytest.approx(0.15)


def test_a_tie_goes_to_the_later_epoch():
    assert S.choose([_row(5, 0.1, 0.2), _row(10, 0.2, 0.1), _row(15, 0.3, 0.3)], "kid")["epoch"] == 10


def test_domain_success_ranks_highest_first_and_breaks_ties_by_kid():
    rows = [_row(1, 0.1, 0.1, 0.9, 0.7), _row(2, 0.3, 0.3, 0.8, 0.8), _row(3, 0.2, 0.2, 0.6, 0.6)]
    # epochs 1 and 2 share the best mean success (0.8): the lower mean KID (epoch 1) wins
    assert S.choose(rows, "domain_success")["epoch"] == 1
    assert S.choose(rows[1:], "domain_success")["epoch"] == 2


def test_a_non_finite_score_ranks_last_and_no_finite_score_is_an_error():
    rows = [_row(1, math.nan, 0.1), _row(2, 0.5, 0.5), _row(3, math.inf, 0.0)]
    assert S.choose(rows, "kid")["epoch"] == 2
    with pytest.raises(UserError, match="no epoch has a finite kid score"):
        S.choose([_row(1, math.nan, 0.1)], "kid")


def test_the_validation_subset_is_seeded_fixed_and_not_the_probes():
    from training.evaluation.probe import subset_indices

    first = S.validation_subset(1000, 200, seed=0, domain=0)
    assert first == S.validation_subset(1000, 200, seed=0, domain=0)          # reproducible
    assert len(first) == len(set(first)) == 200 and first == sorted(first)
    assert first != S.validation_subset(1000, 200, seed=1, domain=0)         # the seed moves it
    assert first != S.validation_subset(1000, 200, seed=0, domain=1)         # each domain its own draw
    assert first != list(subset_indices(1000, 200, 0))                        # not the probe's stream
    assert S.validation_subset(150, 200, seed=0, domain=0) == list(range(150))   # small sets: all of them


# -- scoring real checkpoints ------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A run folder of three generators-only epoch checkpoints on tiny random images: epochs 1 and 2
    freshly initialised (different seeds), epoch 3 (the latest) painted solid red."""
    from helpers import make_data

    root = tmp_path_factory.mktemp("select")
    data = make_data(root / "data")
    cfg = load_config(TESTS_PROFILE, [f"evaluate.cache_dir={root / 'features'}", "evaluate.select_images=4",
                                      "evaluate.kid_subset_size=4"], required=True)
    run = TrainRun(root / "run")
    for epoch in (1, 2, 3):
        write_generator_checkpoint(run.epoch(epoch), cfg, epoch, seed=epoch)
    paint_solid(run.epoch(3))
    write_generator_checkpoint(run.latest, cfg, 3, seed=3)
    paint_solid(run.latest)
    summary = S.select(cfg, str(data), str(run.root), str(root / "sel"), progress=False)
    return {"root": root, "data": data, "cfg": cfg, "run": run, "summary": summary, "out": Selection(root / "sel")}


def test_every_kept_epoch_is_scored_and_the_best_is_written(scored):
    summary, out, run = scored["summary"], scored["out"], scored["run"]
    rows = {r["epoch"]: r for r in summary["epochs"]}
    assert sorted(rows) == [1, 2, 3] and summary["kept_epochs"] == [1, 2, 3]
    for row in rows.values():
        assert row["score"] == pytest.approx((row["kid_AtoB_mean"] + row["kid_BtoA_mean"]) / 2)
    # the solid-red epoch is the worst in both directions, so the latest is not the one chosen
    assert rows[3]["kid_AtoB_mean"] > max(rows[1]["kid_AtoB_mean"], rows[2]["kid_AtoB_mean"])
    best = min(rows.values(), key=lambda r: r["score"])["epoch"]
    assert summary["selected_epoch"] == best != 3
    assert same_generators(out.checkpoint, run.epoch(best))

    # the written file: generators + config + epoch + the record; what evaluate/export load
    import torch

    from training.engine.checkpoint import load_generators

    state = torch.load(out.checkpoint, weights_only=True)
    assert set(state["models"]) == {"G_A", "G_B"} and state["epoch"] == best
    assert state["selection"] == {"mode": "best", "epoch": best, "checkpoint": f"epoch_{best}.pt", "metric": "kid",
                                  "score": rows[best]["score"], "kept_epochs": [1, 2, 3], "epochs_trained": 3}
    load_generators(out.checkpoint)
    written = json.loads(out.scores.read_text())
    assert written["checkpoint_sha256"] == __import__("training.utils", fromlist=["x"]).sha256_file(out.checkpoint)
    assert written["validation"]["images_per_domain"] == {"A": 4, "B": 4}     # select_images, not all 6 / 5
    with open(out.scores_plot) as f:
        plot = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in plot] == [1, 2, 3]
    assert [int(r["selected"]) for r in plot] == [int(e == best) for e in (1, 2, 3)]
    assert float(plot[2]["kid_AtoB_mean"]) == pytest.approx(rows[3]["kid_AtoB_mean"])


def test_a_second_selection_reads_the_real_sets_from_the_cache_and_agrees(scored):
    """The reference and input sets' features come from the cache; the feature network then sees
    only the translations (two directions x 4 images x 3 epochs), and the choice is the same."""
    again = S.select(scored["cfg"], str(scored["data"]), str(scored["run"].root), str(scored["root"] / "sel2"),
                     progress=False)
    assert again["feature_images"] == 2 * 4 * 3
    assert scored["summary"]["feature_images"] > again["feature_images"]
    assert again["epochs"] == scored["summary"]["epochs"] and again["selected_epoch"] == scored["summary"][
        "selected_epoch"]


def test_latest_takes_the_latest_checkpoint_without_scoring(scored, tmp_path):
    cfg = scored["cfg"].model_copy(update={"evaluate": scored["cfg"].evaluate.model_copy(update={"select": "latest"})})
    summary = S.select(cfg, None, str(scored["run"].root), str(tmp_path / "sel"), progress=False)
    out = Selection(tmp_path / "sel")
    assert (summary["mode"], summary["selected_epoch"], summary["epochs"]) == ("latest", 3, [])
    assert "feature_images" not in summary                     # nothing was scored
    assert same_generators(out.checkpoint, scored["run"].latest)
    with open(out.scores_plot) as f:
        assert list(csv.reader(f)) == [list(S.PLOT_COLUMNS)]


def test_the_report_shows_the_scores_by_epoch_and_the_chosen_one(scored):
    from training.evaluation.report import read_selection, selection_section

    scores = read_selection(scored["out"].scores)
    section = selection_section(scores)
    best = scores["selected_epoch"]
    assert f"Epoch {best} of 3 kept epochs was evaluated" in section
    assert "never the test split" in section
    assert section.count("<svg") == 2 and section.count("<circle") == 2 * 2 * 3   # 2 charts x 2 series x 3 epochs
    assert f'<tr class=selected><td class="num">{best}</td>' in section
    assert section.count("class=selected") == 1
    latest = selection_section({**scores, "mode": "latest", "selected_epoch": 3, "epochs": []})
    assert "The latest checkpoint (epoch 3) was evaluated" in latest and "<svg" not in latest
    assert selection_section(None) == ""


# -- bad input ---------------------------------------------------------------------------------

def _cli(*args, cwd):
    return subprocess.run([*CYCLEGAN, "select", "--params", str(TESTS_PROFILE), "--no-progress", *args], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=300)


def test_bad_input_is_a_one_line_error_and_leaves_the_output_alone(scored, tmp_path):
    out = tmp_path / "sel"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    empty_run = tmp_path / "run"
    (empty_run / "checkpoints").mkdir(parents=True)
    cases = [
        (["--train", str(scored["run"].root), "--out", str(out)], "--data"),     # best needs the data
        (["--data", str(scored["data"]), "--train", str(empty_run), "--out", str(out)], "no kept epoch checkpoints"),
        (["--train", str(empty_run), "--out", str(out), "--set", "evaluate.select=latest"], "no latest checkpoint"),
        (["--data", str(scored["data"]), "--train", str(scored["run"].root), "--out", str(out), "--set",
          "evaluate.select=sometimes"], "evaluate.select"),
    ]
    for args, needle in cases:
        proc = _cli(*args, cwd=ROOT)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_bad_selection_file_is_named(tmp_path):
    from training.evaluation.report import read_selection

    bad = tmp_path / "selection.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="selection.json: not valid JSON"):
        read_selection(bad)
    bad.write_text(json.dumps({"epochs": []}))
    with pytest.raises(UserError, match="not a selection file"):
        read_selection(bad)
