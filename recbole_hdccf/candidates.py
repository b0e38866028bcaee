"""Sampled-evaluation candidates that depend only on (dataset, split, seed).

RecBole 1.2.1 draws the negatives of a sampled evaluation (``mode: uni99``, ``pop100``, ...) from
numpy's global RNG each time ``NegSampleEvalDataLoader.collate_fn`` builds a batch (through
``_neg_sampling`` -> ``Sampler.sample_by_user_ids``). Two models in one table, or two evaluations of
one model, therefore rank their held-out items against different negatives, and the draws depend on
everything that used numpy's RNG before (model initialisation, training, earlier evaluations,
``eval_batch_size``, worker processes).

:func:`install` (run by ``import recbole_hdccf``) replaces ``NegSampleEvalDataLoader._neg_sampling``
so that the negatives of user ``u`` in phase ``valid``/``test`` come from their own generator,
``numpy.random.default_rng([seed, phase, u])`` with ``seed = config['seed']``. Everything else is
RecBole's: the same distribution (uniform over item ids ``1..item_num-1``, or RecBole's popularity
alias table), drawn with replacement, and an item is redrawn while it is one of the items RecBole
excludes (for ``Sampler``: every item of the user in this phase's and the earlier phases'
interactions; for ``RepeatableSampler``: the held-out item of the row). The global numpy state is
neither read nor changed.

With fixed candidates a batch is a function of its users alone, so :func:`install` also makes
``NegSampleEvalDataLoader.collate_fn`` build each validation batch once and hand out copies of it
at later validations. RecBole builds a sampled-evaluation batch user by user (a draw and an
``Interaction`` repeat each), which made a validation cost nearly as much as a training epoch of
a fast model (3.8 s against 5.2 s for BPR and ENMF on ML-1M); the copies hold the same values, so results do not change
(``tests/test_protocol.py``). The cost is memory: the validation batches of one run (ML-1M under
``uni99``: 604,000 rows). Batches are built afresh at test time (once a run), and where they are
not a function of the index: RecBole's redraw, a data transform (``transform``), or worker
processes (``worker > 0``), whose copies of the loader do not last.

``fixed_eval_candidates: False`` in the config restores RecBole's behaviour; absent or ``None``
means ``True``. Full-ranking evaluation (``mode: full``) draws nothing and is untouched.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

CONFIG_KEY = "fixed_eval_candidates"
# Phase codes in the generator's seed; "train" never reaches a NegSampleEvalDataLoader.
PHASE_CODES = {"train": 0, "valid": 1, "test": 2}
_FALSE_STRINGS = {"false", "0", "no", "off", "none"}


def enabled(config) -> bool:
    """Whether ``config`` asks for fixed candidates (the default)."""
    try:
        value = config[CONFIG_KEY]
    except KeyError:
        return True
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


def user_rng(seed: int, phase: str, uid: int) -> np.random.Generator:
    """The generator of one user's candidates: a function of (seed, phase, user id) only."""
    return np.random.default_rng([int(seed) % 2**64, PHASE_CODES[phase], int(uid)])


def _alias_arrays(sampler):
    """RecBole's popularity alias table (``sampler.prob`` / ``sampler.alias``) as arrays, cached."""
    cached = getattr(sampler, "_recbole_hdccf_alias", None)
    if cached is not None and cached[0] is sampler.prob:
        return cached[1:]
    keys = np.array(list(sampler.prob.keys()), dtype=np.int64)
    prob = np.array([sampler.prob[k] for k in keys], dtype=np.float64)
    alias = np.array([sampler.alias[k] for k in keys], dtype=np.int64)
    # RecBole leaves alias -1 on keys whose rounded probability ends just below 1; it would
    # then return item -1. Such a key keeps itself instead.
    alias = np.where(alias < 0, keys, alias)
    sampler._recbole_hdccf_alias = (sampler.prob, keys, prob, alias)
    return keys, prob, alias


def _draw(sampler, rng: np.random.Generator, size: int) -> np.ndarray:
    """``size`` item ids from the sampler's distribution, with replacement, from ``rng``."""
    if sampler.distribution == "uniform":
        return rng.integers(1, sampler.item_num, size, dtype=np.int64)
    if sampler.distribution == "popularity":
        keys, prob, alias = _alias_arrays(sampler)
        index = rng.integers(0, len(keys), size)
        keep = prob[index] > rng.random(size)
        return np.where(keep, keys[index], alias[index])
    raise NotImplementedError(
        f"The sampling distribution [{sampler.distribution}] is not implemented."
    )


def _excluded(sampler, uid: int, positives: np.ndarray, num: int):
    """The items a draw must avoid: one set for all draws, or one item per draw."""
    from recbole.sampler import RepeatableSampler

    if isinstance(sampler, RepeatableSampler):
        return None, np.repeat(positives, num)  # only the row's own item, as RecBole does
    return sampler.used_ids[uid], None


def user_negatives(sampler, rng: np.random.Generator, uid: int, positives: np.ndarray, num: int):
    """``num`` negatives for each of one user's held-out items, shape ``(len(positives), num)``."""
    used, per_draw = _excluded(sampler, uid, positives, num)
    values = _draw(sampler, rng, len(positives) * num)

    def rejected(index):
        if used is None:
            return values[index] == per_draw[index]
        # A set lookup per value: several times faster than np.isin for ~100 values.
        picked = values[index].tolist()
        return np.fromiter((v in used for v in picked), dtype=bool, count=len(picked))

    redo = np.flatnonzero(rejected(np.arange(len(values))))
    while redo.size:
        values[redo] = _draw(sampler, rng, redo.size)
        redo = redo[rejected(redo)]
    return values.reshape(len(positives), num)


def fixed_negatives(sampler, seed: int, user_ids, item_ids, num: int) -> torch.Tensor:
    """Negatives in ``Sampler.sample_by_user_ids``'s layout: entry ``j * n + k`` is row ``k``'s
    ``j``-th negative. A user's rows take their draws in the order of their item ids, so the
    result does not depend on how the rows are batched or ordered."""
    user_ids = np.asarray(user_ids)
    item_ids = np.asarray(item_ids)
    out = np.empty((num, len(user_ids)), dtype=np.int64)
    for uid in np.unique(user_ids):
        rows = np.flatnonzero(user_ids == uid)
        rows = rows[np.argsort(item_ids[rows], kind="stable")]
        rng = user_rng(seed, sampler.phase, uid)
        out[:, rows] = user_negatives(sampler, rng, int(uid), item_ids[rows], num).T
    return torch.from_numpy(out.reshape(-1))


def _uses_fixed_candidates(loader) -> bool:
    args = loader.neg_sample_args
    return (
        enabled(loader.config)
        and not args.get("dynamic", False)
        and args["distribution"] in ("uniform", "popularity")
        and args["sample_num"] != "none"
        and getattr(loader._sampler, "phase", None) in ("valid", "test")
    )


def _batch_cache(loader) -> dict | None:
    """The loader's built batches by index, or None where a batch is not a function of its index.
    The cache starts afresh when anything else a batch depends on changes (seed, sampling
    settings after ``update_config``, data set, sampler)."""
    from recbole.data.transform import Equal

    if loader.num_workers or type(loader.transform) is not Equal:
        return None
    # Validation repeats every epoch; a test runs once, where a cache would only hold memory.
    if not _uses_fixed_candidates(loader) or loader._sampler.phase != "valid":
        return None
    signature = (
        loader.config["seed"],
        repr(loader.neg_sample_args),
        id(loader._dataset),
        id(loader._sampler),
    )
    held = loader.__dict__.get("_recbole_hdccf_batches")
    if held is None or held[0] != signature:
        held = (signature, {})
        loader.__dict__["_recbole_hdccf_batches"] = held
    return held[1]


def _copy_batch(batch):
    """Fresh tensors, so that a caller changing a batch in place cannot change a later one."""
    from recbole.data.interaction import Interaction

    interaction, *rest = batch
    copied = Interaction({key: value.clone() for key, value in interaction.interaction.items()})
    return (copied, *(None if part is None else part.clone() for part in rest))


def install() -> None:
    """Make ``NegSampleEvalDataLoader`` draw fixed candidates and build each batch once
    (idempotent)."""
    from recbole.data.dataloader.general_dataloader import NegSampleEvalDataLoader

    original = NegSampleEvalDataLoader._neg_sampling
    if getattr(original, "__recbole_hdccf__", False):
        return
    original_collate = NegSampleEvalDataLoader.collate_fn

    @functools.wraps(original_collate)
    def collate_fn(self, index):
        cache = _batch_cache(self)
        if cache is None:
            return original_collate(self, index)
        key = tuple(int(i) for i in index)
        if key not in cache:
            cache[key] = original_collate(self, index)
        return _copy_batch(cache[key])

    @functools.wraps(original)
    def _neg_sampling(self, inter_feat):
        if not _uses_fixed_candidates(self):
            return original(self, inter_feat)
        negatives = fixed_negatives(
            self._sampler,
            self.config["seed"],
            inter_feat[self.uid_field].numpy(),
            inter_feat[self.iid_field].numpy(),
            self.neg_sample_num,
        )
        return self.sampling_func(inter_feat, negatives)

    _neg_sampling.__recbole_hdccf__ = True
    collate_fn.__recbole_hdccf__ = True
    NegSampleEvalDataLoader._neg_sampling = _neg_sampling
    NegSampleEvalDataLoader.collate_fn = collate_fn
