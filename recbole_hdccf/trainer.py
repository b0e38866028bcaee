"""HDCCF's trainer: RecBole's ``Trainer`` with the neighbour-sampling training dataloader.

``recbole.utils.get_trainer`` finds it as ``recbole.trainer.HDCCFTrainer`` (see registry.py).
Evaluation, early stopping, checkpoints and logging are RecBole's own.
"""

from __future__ import annotations

from recbole.trainer import Trainer

from recbole_hdccf.sampler import NeighborTrainDataLoader


class HDCCFTrainer(Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)

    def neighbor_loader(self, train_data):
        """RecBole's train loader, rebuilt as a :class:`NeighborTrainDataLoader` over the same
        training split (idempotent)."""
        if isinstance(train_data, NeighborTrainDataLoader):
            return train_data
        return NeighborTrainDataLoader(
            self.config,
            train_data._dataset,
            train_data._sampler,
            self.model.train_graph,
            shuffle=train_data.shuffle,
        )

    def fit(
        self,
        train_data,
        valid_data=None,
        verbose=True,
        saved=True,
        show_progress=False,
        callback_fn=None,
    ):
        return super().fit(
            self.neighbor_loader(train_data),
            valid_data,
            verbose=verbose,
            saved=saved,
            show_progress=show_progress,
            callback_fn=callback_fn,
        )

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        train_data = self.neighbor_loader(train_data)
        train_data.set_epoch(epoch_idx)
        return super()._train_epoch(
            train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress
        )
