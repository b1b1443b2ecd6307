"""``python -m biolingual ...`` is the ``biolingual`` command."""

import sys

from .cli import main

sys.exit(main())
