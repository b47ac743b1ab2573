"""``python -m haml.bench [ops] [options]``: the same as ``haml bench ops``."""

import sys

from haml.bench import main

sys.exit(main())
