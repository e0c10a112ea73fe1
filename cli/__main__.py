"""``python -m cli``: the same as the ``mmr1`` console script."""

import sys

from cli.main import main

sys.exit(main())
