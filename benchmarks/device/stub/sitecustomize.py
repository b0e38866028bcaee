"""Device-only: RecBole 1.2.1's Config aliases np.float_, np.complex_ and np.unicode_, which
numpy 2 removed; the device image has numpy 2 (this project pins numpy<2 elsewhere)."""

import numpy as np

for _old, _new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
    if _old not in np.__dict__:
        setattr(np, _old, getattr(np, _new))
