"""``python -m eval.birdset``: see :mod:`eval.birdset.runner`."""

import sys

from .runner import main

sys.exit(main())
