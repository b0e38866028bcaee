"""HDCCF's hyper-parameters: read from a RecBole ``Config``, validated in one place.

Every check names the key, the value and the allowed range. The paper's ablations (Fig. 2 and 3)
are one key, ``ablation``, that sets the underlying switches; naming a switch that contradicts
the chosen ablation is an error rather than a silent override.

Contradictions. A value differing from its default counts as given. Two given settings contradict
when one makes the other impossible or without effect (a setting that silently does nothing
hides a mistake):

- ``modulation_hidden`` non-empty with ``modulation: false``: no network to give layers to;
- ``w_u_pos`` / ``w_i_pos`` given with ``debias: false`` or ``ui_loss: bpr``: only the debiased
  contrastive loss reads them; ``w_u_pos`` with ``ui_negatives: items`` (``w_i_pos`` with
  ``users``): that side has no negatives;
- ``aux_mask`` given with ``debias: false`` or with both auxiliary losses off;
- an ablation and a switch it sets to another value (``ablation: wo_u`` with ``lambda_u: 0.5``);
- ``train_batch_size < 2 W`` in a ``W``-process run without ``gather_negatives``: a process would
  train on fewer than 2 rows of each batch, i.e. without any negative.

Not contradictions: ``ui_loss: bpr`` with ``debias: false`` (BPR+ is biased anyway; ``debias`` then
only decides the auxiliary losses' masks) or with ``debias: true``; ``gather_negatives: true`` in a
single process (a no-op, so one config serves both); an ablation on top of settings that only the
switched-off part reads (``ablation: biased`` with ``w_u_pos: 0.2``: ablations run over a tuned
configuration). The checks above see the given switches, not the ablation's;
``normalize: false`` with the debiased loss is allowed (the clamp then uses the batch's norms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

ABLATIONS = {
    # name: switches it sets (paper Fig. 2 and Fig. 3)
    "wo_u": {"lambda_u": 0.0},
    "wo_i": {"lambda_i": 0.0},
    "wo_ui": {"lambda_u": 0.0, "lambda_i": 0.0},
    "bpr_plus": {"ui_loss": "bpr", "lambda_u": 0.0, "lambda_i": 0.0},
    "biased": {"debias": False},
    "unmodulated": {"modulation": False},
}
AUX_MASKS = ("item", "any", "none")
UI_LOSSES = ("contrastive", "bpr")
UI_NEGATIVES = ("both", "items", "users")
POOL_WEIGHTINGS = ("popularity", "uniform")


class ConfigError(ValueError):
    """A bad HDCCF setting; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class HDCCFSettings:
    embedding_size: int = 64
    modulation: bool = True
    modulation_hidden: tuple[int, ...] = ()
    normalize: bool = False
    tau: float = 1.0
    neighbor_num: int = 2
    lambda_u: float = 0.01
    lambda_i: float = 0.01
    debias: bool = True
    w_u_pos: float = 0.05
    w_i_pos: float = 0.05
    aux_mask: str = "item"
    ui_loss: str = "contrastive"
    ui_negatives: str = "both"
    pool_weighting: str = "uniform"
    uniform_negatives: int = 0
    ablation: str | None = None
    full_sort_memory_mb: int = 512
    train_batch_size: int = 256
    gather_negatives: bool = False

    @classmethod
    def from_config(cls, config, world_size: int | None = None) -> HDCCFSettings:
        """Read, validate and resolve the settings of a RecBole ``Config`` (or a plain dict).
        ``world_size``: processes of the run (default: read from ``config``)."""

        def get(key, default):
            try:
                value = config[key]
            except KeyError:
                return default
            return default if value is None and key != "ablation" else value

        raw = {name: get(name, field.default) for name, field in cls.__dataclass_fields__.items()}
        hidden = raw["modulation_hidden"]
        if _is_int(hidden):
            hidden = [hidden]
        if not isinstance(hidden, (list, tuple)):
            raise ConfigError(
                f"modulation_hidden={hidden!r}: expected a list of hidden layer sizes, e.g. [] or [64]"
            )
        raw["modulation_hidden"] = tuple(hidden)
        ablation = raw["ablation"]
        if isinstance(ablation, str) and ablation in ("", "none", "None"):
            raw["ablation"] = None
        settings = cls(**raw)
        settings.validate(world_size=world_size or _world_size(config))
        return settings.resolved()

    def resolved(self) -> HDCCFSettings:
        """Apply the ablation's switches (checked against explicit contradictions)."""
        if self.ablation is None:
            return self
        switches = ABLATIONS[self.ablation]
        for key, value in switches.items():
            default = HDCCFSettings.__dataclass_fields__[key].default
            current = getattr(self, key)
            if current != default and current != value:
                raise ConfigError(
                    f"ablation={self.ablation!r} sets {key}={value!r}, but {key}={current!r} was "
                    f"given too; drop one of them"
                )
        return replace(self, **switches)

    def validate(self, world_size: int = 1) -> None:
        """Raise :class:`ConfigError` naming the first bad key; ``world_size``: processes of the
        run (1 outside a distributed run)."""
        self._check_types()
        self._check_ranges()
        self._check_given(world_size)
        self.resolved()  # an ablation contradicting a given switch raises here

    def _fail(self, key, allowed):
        raise ConfigError(f"{key}={getattr(self, key)!r}: {allowed}")

    def _check_types(self) -> None:
        for key in (
            "embedding_size",
            "neighbor_num",
            "train_batch_size",
            "full_sort_memory_mb",
            "uniform_negatives",
        ):
            if not _is_int(getattr(self, key)):
                self._fail(key, "must be an integer")
        for key in ("tau", "lambda_u", "lambda_i", "w_u_pos", "w_i_pos"):
            if not _is_number(getattr(self, key)):
                self._fail(key, "must be a finite number")
        for key in ("modulation", "normalize", "debias", "gather_negatives"):
            if not isinstance(getattr(self, key), bool):
                self._fail(key, "must be true or false")
        hidden = self.modulation_hidden
        if not isinstance(hidden, (list, tuple)) or any(not _is_int(h) or h <= 0 for h in hidden):
            self._fail("modulation_hidden", "hidden layer sizes must be positive integers")
        choices = {
            "aux_mask": AUX_MASKS,
            "ui_loss": UI_LOSSES,
            "ui_negatives": UI_NEGATIVES,
            "pool_weighting": POOL_WEIGHTINGS,
        }
        for key, allowed in choices.items():
            if not isinstance(getattr(self, key), str) or getattr(self, key) not in allowed:
                self._fail(key, f"choose one of {list(allowed)}")
        if self.ablation is not None and (
            not isinstance(self.ablation, str) or self.ablation not in ABLATIONS
        ):
            self._fail("ablation", f"choose one of {sorted(ABLATIONS)} or leave it empty (~)")

    def _check_ranges(self) -> None:
        if self.embedding_size <= 0:
            self._fail("embedding_size", "must be a positive integer (d >= 1)")
        if not self.tau > 0:
            self._fail("tau", "the temperature must be > 0 (the paper tunes it around 0.1)")
        if self.neighbor_num < 1:
            self._fail("neighbor_num", "P must be an integer >= 1 (the paper uses 1 to 6)")
        for key in ("w_u_pos", "w_i_pos"):
            if not 0 <= getattr(self, key) < 1:
                self._fail(key, "the false-negative rate omega^+ must lie in [0, 1)")
        for key in ("lambda_u", "lambda_i"):
            if getattr(self, key) < 0:
                self._fail(key, "an auxiliary loss weight must be >= 0 (0 switches the loss off)")
        if self.uniform_negatives < 0:
            self._fail(
                "uniform_negatives",
                "must be an integer >= 0 (uniformly drawn items and users added to each batch's "
                "negatives; 0 = the paper's in-batch negatives only)",
            )
        if self.train_batch_size < 2:
            self._fail(
                "train_batch_size", "must be >= 2: the other rows of a batch are the negatives"
            )
        if self.full_sort_memory_mb <= 0:
            self._fail(
                "full_sort_memory_mb", "must be a positive integer (MB per full-ranking block)"
            )

    def _given(self, key) -> bool:
        return getattr(self, key) != _DEFAULTS[key]

    def _check_given(self, world_size: int) -> None:
        """Contradictions among the given switches (before the ablation)."""
        if self.modulation_hidden and not self.modulation:
            self._fail("modulation_hidden", "has no effect with modulation=False; drop one of them")
        for key, side in (("w_u_pos", "items"), ("w_i_pos", "users")):
            if self._given(key) and (not self.debias or self.ui_loss == "bpr"):
                reason = "debias=False" if not self.debias else "ui_loss='bpr'"
                self._fail(key, f"has no effect with {reason}; drop one of them")
            if self._given(key) and self.ui_negatives == side:
                self._fail(key, f"has no effect with ui_negatives={side!r}; drop one of them")
        if self._given("aux_mask"):
            if not self.debias:
                self._fail("aux_mask", "has no effect with debias=False; drop one of them")
            if self.lambda_u == 0 and self.lambda_i == 0:
                self._fail("aux_mask", "has no effect with lambda_u=lambda_i=0; drop one of them")
        if world_size > 1 and not self.gather_negatives and self.train_batch_size < 2 * world_size:
            self._fail(
                "train_batch_size",
                f"with {world_size} processes and gather_negatives=False each process trains on "
                f"train_batch_size/{world_size} rows of a batch, fewer than 2 (no negatives): "
                f"use train_batch_size >= {2 * world_size} or gather_negatives: true",
            )


_DEFAULTS = {field.name: field.default for field in fields(HDCCFSettings)}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _world_size(config) -> int:
    """Processes of the run ``config`` belongs to (1 outside a distributed run)."""
    try:
        single = config["single_spec"]
        world = config["world_size"]
    except KeyError:
        return 1
    if single is not False or not _is_int(world) or world < 1:
        return 1
    return world
