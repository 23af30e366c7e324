"""``python -m fluxbase_receiver.cli``: the ``fluxbase-receiver`` command."""

import sys

from fluxbase_receiver.cli import main

sys.exit(main())
