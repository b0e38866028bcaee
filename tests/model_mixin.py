"""Tests every recommender must pass, shared as a mixin (in the spirit of ``implicit``'s
``tests/recommender_base_test.py``).

A test class sets ``model_name`` (a RecBole or plugin model name) and ``config_overrides`` (merged
into the small tiny-dataset config of ``conftest.small_config``)::

    class TestBPR(ModelTestMixin):
        model_name = "BPR"

To run one class under several configurations, override the class-scoped ``overrides`` fixture
with ``params`` (see ``tests/test_models.py``).

Also home of the helpers that build and train a model the way RecBole's ``run_recbole`` does,
keeping every object (``build_run``, ``fit_run``, ``first_training_batch``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from conftest import isolated, restored_root_logger, small_config
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import get_model, get_trainer, init_seed

import recbole_hdccf  # noqa: F401  (plugin models resolve, shims apply)
from recbole_hdccf.trainer import resumable


# ----------------------------------------------------------------------------- helpers
@dataclass
class Run:
    """Everything ``run_recbole`` builds, kept for inspection."""

    config: Any
    dataset: Any
    train_data: Any
    valid_data: Any
    test_data: Any
    model: Any
    trainer: Any
    best_valid_result: Any = None
    test_result: Any = None
    train_losses: dict = field(default_factory=dict)


def build_run(model_name: str, config_dict: dict, dataset: str = "tiny") -> Run:
    """Config, data, model and trainer exactly as ``run_recbole`` builds them (no training)."""
    config = Config(model=model_name, dataset=dataset, config_dict=dict(config_dict))
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = resumable(get_trainer(config["MODEL_TYPE"], config["model"]))(config, model)
    return Run(config, data, train_data, valid_data, test_data, model, trainer)


def fit_run(run: Run, saved: bool = True) -> Run:
    """``trainer.fit`` then ``trainer.evaluate(test, load_best_model=saved)``, as run_recbole."""
    _, run.best_valid_result = run.trainer.fit(
        run.train_data, run.valid_data, verbose=False, saved=saved, show_progress=False
    )
    run.test_result = run.trainer.evaluate(
        run.test_data, load_best_model=saved, show_progress=False
    )
    run.train_losses = dict(run.trainer.train_loss_dict)
    return run


class _GotBatch(Exception):
    pass


def first_training_batch(run: Run) -> Interaction:
    """The first batch the trainer itself would train on (through its own ``_train_epoch``, so a
    trainer that swaps the train loader, like HDCCFTrainer, is honoured). Trains nothing."""

    def grab(interaction):
        raise _GotBatch(interaction)

    try:
        run.trainer._train_epoch(run.train_data, 0, loss_func=grab, show_progress=False)
    except _GotBatch as got:
        return got.args[0]
    raise AssertionError("the train loader yielded no batch")


def total_loss(losses) -> torch.Tensor:
    return sum(losses) if isinstance(losses, tuple) else losses


def pairs(run: Run, users, items) -> Interaction:
    """An Interaction of (user, item) id rows on the model's device."""
    return Interaction(
        {
            run.dataset.uid_field: torch.as_tensor(users, dtype=torch.long),
            run.dataset.iid_field: torch.as_tensor(items, dtype=torch.long),
        }
    ).to(run.config["device"])


def sample_pairs(run: Run, n: int = 64, seed: int = 0) -> Interaction:
    """Observed training rows and random (mostly unobserved) pairs, half and half."""
    inter = run.train_data._dataset.inter_feat
    uid, iid = run.dataset.uid_field, run.dataset.iid_field
    observed = min(n // 2, len(inter))
    generator = torch.Generator().manual_seed(seed)
    random_users = torch.randint(1, run.dataset.user_num, (n - observed,), generator=generator)
    random_items = torch.randint(1, run.dataset.item_num, (n - observed,), generator=generator)
    users = torch.cat([inter[uid][:observed], random_users])
    items = torch.cat([inter[iid][:observed], random_items])
    return pairs(run, users, items)


# ----------------------------------------------------------------------------- the mixin
class ModelTestMixin:
    """Shared model tests: subclass with ``model_name`` (and ``config_overrides``)."""

    model_name: str = ""
    config_overrides: dict = {}
    epochs: int = 2
    # Steps of the real optimizer on one batch, and the users compared in full ranking.
    optimizer_steps: int = 25
    checked_users: int = 4

    # ---------------------------------------------------------------- fixtures
    @pytest.fixture(scope="class")
    def overrides(self) -> dict:
        return dict(self.config_overrides)

    @pytest.fixture(scope="class")
    def class_dir(self, tmp_path_factory):
        return tmp_path_factory.mktemp(self.model_name or "model")

    @pytest.fixture(scope="class")
    def config_dict(self, tiny_data_path, class_dir, overrides) -> dict:
        return small_config(tiny_data_path, class_dir / "saved", epochs=self.epochs, **overrides)

    @pytest.fixture(scope="class")
    def trained(self, config_dict, class_dir) -> Run:
        """The model trained once per class (and configuration), best checkpoint loaded."""
        with restored_root_logger(), isolated(class_dir):
            return fit_run(build_run(self.model_name, config_dict))

    # ---------------------------------------------------------------- tests
    def test_trains_with_finite_loss(self, trained):
        losses = trained.train_losses
        assert sorted(losses) == list(range(self.epochs)), losses
        assert all(math.isfinite(loss) for loss in losses.values()), losses
        for name, parameter in trained.model.named_parameters():
            assert torch.isfinite(parameter).all(), f"{name} has non-finite values"
        assert set(trained.test_result) == {"hit@10", "ndcg@10"}
        assert all(0.0 <= v <= 1.0 for v in trained.test_result.values()), trained.test_result

    def test_predict_one_finite_score_per_row(self, trained):
        interaction = sample_pairs(trained, n=64)
        trained.model.eval()
        with torch.no_grad():
            scores = trained.model.predict(interaction)
        assert scores.shape == (64,)
        assert torch.isfinite(scores).all()
        # one row alone gets the score it had in the batch
        with torch.no_grad():
            single = trained.model.predict(interaction[torch.tensor([3])])
        torch.testing.assert_close(single, scores[3:4], rtol=1e-5, atol=1e-6)

    def test_full_sort_predict_matches_predict(self, trained):
        model, n_items = trained.model, trained.dataset.item_num
        interaction = next(iter(trained.test_data))[0].to(trained.config["device"])
        users = interaction[trained.dataset.uid_field]
        model.eval()
        with torch.no_grad():
            full = model.full_sort_predict(interaction)
        assert full.shape == (len(users) * n_items,)
        full = full.view(len(users), n_items)
        assert torch.isfinite(full[:, 1:]).all()  # item 0 is RecBole's padding id
        items = torch.arange(n_items)
        for row in range(min(self.checked_users, len(users))):
            user = int(users[row])
            with torch.no_grad():
                pointwise = model.predict(pairs(trained, [user] * n_items, items))
            torch.testing.assert_close(
                full[row, 1:], pointwise[1:], rtol=1e-5, atol=1e-5, msg=f"user {user}"
            )

    def test_loss_decreases_on_one_batch(self, config_dict, tmp_path):
        run = build_run(self.model_name, config_dict)
        batch = first_training_batch(run)
        optimizer = run.trainer.optimizer  # the real optimizer and learning rate
        run.model.train()
        losses = []
        for _ in range(self.optimizer_steps):
            optimizer.zero_grad()
            loss = total_loss(run.model.calculate_loss(batch))
            assert torch.isfinite(loss), losses
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], losses

    def test_checkpoint_roundtrip_gives_identical_predictions(self, trained):
        from recbole.quick_start import load_data_and_model

        checkpoint = trained.trainer.saved_model_file
        config, model, dataset, _, _, test_data = load_data_and_model(checkpoint)
        assert type(model) is type(trained.model)
        assert config["model"] == self.model_name
        model.eval()
        trained.model.eval()
        reference = trained.model.state_dict()
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), key
        interaction = sample_pairs(trained, n=64)
        with torch.no_grad():
            assert torch.equal(model.predict(interaction), trained.model.predict(interaction))
            users = next(iter(test_data))[0]
            assert torch.equal(
                model.full_sort_predict(users), trained.model.full_sort_predict(users)
            )

    def test_same_seed_gives_identical_results(self, trained, config_dict):
        again = fit_run(build_run(self.model_name, config_dict))
        assert again.train_losses == trained.train_losses
        assert again.best_valid_result == trained.best_valid_result
        assert again.test_result == trained.test_result
