"""``python -m haml.bench [ops|train] [options]``: the same as ``haml bench ops`` / ``haml bench train``."""

import sys

from haml.bench import main

sys.exit(main())
