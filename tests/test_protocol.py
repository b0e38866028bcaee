"""Evaluation presets (properties/protocol), dataset yaml, and fixed sampled-evaluation candidates.

The candidate tests run on a small synthetic data set written into ``tmp_path`` (60 users, 80
items, 15 interactions each with timestamps); one test loads ML-1M from ``../shared/datasets``
once for the whole module and checks the paper's statistics under the paper preset.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_model, init_seed

import recbole_hdccf  # noqa: F401  (installs the plugin's hooks)
from recbole_hdccf import candidates
from recbole_hdccf.paths import protocol_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RECBOLE_HDCCF_DATASETS", ROOT.parent / "shared" / "datasets"))
N_USERS, N_ITEMS, PER_USER = 60, 80, 15


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """RecBole writes ./log, ./saved and parses sys.argv: keep both away from the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])


@pytest.fixture
def data_path(tmp_path) -> Path:
    """``syn/syn.inter``: 60 users x 15 distinct items each out of 80, timestamps 0..14."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "data" / "syn"
    folder.mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for user in range(N_USERS):
        items = rng.choice(N_ITEMS, PER_USER, replace=False)
        lines += [f"u{user}\ti{item}\t{t}" for t, item in enumerate(items)]
    (folder / "syn.inter").write_text("\n".join(lines) + "\n")
    return tmp_path / "data"


def _config(data_path, model="BPR", protocol="paper", **overrides) -> Config:
    config_dict = {
        "data_path": str(data_path),
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "show_progress": False,
        **overrides,
    }
    return Config(
        model=model,
        dataset="syn",
        config_file_list=[str(protocol_file(protocol))],
        config_dict=config_dict,
    )


def _loaders(data_path, model="BPR", **overrides):
    config = _config(data_path, model, **overrides)
    init_seed(config["seed"], config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    return config, train, valid, test


def _candidates(loader) -> dict[str, tuple[str, ...]]:
    """user token -> the item tokens it is ranked against (positive first), as the trainer sees them."""
    dataset = loader._dataset
    uid, iid = dataset.uid_field, dataset.iid_field
    found = {}
    for interaction, _row_idx, _positive_u, _positive_i in loader:
        users = interaction[uid].numpy()
        items = interaction[iid].numpy()
        for user in np.unique(users):
            tokens = dataset.id2token(iid, items[users == user])
            found[str(dataset.id2token(uid, user))] = tuple(tokens.tolist())
    return found


def _state_equal(a, b) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]


# --- presets -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "split", "order", "mode", "metrics", "topk", "valid_metric", "item_filter"),
    [
        (
            "paper",
            {"LS": "valid_and_test"},
            "TO",
            "uni99",
            ["Hit", "NDCG"],
            [10, 50],
            "NDCG@10",
            "[5,inf)",
        ),
        (
            "paper-random",
            {"LS": "valid_and_test"},
            "RO",
            "uni99",
            ["Hit", "NDCG"],
            [10, 50],
            "NDCG@10",
            "[5,inf)",
        ),
        (
            "full",
            {"LS": "valid_and_test"},
            "TO",
            "full",
            ["Hit", "NDCG"],
            [10, 50],
            "NDCG@10",
            "[5,inf)",
        ),
        (
            "recbole-benchmark",
            {"RS": [0.8, 0.1, 0.1]},
            "RO",
            "full",
            ["Recall", "MRR", "NDCG", "Hit", "Precision"],
            [10],
            "MRR@10",
            "[0,inf)",
        ),
    ],
)
def test_preset_resolves(
    data_path, protocol, split, order, mode, metrics, topk, valid_metric, item_filter
):
    config = _config(data_path, protocol=protocol)
    assert config["eval_args"]["split"] == split
    assert config["eval_args"]["order"] == order
    assert config["eval_args"]["group_by"] == "user"
    assert config["eval_args"]["mode"] == {"valid": mode, "test": mode}
    assert [m.lower() for m in config["metrics"]] == [m.lower() for m in metrics]
    assert config["topk"] == topk
    assert config["valid_metric"] == valid_metric
    assert config["item_inter_num_interval"] == item_filter


def _held_out_times(data_path, protocol, seed):
    """user token -> (validation item's timestamp, test item's timestamp) under ``protocol``."""
    _, _train, valid, test = _loaders(data_path, protocol=protocol, seed=seed)
    times = []
    for loader in (valid, test):
        dataset = loader._dataset
        users = dataset.id2token(dataset.uid_field, dataset.inter_feat[dataset.uid_field].numpy())
        assert len(set(users)) == len(users) == N_USERS  # one held-out item per user
        times.append(dict(zip(users, dataset.inter_feat[dataset.time_field].numpy(), strict=True)))
    return {user: (times[0][user], times[1][user]) for user in times[1]}


def test_paper_random_holds_out_random_interactions_that_follow_the_seed(data_path):
    latest = PER_USER - 1  # the synthetic timestamps are 0..14 per user
    by_time = _held_out_times(data_path, "paper", seed=1)
    assert set(by_time.values()) == {(latest - 1, latest)}

    at_random = _held_out_times(data_path, "paper-random", seed=1)
    assert all(valid != test for valid, test in at_random.values())
    tests = [test for _, test in at_random.values()]
    # Uniform draws: about 1 user in 15 has their latest interaction held out for test.
    assert sum(t == latest for t in tests) < N_USERS / 4 and len(set(tests)) > PER_USER / 2
    assert _held_out_times(data_path, "paper-random", seed=1) == at_random
    assert _held_out_times(data_path, "paper-random", seed=2) != at_random


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="full.*paper.*recbole-benchmark"):
        protocol_file("papr")


def test_a_protocol_may_be_a_yaml_file_given_by_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yml").write_text("eval_args:\n  mode: full\n")
    assert protocol_file("mine.yml") == tmp_path / "mine.yml"  # absolute: runs start elsewhere
    assert protocol_file(str(tmp_path / "mine.yml")).is_absolute()
    with pytest.raises(ValueError, match="'other.yaml' does not exist"):
        protocol_file("other.yaml")
    assert protocol_file("full") == protocol_file(str(protocol_file("full")))


@pytest.mark.parametrize("name", ["yelp", "gowalla"])
def test_dataset_yaml_is_loaded_by_name(name):
    config = Config(model="BPR", dataset=name)
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert config["user_inter_num_interval"] == "[10,inf)"
    assert config["item_inter_num_interval"] == "[10,inf)"


# --- ML-1M under the paper preset ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ml1m(tmp_path_factory):
    if not (SHARED / "ml-1m" / "ml-1m.inter").is_file():
        pytest.skip(f"ML-1M atomic files not found under {SHARED}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("ml1m"))
        patch.setattr(sys, "argv", ["pytest"])
        # No load_col here: it must come from properties/dataset/ml-1m.yaml.
        config = Config(
            model="BPR",
            dataset="ml-1m",
            config_file_list=[str(protocol_file("paper"))],
            config_dict={"data_path": str(SHARED), "show_progress": False},
        )
        dataset = create_dataset(config)
        return config, dataset, data_preparation(config, dataset)


def test_ml1m_paper_statistics(ml1m):
    config, dataset, (train, valid, test) = ml1m
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    # user_num / item_num count RecBole's padding id 0.
    assert (dataset.user_num - 1, dataset.item_num - 1, dataset.inter_num) == (6040, 3416, 999611)
    # Leave-one-out: one validation and one test item per user, the rest for training.
    assert valid._dataset.inter_num == test._dataset.inter_num == 6040
    assert train._dataset.inter_num == 999611 - 2 * 6040


def test_ml1m_test_item_is_each_users_latest(ml1m):
    _, dataset, (train, _valid, test) = ml1m
    uid, time = dataset.uid_field, dataset.time_field
    last_train = np.zeros(dataset.user_num)
    np.maximum.at(
        last_train, train._dataset.inter_feat[uid].numpy(), train._dataset.inter_feat[time].numpy()
    )
    test_users = test._dataset.inter_feat[uid].numpy()
    assert np.all(test._dataset.inter_feat[time].numpy() > last_train[test_users])


# --- fixed candidates ----------------------------------------------------------------------------


def test_same_candidates_for_every_model(data_path):
    _, _, valid_bpr, test_bpr = _loaders(data_path, "BPR")
    expected_valid, expected_test = _candidates(valid_bpr), _candidates(test_bpr)
    assert len(expected_valid) == len(expected_test) == N_USERS

    np.random.seed(12345)  # the other run's numpy state differs ...
    config, train, valid, test = _loaders(data_path, "NeuMF", eval_batch_size=333)
    get_model("NeuMF")(config, train._dataset)
    np.random.random(1000)  # ... the model draws numbers of its own ...
    _candidates(valid)  # ... and two evaluations ran before.
    _candidates(test)
    assert valid.step != valid_bpr.step  # the batches differ
    assert _candidates(valid) == expected_valid
    assert _candidates(test) == expected_test


def test_candidates_follow_recbole_rules(data_path):
    _, _, valid, test = _loaders(data_path)
    state = np.random.get_state()
    found = {"valid": _candidates(valid), "test": _candidates(test)}
    assert _state_equal(np.random.get_state(), state), "the global numpy RNG was used"
    for phase, loader in (("valid", valid), ("test", test)):
        dataset, sampler = loader._dataset, loader._sampler
        assert sampler.phase == phase
        users = dataset.inter_feat[dataset.uid_field].numpy()
        positives = dict(zip(users, dataset.inter_feat[dataset.iid_field].numpy(), strict=True))
        for user, items in found[phase].items():
            uid = dataset.token2id(dataset.uid_field, user)
            ids = dataset.token2id(dataset.iid_field, list(items))
            assert len(ids) == 100 and ids[0] == positives[uid]
            negatives = ids[1:]
            assert negatives.min() >= 1 and negatives.max() < dataset.item_num
            assert not set(negatives.tolist()) & sampler.used_ids[uid]
    # Each phase has a stream of its own.
    assert all(found["valid"][u][1:] != found["test"][u][1:] for u in found["valid"])


def test_different_seed_gives_different_candidates(data_path):
    _, _, valid_a, test_a = _loaders(data_path, seed=2020)
    _, _, valid_b, test_b = _loaders(data_path, seed=2021)
    a, b = _candidates(test_a), _candidates(test_b)
    assert a.keys() == b.keys()
    assert sum(a[u] != b[u] for u in a) >= N_USERS - 1
    assert _candidates(valid_a) != _candidates(valid_b)


def test_worker_processes_see_the_same_candidates(data_path):
    _, _, valid_0, test_0 = _loaders(data_path)
    _, _, valid_2, test_2 = _loaders(data_path, worker=2)
    assert _candidates(valid_2) == _candidates(valid_0)
    assert _candidates(test_2) == _candidates(test_0)


def test_popularity_mode_is_fixed_too(data_path):
    mode = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "pop50"}
    _, _, _, test = _loaders(data_path, eval_args=mode)
    first = _candidates(test)
    np.random.random(10)
    assert _candidates(test) == first
    sampler = test._sampler
    for user, items in first.items():
        ids = test._dataset.token2id(test._dataset.iid_field, list(items))
        assert len(ids) == 51
        assert not set(ids[1:].tolist()) & sampler.used_ids[test._dataset.token2id("user_id", user)]


@pytest.mark.parametrize("value", [False, "False"], ids=["bool", "str"])
def test_opt_out_restores_recbole_redraw(data_path, value):
    _, _, valid, _ = _loaders(data_path, fixed_eval_candidates=value)
    assert not candidates.enabled(valid.config)
    first, second = _candidates(valid), _candidates(valid)
    assert first != second  # RecBole redraws at every evaluation ...
    np.random.seed(1)
    again = _candidates(valid)
    np.random.seed(1)
    assert _candidates(valid) == again  # ... from the global numpy RNG.


def test_trainer_evaluations_agree(data_path):
    from recbole.trainer import Trainer

    config, train, valid, test = _loaders(data_path, "BPR")
    model = get_model("BPR")(config, train._dataset)
    trainer = Trainer(config, model)
    first = trainer.evaluate(test, load_best_model=False)
    np.random.random(100)
    assert trainer.evaluate(test, load_best_model=False) == first


def _built_afresh(loader):
    """Every batch of ``loader`` built by RecBole's own collate_fn (with the fixed negatives)."""
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader

    build = NegSampleEvalDataLoader.collate_fn.__wrapped__
    return [build(loader, index) for index in loader.batch_sampler]


def _batches_equal(a, b) -> bool:
    if len(a) != len(b):
        return False
    for (inter_a, *rest_a), (inter_b, *rest_b) in zip(a, b, strict=True):
        if set(inter_a.interaction) != set(inter_b.interaction):
            return False
        if not all(torch.equal(inter_a[k], inter_b[k]) for k in inter_a.interaction):
            return False
        if not all(torch.equal(x, y) for x, y in zip(rest_a, rest_b, strict=True)):
            return False
    return True


def test_batches_are_built_once_and_equal_to_recboles(data_path, monkeypatch):
    _, _, valid, _ = _loaders(data_path, eval_batch_size=1000)
    draws = []
    draw = valid._neg_sampling
    monkeypatch.setattr(valid, "_neg_sampling", lambda data: draws.append(1) or draw(data))
    first = list(valid)
    assert len(draws) == N_USERS and len(first) > 1
    np.random.random(10)
    state = np.random.get_state()
    second = list(valid)
    assert len(draws) == N_USERS, "the second evaluation built its batches again"
    assert _state_equal(np.random.get_state(), state)
    assert _batches_equal(first, second)
    assert _batches_equal(second, _built_afresh(valid))


def test_a_batch_changed_in_place_does_not_change_the_next_evaluation(data_path):
    _, _, valid, _ = _loaders(data_path)
    expected = _built_afresh(valid)
    for interaction, row_idx, positive_u, positive_i in valid:
        positive_u.zero_()
        for value in interaction.interaction.values():
            value.zero_()
        row_idx.zero_()
        positive_i.zero_()
    assert _batches_equal(list(valid), expected)


def test_a_batch_is_cached_by_its_users(data_path):
    """Any grouping of users (another eval_batch_size, a distributed share) gets its own batch."""
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader

    _, _, valid, _ = _loaders(data_path)
    list(valid)
    build = NegSampleEvalDataLoader.collate_fn.__wrapped__
    for index in ([3, 1, 2], [0], [1, 2, 3]):
        expected = build(valid, index)
        assert _batches_equal([valid.collate_fn(index)], [expected])
        assert _batches_equal([valid.collate_fn(index)], [expected])


@pytest.mark.parametrize(
    "overrides",
    [{"fixed_eval_candidates": False}, {"worker": 1}],
    ids=["recbole-redraw", "workers"],
)
def test_batches_are_built_afresh_where_they_are_not_a_function_of_the_index(
    data_path, monkeypatch, overrides
):
    _, _, valid, _ = _loaders(data_path, **overrides)
    assert candidates._batch_cache(valid) is None
    if overrides.get("worker"):
        return  # collate_fn runs in the workers: the count below cannot see it
    draws = []
    draw = valid._neg_sampling
    monkeypatch.setattr(valid, "_neg_sampling", lambda data: draws.append(1) or draw(data))
    list(valid)
    list(valid)
    assert len(draws) == 2 * N_USERS


def test_only_validation_batches_are_kept(data_path):
    _, _, valid, test = _loaders(data_path)
    assert candidates._batch_cache(valid) is not None
    assert candidates._batch_cache(test) is None  # a test runs once a run


def test_a_transform_turns_the_cache_off(data_path):
    from recbole.data.transform import Equal

    _, _, valid, _ = _loaders(data_path)
    assert candidates._batch_cache(valid) is not None
    # A subclass may change the data: only RecBole's identity itself keeps the cache.
    valid.transform = type("Reordered", (Equal,), {})(valid.config)
    assert candidates._batch_cache(valid) is None


def test_cached_evaluations_agree_with_recboles(data_path, monkeypatch):
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader
    from recbole.trainer import Trainer

    config, train, valid, _ = _loaders(data_path, "BPR")
    trainer = Trainer(config, get_model("BPR")(config, train._dataset))
    cached = [trainer.evaluate(valid, load_best_model=False) for _ in range(2)]
    monkeypatch.setattr(
        NegSampleEvalDataLoader, "collate_fn", NegSampleEvalDataLoader.collate_fn.__wrapped__
    )
    _, _, fresh_valid, _ = _loaders(data_path, "BPR")
    assert cached[0] == cached[1] == trainer.evaluate(fresh_valid, load_best_model=False)


def test_layout_does_not_depend_on_row_order_or_batching():
    """Several held-out items per user (a random split with uniN): each (user, item) keeps its
    negatives however the rows are ordered or grouped, in sample_by_user_ids' layout."""
    used = np.array([{1, 2, 3}, {4, 5}, {6}], dtype=object)
    sampler = SimpleNamespace(distribution="uniform", item_num=30, used_ids=used, phase="test")
    users, items, num = np.array([0, 1, 0, 2, 1]), np.array([1, 4, 3, 6, 5]), 7

    def by_row(u, i):
        flat = candidates.fixed_negatives(sampler, 5, u, i, num).numpy()
        return {
            (uu, ii): tuple(flat[k :: len(u)]) for k, (uu, ii) in enumerate(zip(u, i, strict=True))
        }

    whole = by_row(users, items)
    order = np.array([3, 2, 4, 0, 1])
    assert by_row(users[order], items[order]) == whole
    alone = [k for k in range(len(users)) if users[k] == 0]
    others = [k for k in range(len(users)) if users[k] != 0]
    assert {**by_row(users[alone], items[alone]), **by_row(users[others], items[others])} == whole
    for (user, _item), negatives in whole.items():
        assert len(negatives) == num and not set(negatives) & used[user]
        assert all(1 <= n < 30 for n in negatives)


def test_install_is_idempotent():
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader

    before = NegSampleEvalDataLoader._neg_sampling, NegSampleEvalDataLoader.collate_fn
    candidates.install()
    assert (NegSampleEvalDataLoader._neg_sampling, NegSampleEvalDataLoader.collate_fn) == before
    assert all(function.__recbole_hdccf__ for function in before)


def test_fixed_by_default_with_several_held_out_items_per_user(data_path):
    """Without the key (RecBole's random split, uni20): several positives per user, still fixed."""
    mode = {"split": {"RS": [0.6, 0.2, 0.2]}, "order": "RO", "group_by": "user", "mode": "uni20"}
    overrides = {"protocol": "recbole-benchmark", "eval_args": mode}
    config, _, _, test = _loaders(data_path, **overrides)
    assert config["fixed_eval_candidates"] is None and candidates.enabled(config)
    first = _candidates(test)
    assert max(len(items) for items in first.values()) >= 2 * 21
    np.random.random(10)
    _, _, _, test_b = _loaders(data_path, "NeuMF", eval_batch_size=100, **overrides)
    assert _candidates(test) == first == _candidates(test_b)


def test_repeatable_sampler_excludes_only_the_held_out_item(data_path):
    _, _, _, test = _loaders(data_path, repeatable=True)
    assert type(test._sampler).__name__ == "RepeatableSampler"
    first = _candidates(test)
    np.random.random(10)
    assert _candidates(test) == first
    for items in first.values():
        assert len(items) == 100 and items[0] not in items[1:]
