"""``python -m fastprof``: the ``fastprof`` command (also under ``torchrun -m fastprof``)."""

import sys

from fastprof.cli import main

sys.exit(main())
