"""``python -m haml.experiments NAME|all [--seeds N] [--out DIR] [--quick]`` (= ``haml reproduce``)."""

import sys

from haml.experiments.cli import main

sys.exit(main())
