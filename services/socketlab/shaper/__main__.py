"""``python3 -m socketlab.shaper``: same as ``socketlab shaper``."""

import sys

from socketlab.__main__ import main

sys.exit(main(["shaper", *sys.argv[1:]]))
