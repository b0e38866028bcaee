"""HDCCF's hyper-parameters: read from a RecBole ``Config``, validated in one place.

Every check names the key, the value and the allowed range. The paper's ablations (Fig. 2 and 3)
are one key, ``ablation``, that sets the underlying switches; naming a switch that contradicts
the chosen ablation is an error rather than a silent override.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


class ConfigError(ValueError):
    """A bad HDCCF setting; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class HDCCFSettings:
    embedding_size: int = 64
    modulation: bool = True
    modulation_hidden: tuple[int, ...] = ()
    normalize: bool = True
    tau: float = 0.1
    neighbor_num: int = 2
    lambda_u: float = 0.1
    lambda_i: float = 0.1
    debias: bool = True
    w_u_pos: float = 0.05
    w_i_pos: float = 0.05
    aux_mask: str = "item"
    ui_loss: str = "contrastive"
    ablation: str | None = None
    full_sort_memory_mb: int = 512
    train_batch_size: int = 256

    @classmethod
    def from_config(cls, config) -> HDCCFSettings:
        def get(key, default):
            try:
                value = config[key]
            except KeyError:
                return default
            return default if value is None and key != "ablation" else value

        raw = {name: get(name, field.default) for name, field in cls.__dataclass_fields__.items()}
        hidden = raw["modulation_hidden"]
        if isinstance(hidden, int) and not isinstance(hidden, bool):
            hidden = [hidden]
        if not isinstance(hidden, (list, tuple)):
            raise ConfigError(
                f"modulation_hidden={hidden!r}: expected a list of hidden layer sizes, e.g. [] or [64]"
            )
        raw["modulation_hidden"] = tuple(hidden)
        ablation = raw["ablation"]
        if ablation in ("", "none", "None"):
            raw["ablation"] = None
        settings = cls(**raw)
        settings.validate()
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

    def validate(self) -> None:
        def fail(key, allowed):
            raise ConfigError(f"{key}={getattr(self, key)!r}: {allowed}")

        def is_number(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not isinstance(self.embedding_size, int) or self.embedding_size <= 0:
            fail("embedding_size", "must be a positive integer")
        if not is_number(self.tau) or not self.tau > 0:
            fail("tau", "the temperature must be > 0 (the paper tunes it around 0.1)")
        if not isinstance(self.neighbor_num, int) or isinstance(self.neighbor_num, bool):
            fail("neighbor_num", "P must be an integer >= 1")
        if self.neighbor_num < 1:
            fail("neighbor_num", "P must be an integer >= 1 (the paper uses 1 to 6)")
        for key in ("w_u_pos", "w_i_pos"):
            value = getattr(self, key)
            if not is_number(value) or not 0 <= value < 1:
                fail(key, "the false-negative rate omega^+ must lie in [0, 1)")
        for key in ("lambda_u", "lambda_i"):
            value = getattr(self, key)
            if not is_number(value) or value < 0:
                fail(key, "an auxiliary loss weight must be >= 0 (0 switches the loss off)")
        for key in ("modulation", "normalize", "debias"):
            if not isinstance(getattr(self, key), bool):
                fail(key, "must be true or false")
        if any(not isinstance(h, int) or h <= 0 for h in self.modulation_hidden):
            fail("modulation_hidden", "hidden layer sizes must be positive integers")
        if self.aux_mask not in AUX_MASKS:
            fail("aux_mask", f"choose one of {list(AUX_MASKS)}")
        if self.ui_loss not in UI_LOSSES:
            fail("ui_loss", f"choose one of {list(UI_LOSSES)}")
        if self.ablation is not None and self.ablation not in ABLATIONS:
            fail("ablation", f"choose one of {sorted(ABLATIONS)} or leave it empty (~)")
        if not isinstance(self.train_batch_size, int) or self.train_batch_size < 2:
            fail("train_batch_size", "must be >= 2: the other rows of a batch are the negatives")
        if not isinstance(self.full_sort_memory_mb, int) or self.full_sort_memory_mb <= 0:
            fail("full_sort_memory_mb", "must be a positive integer (MB per full-ranking block)")
        if not self.normalize and self.debias:
            raise ConfigError(
                "normalize=False with debias=True: the lower bound Q e^{-1/tau} of the debiased "
                "loss needs |f| <= 1, which only normalized embeddings guarantee; set "
                "normalize: true or debias: false"
            )
