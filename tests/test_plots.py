"""The figure commands: each writes a PNG and the CSV behind it, from benchmark results."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import config_yaml, small_config

from recbole_hdccf import benchmark, plots


def _record(label, seed, metric_value, config=None):
    return {
        "label": label,
        "model": "HDCCF",
        "seed": seed,
        "status": "ok",
        "test": {"hit@10": metric_value + 0.2, "ndcg@10": metric_value, "ndcg@50": metric_value},
        "config": config or {},
    }


def test_ablation_and_sensitivity_plots_write_png_and_data(tmp_path):
    records = []
    for index, label in enumerate(benchmark.ABLATION_MODELS.split(",")):
        records += [_record(label, s, 0.5 - 0.02 * index + 0.001 * s) for s in (1, 2)]
    for key, values in benchmark.SENSITIVITY_GRID.items():
        for value in values:
            label = f"HDCCF[{key}={value}]"
            records += [_record(label, s, 0.4 + 0.01 * value, {key: value}) for s in (1, 2)]
    (tmp_path / "runs.json").write_text(json.dumps(records))
    assert plots.main(["ablation", f"--results={tmp_path}"]) == 0
    assert plots.main(["sensitivity", f"--results={tmp_path}"]) == 0
    assert (tmp_path / "ablation.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "ablation.csv")))
    hdccf = [r for r in rows if r["label"] == "HDCCF" and r["metric"] == "ndcg@10"][0]
    assert float(hdccf["mean"]) == (0.501 + 0.502) / 2 and hdccf["seeds"] == "2"
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(tmp_path / "sensitivity.csv")))
    p_rows = [r for r in rows if r["param"] == "neighbor_num" and r["metric"] == "ndcg@10"]
    assert [int(r["value"]) for r in p_rows] == [1, 2, 3, 4, 5, 6]
    assert {r["seeds"] for r in p_rows} == {"2"}


def test_sensitivity_curves_around_a_configuration_compare_on_common_seeds():
    base = "HDCCF[debias=False;ablation=unmodulated]"
    config = {"neighbor_num": 2, "w_i_pos": 0.05, "w_u_pos": 0.05}
    records = [_record(base, s, 0.40 + 0.01 * s, config) for s in (1, 2, 3)]
    for p in (1, 3):
        label = f"HDCCF[debias=False;ablation=unmodulated;neighbor_num={p}]"
        records.append(_record(label, 1, 0.4 + 0.001 * p, {**config, "neighbor_num": p}))
    # other settings, other models: not on the curve
    records += [_record("HDCCF[debias=False]", s, 0.3, config) for s in (1, 2, 3)]
    records.append({**_record("BPR", 1, 0.2), "model": "BPR"})
    curves = plots.sensitivity_curves(records)
    assert list(curves) == ["neighbor_num"]  # w_i_pos and w_u_pos have one value each
    curve = curves["neighbor_num"]
    assert list(curve) == [1, 2, 3]
    assert [r["label"] for r in curve[2]] == [base] and curve[2][0]["seed"] == 1
    assert [r["test"]["ndcg@10"] for r in curve[3]] == [0.403]


def test_sensitivity_from_csv_records_places_the_base_at_the_yaml_value(tmp_path, capsys):
    """runs.csv rows (--merge_runs of a committed CSV) carry no config: a label that leaves the
    setting out is drawn at properties/HDCCF.yaml's value, and the plot says so."""
    import yaml

    from recbole_hdccf.paths import properties_dir

    default = yaml.safe_load((properties_dir() / "HDCCF.yaml").read_text())["w_u_pos"]
    base = "HDCCF[ablation=unmodulated]"
    rows = [_record(base, s, 0.38) for s in (1, 2)]
    rows += [
        _record(f"HDCCF[ablation=unmodulated;w_u_pos={v}]", s, 0.3 + v)
        for v in (0.0, 0.2)
        for s in (1, 2)
    ]
    for row in rows:
        del row["config"]
    curves = plots.sensitivity_curves(rows, notes := [])
    assert list(curves["w_u_pos"]) == sorted([0.0, default, 0.2])
    assert {r["label"] for r in curves["w_u_pos"][default]} == {base}
    assert len(notes) == 1 and base in notes[0] and f"w_u_pos={default}" in notes[0]
    # the same from a folder, with the note on stderr
    (tmp_path / "runs.json").write_text(json.dumps(rows))
    assert plots.main(["sensitivity", f"--results={tmp_path}"]) == 0
    assert "carry no config" in capsys.readouterr().err
    values = {r["value"] for r in csv.DictReader(open(tmp_path / "sensitivity.csv"))}
    assert values == {"0.0", str(default), "0.2"}
    # records with a config are drawn at it, with no note
    with_config = [{**r, "config": {"w_u_pos": 0.1}} if r["label"] == base else r for r in rows]
    curves = plots.sensitivity_curves(with_config, notes := [])
    assert list(curves["w_u_pos"]) == [0.0, 0.1, 0.2] and notes == []


def test_y_range_pads_by_three_error_bars_and_at_least_the_noise_floor():
    assert plots._y_range([0.40, 0.42], [0.0, 0.0]) == pytest.approx((0.385, 0.435))
    assert plots._y_range([0.40, 0.42], [0.01, 0.02]) == pytest.approx((0.34, 0.48))
    assert plots._y_range([0.01], [0.0]) == (0.0, pytest.approx(0.025))


def test_sensitivity_without_a_curve_is_a_clear_error(tmp_path, capsys):
    records = [_record("HDCCF[neighbor_num=3]", 1, 0.4, {"neighbor_num": 3})]
    records.append(_record("HDCCF[neighbor_num=1]", 2, 0.4, {"neighbor_num": 1}))
    (tmp_path / "runs.json").write_text(json.dumps(records))
    assert plots.main(["sensitivity", f"--results={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "differ only in one of w_i_pos, w_u_pos, neighbor_num" in err


def test_scores_plot_from_real_checkpoints(tiny_data_path, tmp_path, capsys):
    config = small_config(tiny_data_path, tmp_path / "unused", epochs=2, topk=[10, 50])
    config.pop("checkpoint_dir")
    (tmp_path / "b.yaml").write_text(config_yaml(config))
    out = tmp_path / "out"
    args = ["--dataset=tiny", "--models=@modulation", "--protocol=none", "--seed_list=1"]
    assert benchmark.main(args + [f"--config_files={tmp_path / 'b.yaml'}", f"--out={out}"]) == 0
    run_dir = out / "runs" / "HDCCF-seed1"
    saved = sorted(p.name for p in (run_dir / "saved").glob("*.pth"))
    assert len(saved) == 2 and saved[0].endswith("-last.pth")  # the trap: it sorts first
    assert plots.best_checkpoint(run_dir).name == saved[1]
    capsys.readouterr()
    assert plots.main(["scores", f"--results={out}"]) == 0
    files = "scores-histogram.csv, scores-summary.csv, scores.csv, scores.png"
    assert f"written in {out}: {files}" in capsys.readouterr().out
    assert (out / "scores.png").stat().st_size > 1000
    rows = list(csv.DictReader(open(out / "scores.csv")))
    kinds = {(r["model"], r["kind"]) for r in rows}
    assert kinds == {
        ("HDCCF", "positive"),
        ("HDCCF", "negative"),
        ("HDCCF[ablation=unmodulated]", "positive"),
        ("HDCCF[ablation=unmodulated]", "negative"),
    }
    assert all(0 <= float(r["normalised_score"]) <= 100 for r in rows)
    # the published data: the bars drawn (each a density over 0-100) and the pooled pair share,
    # which the raw samples give again
    bars = list(csv.DictReader(open(out / "scores-histogram.csv")))
    for model, kind in kinds:
        mass = sum(
            float(r["density"]) * (float(r["bin_high"]) - float(r["bin_low"]))
            for r in bars
            if (r["model"], r["kind"]) == (model, kind)
        )
        assert mass == pytest.approx(1.0)
    summary = {r["model"]: r for r in csv.DictReader(open(out / "scores-summary.csv"))}
    for model, row in summary.items():
        pos, neg = (
            np.array([float(r["normalised_score"]) for r in rows if (r["model"], r["kind"]) == key])
            for key in ((model, "positive"), (model, "negative"))
        )
        pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        assert float(row["pairs_ranked_right"]) == pytest.approx(pairs.mean(), abs=1e-6)
        assert (int(row["positives"]), int(row["negatives"])) == (len(pos), len(neg))


def test_pairs_ranked_right_by_hand():
    # pairs (1,2) wrong, (3,2) right, (2,2) a tie: (0 + 1 + 0.5) / 3
    assert plots.pairs_ranked_right(np.array([1.0, 3.0, 2.0]), np.array([2.0])) == 0.5
    assert plots.pairs_ranked_right(np.array([5.0]), np.array([1.0, 2.0])) == 1.0
    assert plots.pairs_ranked_right(np.array([0.0]), np.array([1.0, 2.0, 0.0])) == pytest.approx(
        1 / 6
    )


def test_missing_results_is_a_clear_error(tmp_path, capsys):
    assert plots.main(["ablation", f"--results={tmp_path / 'nothing'}"]) == 2
    assert "run the benchmark first" in capsys.readouterr().err


def test_bars_are_named_by_what_they_change_from_the_base():
    preset = benchmark.ABLATION_MODELS.split(",")
    assert list(plots.variant_names(preset).values()) == [
        "HDCCF",
        "w/o-U",
        "w/o-I",
        "w/o-U&I",
        "BPR+",
        "biased",
    ]
    # an ablation over a tuned configuration: the base is the label the variants include,
    # wherever it stands, and a label without an ablation is named by its changed setting
    base = "HDCCF[ui_negatives=items;debias=False;stopping_step=5]"
    labels = [
        "HDCCF[ui_negatives=items;debias=True;stopping_step=5]",
        "HDCCF[ui_negatives=items;debias=False;stopping_step=5;ablation=wo_u]",
        base,
        "HDCCF[ui_negatives=items;debias=False;stopping_step=5;tau=0.5]",
        "BPR",  # a baseline for reference: its empty settings make it no base
        "HDCCF[ablation=wo_u]",  # on the defaults, not on the base: "w/o-U" would be wrong
    ]
    assert plots.ablation_base(labels) == base
    names = ["debiased", "w/o-U", "HDCCF", "tau=0.5", "BPR", "HDCCF[ablation=wo_u]"]
    assert list(plots.variant_names(labels).values()) == names
    # an ablation over the unmodulated model spells its switches out ("ablation" is taken):
    # switches that make up exactly one ablation get its name, anything more stays spelled out
    unmodulated = "HDCCF[ui_negatives=items;debias=False;stopping_step=5;ablation=unmodulated"
    labels = [
        base,
        unmodulated + "]",
        unmodulated + ";lambda_u=0]",
        unmodulated + ";lambda_u=0;lambda_i=0]",
        unmodulated + ";ui_loss=bpr;lambda_u=0;lambda_i=0]",
        unmodulated + ";lambda_u=0;tau=0.5]",
        "HDCCF[ui_negatives=items;debias=False;stopping_step=5;lambda_i=0.0]",
    ]
    assert list(plots.variant_names(labels).values()) == [
        "HDCCF",
        "unmodulated",
        "unmodulated, w/o-U",
        "unmodulated, w/o-U&I",
        "unmodulated, BPR+",
        "unmodulated, lambda_u=0, tau=0.5",
        "w/o-I",
    ]


def test_modulation_pair_finds_the_unmodulated_variant_and_its_base():
    assert plots.modulation_pair(["HDCCF[ablation=unmodulated]", "BPR", "HDCCF"]) == (
        "HDCCF",
        "HDCCF[ablation=unmodulated]",
    )
    tuned = "HDCCF[ui_negatives=items;debias=False]"
    labels = ["HDCCF", tuned, "HDCCF[ui_negatives=items;debias=False;ablation=unmodulated]"]
    assert plots.modulation_pair(labels) == (tuned, labels[2])
    assert plots.modulation_pair(["HDCCF", "HDCCF[ablation=wo_u]"]) == ()
