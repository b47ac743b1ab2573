"""haml: Heterogeneous-Agent Mirror Learning (HATRPO, HAPPO, HAA2C, HADDPG) for PyTorch.

Importing haml needs only torch: the native extension ``haml._C`` is optional (the ops fall back to
their pure-PyTorch references), and no simulator is imported until an environment is created.
"""

from haml import models, ops

__version__ = "0.1.0"

__all__ = ["models", "ops", "__version__"]
