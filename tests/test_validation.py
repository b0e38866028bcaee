"""Config validation (recbole_hdccf/settings.py), data edge cases through the real loader, and
numerical safety of training through the real trainer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import config_yaml, small_config
from model_mixin import build_run, fit_run, pairs

import recbole_hdccf  # noqa: F401
from recbole_hdccf import losses
from recbole_hdccf.cli import run_main
from recbole_hdccf.sampler import NEIGHBOR_ITEMS, NEIGHBOR_USERS
from recbole_hdccf.settings import ConfigError, HDCCFSettings


def settings(world_size=None, **values) -> HDCCFSettings:
    return HDCCFSettings.from_config(values, world_size=world_size)


# ------------------------------------------------------------------ one key at a time
BAD_VALUES = [
    ("tau", 0, "> 0"),
    ("tau", -0.1, "> 0"),
    ("tau", float("nan"), "finite number"),
    ("tau", float("inf"), "finite number"),
    ("tau", "0.1", "finite number"),
    ("tau", True, "finite number"),
    ("w_u_pos", 1.0, r"\[0, 1\)"),
    ("w_u_pos", -0.01, r"\[0, 1\)"),
    ("w_i_pos", 1.5, r"\[0, 1\)"),
    ("uniform_negatives", -1, "integer >= 0"),
    ("ui_negatives", "item", "choose one of"),
    ("uniform_negatives", 2.5, "must be an integer"),
    ("neighbor_num", 0, ">= 1"),
    ("neighbor_num", 1.5, "integer"),
    ("neighbor_num", True, "integer"),
    ("train_batch_size", 1, ">= 2"),
    ("train_batch_size", 0, ">= 2"),
    ("embedding_size", 0, "positive"),
    ("embedding_size", -8, "positive"),
    ("embedding_size", 16.0, "integer"),
    ("embedding_size", True, "integer"),
    ("lambda_u", -1, ">= 0"),
    ("lambda_i", float("inf"), "finite number"),
    ("ablation", "wo_x", "choose one of"),
    ("ablation", 3, "choose one of"),
    ("ablation", ["wo_u"], "choose one of"),
    ("aux_mask", "some", "choose one of"),
    ("ui_loss", "hinge", "choose one of"),
    ("modulation", "yes", "true or false"),
    ("gather_negatives", 1, "true or false"),
    ("modulation_hidden", [0], "positive integers"),
    ("modulation_hidden", [True], "positive integers"),
    ("modulation_hidden", "64", "list of hidden layer sizes"),
    ("full_sort_memory_mb", 0, "positive"),
]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES)
def test_bad_value_names_the_key_and_the_allowed_range(key, value, allowed):
    with pytest.raises(ConfigError, match=allowed) as error:
        settings(**{key: value})
    assert str(error.value).startswith(f"{key}=")


def test_defaults_are_valid():
    assert settings() == HDCCFSettings()


# ------------------------------------------------------------------ contradictions
CONTRADICTIONS = [
    ({"modulation": False, "modulation_hidden": [8]}, "modulation_hidden=.*modulation=False"),
    ({"debias": False, "w_u_pos": 0.2}, "w_u_pos=0.2: has no effect with debias=False"),
    ({"ui_loss": "bpr", "w_i_pos": 0.1}, "w_i_pos=0.1: has no effect with ui_loss='bpr'"),
    ({"ui_negatives": "items", "w_u_pos": 0.1}, "w_u_pos=0.1: has no effect with ui_negatives"),
    ({"ui_negatives": "users", "w_i_pos": 0.1}, "w_i_pos=0.1: has no effect with ui_negatives"),
    ({"debias": False, "aux_mask": "any"}, "aux_mask='any': has no effect with debias=False"),
    ({"lambda_u": 0, "lambda_i": 0, "aux_mask": "none"}, "aux_mask='none'.*lambda_u=lambda_i=0"),
    ({"ablation": "wo_u", "lambda_u": 0.5}, "ablation='wo_u' sets lambda_u"),
    ({"ablation": "biased", "debias": False, "w_u_pos": 0.3}, "w_u_pos=0.3"),
]


@pytest.mark.parametrize("values,message", CONTRADICTIONS)
def test_contradictions_are_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        settings(**values)


CONSISTENT = [
    {"normalize": False},  # the debiased clamp then bounds |f| by the batch's norms
    {"normalize": False, "debias": False},
    {"normalize": False, "ui_loss": "bpr"},
    {"ui_loss": "bpr", "debias": False},  # BPR+ is biased anyway
    {"ui_loss": "bpr"},
    {"ablation": "biased", "w_u_pos": 0.2},  # an ablation over a tuned configuration
    {"ablation": "unmodulated", "modulation_hidden": [8]},
    {"ablation": "bpr_plus", "aux_mask": "any"},
    {"gather_negatives": True},  # a no-op in one process
    {"ablation": "none"},
]


@pytest.mark.parametrize("values", CONSISTENT)
def test_consistent_combinations_are_accepted(values):
    settings(**values)


def test_per_process_batches_need_two_rows_without_gathering():
    with pytest.raises(ConfigError, match="train_batch_size=7: with 4 processes"):
        settings(world_size=4, train_batch_size=7)
    settings(world_size=4, train_batch_size=8)
    settings(world_size=4, train_batch_size=7, gather_negatives=True)
    settings(world_size=1, train_batch_size=2)


# ------------------------------------------------------------------ from the command line
@pytest.mark.parametrize(
    "flags,message",
    [
        (["--tau=0"], "error: tau=0: the temperature must be > 0"),
        (["--w_u_pos=1.0"], "error: w_u_pos=1.0: the false-negative rate omega^+ must lie in"),
        (["--ablation=wo_x"], "error: ablation='wo_x': choose one of"),
        (["--train_batch_size=3", "--nproc=2"], "error: train_batch_size=3: with 2 processes"),
        (["--resume=nowhere.pth"], "error: checkpoint 'nowhere.pth' (from --resume) does not"),
    ],
)
def test_cli_reports_config_errors_with_exit_code_2(
    small_config_dict, tmp_path, monkeypatch, capsys, flags, message
):
    config = tmp_path / "small.yaml"
    config.write_text(config_yaml(small_config_dict), encoding="utf-8")
    argv = ["--model=HDCCF", "--dataset=tiny", f"--config_files={config}", *flags]
    monkeypatch.setattr("sys.argv", ["run_recbole_hdccf.py", *argv])  # RecBole reads sys.argv
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not Path("saved").exists() and not (tmp_path / "saved").exists()  # nothing ran


# ------------------------------------------------------------------ data edge cases
def _edge_dataset(root: Path) -> Path:
    """30 ordinary users on items i1..i40; user ``solo`` has a single training interaction
    (``i1``) and items ``valid_only`` / ``test_only`` never occur in training; item ``lonely``
    has a single (training) user, ``u1``."""
    rng = np.random.default_rng(3)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(1, 31):
        items = [f"i{k}" for k in rng.choice(np.arange(1, 41), size=10, replace=False)]
        if user == 1:
            items = ["lonely", *items]
        lines += [f"u{user}\t{item}\t{1000 * user + t}" for t, item in enumerate(items)]
    lines += ["solo\ti1\t1", "solo\tvalid_only\t2", "solo\ttest_only\t3"]
    folder = root / "edge"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edge.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def edge_run(tmp_path):
    data = _edge_dataset(tmp_path / "data")
    config = small_config(data, tmp_path / "saved", train_batch_size=16, neighbor_num=3)
    return build_run("HDCCF", config, dataset="edge")


def _ids(run, field, *tokens):
    return [int(run.dataset.token2id(field, token)) for token in tokens]


def test_single_neighbour_ids_are_drawn_p_times_through_the_loader(edge_run):
    run = edge_run
    (solo,) = _ids(run, "user_id", "solo")
    (u1,) = _ids(run, "user_id", "u1")
    i1, lonely, valid_only, test_only = _ids(
        run, "item_id", "i1", "lonely", "valid_only", "test_only"
    )
    graph = run.model.train_graph
    assert graph.user_degree[solo] == 1 and graph.item_degree[lonely] == 1
    assert graph.item_degree[valid_only] == graph.item_degree[test_only] == 0
    loader = run.trainer.neighbor_loader(run.train_data)
    seen = {"solo": 0, "lonely": 0}
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            users, items = batch["user_id"], batch["item_id"]
            for row in torch.nonzero(users == solo).flatten():
                assert batch[NEIGHBOR_ITEMS][row].tolist() == [i1] * 3
                seen["solo"] += 1
            for row in torch.nonzero(items == lonely).flatten():
                assert batch[NEIGHBOR_USERS][row].tolist() == [u1] * 3
                seen["lonely"] += 1
            pool_items = batch[NEIGHBOR_ITEMS].flatten()
            assert not torch.isin(pool_items, torch.tensor([valid_only, test_only])).any()
            assert (graph.item_degree[pool_items.numpy()] > 0).all()
    assert seen == {"solo": 3, "lonely": 3}  # each training row once per epoch


def test_items_unseen_in_training_still_get_finite_scores(edge_run):
    run = fit_run(edge_run)
    (solo,) = _ids(run, "user_id", "solo")
    unseen = _ids(run, "item_id", "valid_only", "test_only")
    model = run.model.eval()
    with torch.no_grad():
        scores = model.predict(pairs(run, [solo, solo], unseen))
        full = model.full_sort_predict(pairs(run, [solo], [0])).view(-1, model.n_items)
    assert torch.isfinite(scores).all()
    assert torch.isfinite(full).all()
    torch.testing.assert_close(full[0, unseen], scores)
    assert all(math.isfinite(v) for v in run.test_result.values())


# ------------------------------------------------------------------ numerical safety
def _grads(model, batch):
    model.zero_grad()
    parts = model.calculate_loss(batch)
    loss = sum(parts) if isinstance(parts, tuple) else parts
    loss.backward()
    return loss, [p.grad for p in model.parameters() if p.grad is not None]


def _scale_embeddings(model, factor):
    with torch.no_grad():
        for module in (model.user_embedding, model.item_embedding):
            module.weight.mul_(factor)


NUMERIC_CASES = {
    "tau=0.01": {"tau": 0.01},
    "tau=0.01, unmodulated": {"tau": 0.01, "ablation": "unmodulated"},
    "unnormalized, biased": {"normalize": False, "debias": False},
    "unnormalized, biased, tau=0.01": {"normalize": False, "debias": False, "tau": 0.01},
    "unnormalized BPR+": {"normalize": False, "ablation": "bpr_plus"},
    "unnormalized, debiased": {"normalize": False},
    "uniform negatives, tau=0.01": {"uniform_negatives": 16, "tau": 0.01},
    "unnormalized, debiased, w_pos=0.9": {"normalize": False, "w_u_pos": 0.9, "w_i_pos": 0.9},
    "w_pos=0.9 (below the bound)": {"w_u_pos": 0.9, "w_i_pos": 0.9, "normalize": True, "tau": 0.2},
    "w_pos=0.9, tau=0.01": {"w_u_pos": 0.9, "w_i_pos": 0.9, "tau": 0.01},
}


@pytest.mark.parametrize("values", NUMERIC_CASES.values(), ids=NUMERIC_CASES.keys())
def test_training_stays_finite(small_config_dict, values):
    """Embeddings scaled by 1e3 before training, then 3 epochs through the real trainer (RecBole
    raises on a NaN loss); every loss, gradient and parameter stays finite."""
    run = build_run("HDCCF", {**small_config_dict, "epochs": 3, "learning_rate": 0.01, **values})
    _scale_embeddings(run.model, 1e3)
    batch = next(iter(run.trainer.neighbor_loader(run.train_data)))
    loss, grads = _grads(run.model, batch)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    fit_run(run)
    for epoch, value in run.train_losses.items():
        assert math.isfinite(value), (epoch, value)
    for name, parameter in run.model.named_parameters():
        assert torch.isfinite(parameter).all(), name
    loss, grads = _grads(run.model, batch)
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    assert all(math.isfinite(v) for v in run.test_result.values())


def test_high_false_negative_rate_hits_the_bound(small_config_dict):
    """w_pos=0.9 really drives the debiased estimate below Q e^{-1/tau} (normalised scores)."""
    values = {"w_u_pos": 0.9, "w_i_pos": 0.9, "normalize": True, "tau": 0.2}
    run = build_run("HDCCF", {**small_config_dict, **values})
    model, batch = run.model, next(iter(run.trainer.neighbor_loader(run.train_data)))
    p = batch[NEIGHBOR_ITEMS].shape[1]
    g = model.batch_logits(
        batch["user_id"], batch["item_id"], batch[NEIGHBOR_ITEMS], batch[NEIGHBOR_USERS]
    )
    positives = torch.cat([g["pos"].unsqueeze(1), model._own_block(g["item_grid"], g["own"], p)], 1)
    _, clamped = losses.debiased_log_negative_score(
        g["item_grid"], g["pool"], g["item_observed"], positives, 0.9, model.tau
    )
    assert clamped.any()
