"""Device-only stand-in: recbole.quick_start imports `from ray import tune` at module level;
ray 2.6.3 has no Python 3.12 wheel. Nothing here runs ray."""

import types

tune = types.SimpleNamespace(report=None)
