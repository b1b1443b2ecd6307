"""``python -m biolingual ...`` is the ``biolingual`` command."""
import sys

from .launch import main

sys.exit(main())
