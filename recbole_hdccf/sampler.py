"""In-batch neighbour sampling (paper sec. 2.2, eq. 9) and HDCCF's training dataloader.

For each observed (u, i) of a batch, ``P`` positive items of ``u`` and ``P`` positive users of
``i`` are drawn uniformly, with replacement, from the training split only (the ``dataset`` a
RecBole train loader holds). Row ``k``'s negatives are the other rows' neighbours, as multisets;
the model builds that pool from the batch. Evaluation keeps RecBole's dataloaders.

Randomness: each batch draws from ``SeedSequence([seed, epoch, first index of the batch])``.
Within an epoch every training row index appears in exactly one batch, so batches never share a
stream, whichever worker process builds them and however many workers there are, and a resumed
run redraws exactly what an uninterrupted one drew.
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction

NEIGHBOR_ITEMS = "neighbor_items"  # [M, P] positive items of each row's user
NEIGHBOR_USERS = "neighbor_users"  # [M, P] positive users of each row's item


class TrainGraph:
    """The training interactions as two CSR adjacency lists and a sorted key set.

    Args:
        users, items: int arrays of the training pairs (RecBole internal ids).
        n_users, n_items: id ranges (RecBole counts the padding id 0).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        self.n_users, self.n_items = int(n_users), int(n_items)
        keys = np.unique(users * self.n_items + items)  # duplicates count once
        self.keys = keys
        self.user_indptr, self.user_items = self._csr(
            keys // self.n_items, keys % self.n_items, self.n_users
        )
        self.item_indptr, self.item_users = self._csr(
            keys % self.n_items, keys // self.n_items, self.n_items
        )

    @classmethod
    def from_dataset(cls, dataset) -> TrainGraph:
        inter = dataset.inter_feat
        return cls(
            inter[dataset.uid_field].numpy(),
            inter[dataset.iid_field].numpy(),
            dataset.user_num,
            dataset.item_num,
        )

    @staticmethod
    def _csr(rows, cols, n_rows):
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        return np.cumsum(indptr), cols[order]

    @property
    def user_degree(self) -> np.ndarray:
        return np.diff(self.user_indptr)

    @property
    def item_degree(self) -> np.ndarray:
        return np.diff(self.item_indptr)

    def sample(self, users, items, n_neighbors: int, rng: np.random.Generator):
        """Uniform neighbours with replacement: ``(items of each user [M, P], users of each item [M, P])``.

        Every row's user and item have at least one training interaction (the row itself)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        size = (len(users), n_neighbors)
        return (
            self._draw(self.user_indptr, self.user_items, users, size, rng),
            self._draw(self.item_indptr, self.item_users, items, size, rng),
        )

    @staticmethod
    def _draw(indptr, indices, rows, size, rng):
        start = indptr[rows][:, None]
        degree = (indptr[rows + 1] - indptr[rows])[:, None]
        if (degree == 0).any():
            bad = rows[(degree[:, 0] == 0)][:3].tolist()
            raise ValueError(f"ids {bad} have no training interaction to sample a neighbour from")
        offset = np.floor(rng.random(size) * degree).astype(np.int64)
        return indices[start + offset]

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is a training interaction. Tensors of equal shape -> bool."""
        keys = torch.as_tensor(self.keys, device=users.device)
        query = users.long() * self.n_items + items.long()
        pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
        return keys[pos] == query

    def _dense_rows(self, ids: torch.Tensor, kind: str) -> torch.Tensor:
        indptr, indices, width = (
            (self.user_indptr, self.user_items, self.n_items)
            if kind == "user"
            else (self.item_indptr, self.item_users, self.n_users)
        )
        ids = ids.cpu().numpy()
        counts = indptr[ids + 1] - indptr[ids]
        rows = np.repeat(np.arange(len(ids)), counts)
        cols = np.concatenate([indices[indptr[k] : indptr[k + 1]] for k in ids]) if len(ids) else []
        dense = torch.zeros(len(ids), width)
        dense[torch.as_tensor(rows), torch.as_tensor(cols, dtype=torch.long)] = 1.0
        return dense

    def share_neighbor(
        self, anchors: torch.Tensor, others: torch.Tensor, kind: str
    ) -> torch.Tensor:
        """Whether each anchor shares a training neighbour with each other id: [M], [N] -> [M, N].

        ``kind="user"``: users sharing an item; ``kind="item"``: items sharing a user."""
        shared = self._dense_rows(anchors, kind) @ self._dense_rows(others, kind).T
        return (shared > 0).to(anchors.device)


class NeighborTrainDataLoader(TrainDataLoader):
    """RecBole's ``TrainDataLoader`` whose batches also carry each row's sampled neighbours.

    Installed by ``HDCCFTrainer`` in place of the train loader RecBole builds; batches are the
    observed rows (``train_neg_sample_args: ~``) plus ``neighbor_items`` and ``neighbor_users``.
    """

    def __init__(self, config, dataset, sampler, graph: TrainGraph, shuffle=True):
        self.graph = graph
        self.n_neighbors = int(config["neighbor_num"])
        self.seed = int(config["seed"])
        self.epoch = 0
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batch_rng(self, index: np.ndarray) -> np.random.Generator:
        first = int(index[0]) if len(index) else 0
        return np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, first]))

    def collate_fn(self, index):
        index = np.array(index)
        data = super().collate_fn(index)
        neighbor_items, neighbor_users = self.graph.sample(
            data[self._dataset.uid_field].numpy(),
            data[self._dataset.iid_field].numpy(),
            self.n_neighbors,
            self.batch_rng(index),
        )
        data.update(
            Interaction(
                {
                    NEIGHBOR_ITEMS: torch.from_numpy(neighbor_items),
                    NEIGHBOR_USERS: torch.from_numpy(neighbor_users),
                }
            )
        )
        return data
