"""``python -m initwise``: the same command line as the ``initwise`` script."""

import sys

from initwise._cli.main import main

if __name__ == "__main__":
    sys.exit(main())
