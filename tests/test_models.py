"""The shared model tests (tests/model_mixin.py) for HDCCF, each of its ablations, and BPR."""

from __future__ import annotations

import pytest
from model_mixin import ModelTestMixin

from recbole_hdccf.settings import ABLATIONS


class TestHDCCF(ModelTestMixin):
    """HDCCF with its defaults (properties/HDCCF.yaml)."""

    model_name = "HDCCF"


class TestHDCCFAblations(ModelTestMixin):
    """HDCCF under each ablation of the paper (Fig. 2 and 3): one class-scoped setup per ablation."""

    model_name = "HDCCF"

    @pytest.fixture(scope="class", params=sorted(ABLATIONS))
    def overrides(self, request):
        return {"ablation": request.param}


class TestBPR(ModelTestMixin):
    """A RecBole model through the same tests: the plugin must leave it unchanged."""

    model_name = "BPR"


def test_every_ablation_is_covered():
    expected = {"wo_u", "wo_i", "wo_ui", "bpr_plus", "biased", "unmodulated"}
    assert set(ABLATIONS) == expected
