"""haml's kernels: native C++/CUDA where built, pure PyTorch references otherwise.

Every op here has a readable reference in ``haml/ops/<op>/reference.py`` that defines it; the native
kernels (``torch.ops.haml.*``) are tested against it. ``HAML_BACKEND=reference`` forces the
references; :func:`backend` says which implementation serves a device. The native CPU kernels run
at the highest instruction-set level the CPU supports (:func:`cpu_isa`; ``HAML_CPU_ISA`` caps it).
"""

from haml.ops import _backend
from haml.ops._backend import (
    BUILD_INFO,
    CPU_ISAS,
    backend,
    cpu_isa,
    has_native,
    set_cpu_isa,
    supported_cpu_isas,
)

if BUILD_INFO is not None:
    # Fake kernels and autograd formulas of the native ops: registered only once the ops exist.
    from haml.ops.clip_surrogate import _meta as _clip_surrogate_meta  # noqa: F401
    from haml.ops.gae import _meta as _gae_meta  # noqa: F401
    from haml.ops.layer_norm import _meta as _layer_norm_meta  # noqa: F401

from haml.ops.clip_surrogate import SurrogateOut, clipped_surrogate
from haml.ops.fvp import FisherOperator, conjugate_gradient, fisher_vector_product
from haml.ops.gae import gae
from haml.ops.layer_norm import layer_norm
from haml.ops.line_search import TrustRegionInfo, backtracking_line_search, trust_region_step
from haml.ops.value_gradient import value_loss_gradient

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
    "value_loss_gradient",
    "layer_norm",
    "backend",
    "has_native",
    "BUILD_INFO",
    "CPU_ISAS",
    "cpu_isa",
    "supported_cpu_isas",
    "set_cpu_isa",
]
