"""``python -m aggregator.cli``: the same as ``loglake-aggregator``."""

import sys

from aggregator.cli.run import main

sys.exit(main())
