"""``python -m geomoe.cli``: the same as the ``geomoe`` command."""

import sys

from geomoe.cli.app import main

sys.exit(main())
