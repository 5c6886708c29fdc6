"""``python -m netring_chan``: the command (see ``netring_chan.cli``)."""

import sys

from .cli import main

sys.exit(main())
