"""`python -m gfldet`: the gfldet command line (gfldet.cli)."""
import sys

from .cli import main

sys.exit(main())
