"""recbole-hdccf: HDCCF (Yang et al., IJCAI 2022) as a RecBole plugin.

``import recbole_hdccf`` applies the compatibility shims for RecBole 1.2.1 on today's stack, keeps
the memory training frees for its next step (``allocator``: glibc only, a process setting) and
registers the plugin's models, so ``HDCCF`` resolves in ``run_recbole``, ``objective_function``,
``load_data_and_model`` and ``get_trainer`` like any RecBole model.
"""

from recbole_hdccf import allocator as _allocator
from recbole_hdccf import candidates as _candidates
from recbole_hdccf import compat as _compat
from recbole_hdccf import registry as _registry

_compat.apply()
_allocator.apply_from_environment()
_registry.register_all()
_candidates.install()

from recbole_hdccf.hdccf import HDCCF  # noqa: E402
from recbole_hdccf.registry import PLUGIN_MODELS, check_model_name  # noqa: E402

__version__ = "0.1.0"
__all__ = ["HDCCF", "PLUGIN_MODELS", "check_model_name", "__version__"]
