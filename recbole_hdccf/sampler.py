"""In-batch neighbour sampling (paper sec. 2.2, eq. 9) and HDCCF's training dataloader.

For each observed (u, i) of a batch, ``P`` positive items of ``u`` and ``P`` positive users of
``i`` are drawn uniformly, with replacement, from the training split only (the ``dataset`` a
RecBole train loader holds). Row ``k``'s negatives are the other rows' neighbours, as multisets;
the model builds that pool from the batch. Evaluation keeps RecBole's dataloaders.

Batches and shards: epoch ``e`` visits the training rows in the order of one permutation drawn
from ``(seed, e)`` (the identity with ``shuffle=False``), cut into global batches of
``train_batch_size`` rows. With ``W`` processes each global batch is split into ``W`` consecutive
parts (``numpy.array_split``: sizes differ by at most one, a part may be empty) and process ``r``
trains on part ``r``. Every process therefore has the same number of batches per epoch (DDP's
all-reduce never waits for a missing batch), and every row is trained on exactly once per epoch
(RecBole's ``DistributedSampler(drop_last=False)`` pads the shards with repeated rows instead).
RecBole's convention holds: a process trains on ``train_batch_size / W`` rows per step.

Randomness: the neighbours of a global batch are drawn from
``SeedSequence([seed, epoch, first index of the global batch])``. Within an epoch every training
row index appears in exactly one batch, so batches never share a stream, whichever worker
process builds them and however many workers or processes there are, and a resumed run redraws
exactly what an uninterrupted one drew. Every process can thus rebuild the whole global batch,
neighbours included, without communication: in a distributed run a batch holds all rows of the
global batch and ``shard_weight`` marks this process's rows (see ``HDCCF.calculate_loss``, which
trains on those rows and, with ``gather_negatives``, contrasts them against the neighbours of the
whole global batch, i.e. what an all_gather of every process's neighbour ids would return).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction

NEIGHBOR_ITEMS = "neighbor_items"  # [M, P] positive items of each row's user
NEIGHBOR_USERS = "neighbor_users"  # [M, P] positive users of each row's item
# [G] distributed runs only: W / G on this process's rows of the global batch, 0 on the others'
SHARD_WEIGHT = "shard_weight"
_PERMUTATION_KEY = 1  # spawn key that keeps the shuffle's stream apart from the batches' streams


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

    # Up to this many (user, item) cells, membership is a lookup in a dense bool table
    # (ml-1m: 20 MiB), else a binary search in the sorted keys.
    DENSE_LOOKUP_CELLS = 2**26

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether each (user, item) is a training interaction. Tensors of equal shape -> bool."""
        query = users.long() * self.n_items + items.long()
        if self.n_users * self.n_items <= self.DENSE_LOOKUP_CELLS:
            table = self._dense_table(users.device)
            return table[query]
        keys = torch.as_tensor(self.keys, device=users.device)
        pos = torch.searchsorted(keys, query).clamp_max(len(keys) - 1)
        return keys[pos] == query

    def _dense_table(self, device) -> torch.Tensor:
        table = getattr(self, "_table", None)
        if table is None or table.device != torch.device(device):
            table = torch.zeros(self.n_users * self.n_items, dtype=torch.bool, device=device)
            table[torch.as_tensor(self.keys, device=device)] = True
            self._table = table
        return table

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


class ShardBatch(NamedTuple):
    """One process's part of one global batch: rows ``index[start:stop]`` of ``index``."""

    epoch: int
    index: np.ndarray  # the global batch's training row indices
    start: int
    stop: int

    @property
    def rows(self) -> np.ndarray:
        return self.index[self.start : self.stop]


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` rows: the same on every process."""
    if not shuffle:
        return np.arange(n)
    sequence = np.random.SeedSequence(
        [int(seed) % 2**64, int(epoch)], spawn_key=(_PERMUTATION_KEY,)
    )
    return np.random.default_rng(sequence).permutation(n)


def shard_bounds(size: int, world_size: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``rank`` when ``size`` rows are split into ``world_size`` parts
    as ``numpy.array_split`` does (the first ``size % world_size`` parts have one row more)."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def shard_batches(
    n: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int, shuffle=True
) -> list[ShardBatch]:
    """Process ``rank``'s parts of epoch ``epoch``'s global batches (module docstring)."""
    order = epoch_permutation(n, seed, epoch, shuffle)
    batches = []
    for begin in range(0, n, batch_size):
        index = order[begin : begin + batch_size]
        batches.append(ShardBatch(epoch, index, *shard_bounds(len(index), world_size, rank)))
    return batches


class ShardedBatchSampler(torch.utils.data.Sampler):
    """Yields :class:`ShardBatch` items; ``set_epoch`` picks the epoch (as ``DistributedSampler``)."""

    def __init__(self, n, batch_size, world_size=1, rank=0, seed=0, shuffle=True):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"batch_size={batch_size}, world_size={world_size}, rank={rank}")
        self.n, self.batch_size = int(n), int(batch_size)
        self.world_size, self.rank = int(world_size), int(rank)
        self.seed, self.shuffle, self.epoch = int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        args = (self.n, self.batch_size, self.world_size, self.rank, self.seed, self.epoch)
        return iter(shard_batches(*args, shuffle=self.shuffle))


class _Identity:
    """A map-style dataset that returns its key: the sampler's item goes to ``collate_fn``."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        return key


class _ShardedDataLoader(torch.utils.data.DataLoader):
    """Sits between RecBole's ``AbstractDataLoader`` and torch's ``DataLoader`` in the MRO and
    replaces the index sampling RecBole sets up (``RandomSampler`` or a padding
    ``DistributedSampler`` with ``batch_size=step``) by the loader's :class:`ShardedBatchSampler`."""

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, **kwargs):
        index_sampler = self.make_index_sampler(len(dataset))
        super().__init__(_Identity(len(dataset)), batch_size=None, sampler=index_sampler, **kwargs)

    def make_index_sampler(self, n: int) -> ShardedBatchSampler:
        raise NotImplementedError


class NeighborTrainDataLoader(TrainDataLoader, _ShardedDataLoader):
    """RecBole's ``TrainDataLoader`` whose batches also carry each row's sampled neighbours.

    Installed by ``HDCCFTrainer`` in place of the train loader RecBole builds; batches are the
    observed rows (``train_neg_sample_args: ~``) plus ``neighbor_items`` and ``neighbor_users``,
    and in a distributed run every row of the global batch plus ``shard_weight`` (module
    docstring). ``world_size`` and ``rank`` default to the run's (1 and 0 outside one).
    """

    def __init__(
        self, config, dataset, sampler, graph: TrainGraph, shuffle=True, world_size=None, rank=None
    ):
        self.graph = graph
        self.n_neighbors = int(config["neighbor_num"])
        self.seed = int(config["seed"]) % 2**64
        self.epoch = 0
        self.distributed = not config["single_spec"] or world_size is not None
        if world_size is None:
            single = config["single_spec"]
            world_size = 1 if single else int(config["world_size"])
            rank = 0 if single else int(config["local_rank"]) + int(config["offset"] or 0)
        self.world_size, self.rank = int(world_size), int(rank or 0)
        self.global_batch_size = int(config["train_batch_size"])
        self.shuffle_rows = bool(shuffle)
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def make_index_sampler(self, n: int) -> ShardedBatchSampler:
        return ShardedBatchSampler(
            n, self.global_batch_size, self.world_size, self.rank, self.seed, self.shuffle_rows
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def batch_rng(self, index: np.ndarray, epoch: int | None = None) -> np.random.Generator:
        """The neighbour stream of the global batch ``index`` in ``epoch`` (default: current)."""
        first = int(index[0]) if len(index) else 0
        epoch = self.epoch if epoch is None else int(epoch)
        return np.random.default_rng(np.random.SeedSequence([self.seed, epoch, first]))

    def collate_fn(self, batch):
        """A :class:`ShardBatch` (or, as RecBole passes, a list of row indices) -> Interaction."""
        if not isinstance(batch, ShardBatch):
            index = np.asarray(batch, dtype=np.int64)
            batch = ShardBatch(self.epoch, index, 0, len(index))
        index = batch.index if self.distributed else batch.rows
        data = super().collate_fn(index)
        neighbor_items, neighbor_users = self.graph.sample(
            data[self._dataset.uid_field].numpy(),
            data[self._dataset.iid_field].numpy(),
            self.n_neighbors,
            self.batch_rng(batch.index, batch.epoch),
        )
        columns = {
            NEIGHBOR_ITEMS: torch.from_numpy(neighbor_items),
            NEIGHBOR_USERS: torch.from_numpy(neighbor_users),
        }
        if self.distributed:
            weight = torch.zeros(len(index))
            weight[batch.start : batch.stop] = self.world_size / max(len(index), 1)
            columns[SHARD_WEIGHT] = weight
        data.update(Interaction(columns))
        return data
