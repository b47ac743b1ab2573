"""haml's kernels: native C++/CUDA where built, pure PyTorch references otherwise.

Every op here has a readable reference in ``haml/ops/<op>/reference.py`` that defines it; the native
kernels (``torch.ops.haml.*``) are tested against it. ``HAML_BACKEND=reference`` forces the
references; :func:`backend` says which implementation serves a device.
"""

from haml.ops import _backend
from haml.ops._backend import BUILD_INFO, backend, has_native

if BUILD_INFO is not None:
    # Fake kernels and autograd formulas of the native ops: registered only once the ops exist.
    from haml.ops.clip_surrogate import _meta as _clip_surrogate_meta  # noqa: F401
    from haml.ops.gae import _meta as _gae_meta  # noqa: F401

from haml.ops.clip_surrogate import SurrogateOut, clipped_surrogate
from haml.ops.fvp import FisherOperator, conjugate_gradient, fisher_vector_product
from haml.ops.gae import gae
from haml.ops.line_search import TrustRegionInfo, backtracking_line_search, trust_region_step

__all__ = [
    "gae",
    "clipped_surrogate",
    "SurrogateOut",
    "FisherOperator",
    "fisher_vector_product",
    "conjugate_gradient",
    "backtracking_line_search",
    "trust_region_step",
    "TrustRegionInfo",
    "backend",
    "has_native",
    "BUILD_INFO",
]
