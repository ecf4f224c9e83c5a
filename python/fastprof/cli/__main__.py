"""``python -m fastprof.cli``: the ``fastprof`` command."""

import sys

from fastprof.cli import main

sys.exit(main())
