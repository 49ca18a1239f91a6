"""`python -m modeldeck_cli` is the `modeldeck` command."""

import sys

from modeldeck_cli.main import main

sys.exit(main())
