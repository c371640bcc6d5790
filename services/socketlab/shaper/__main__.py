"""``python3 -m socketlab.shaper``: same as ``socketlab shaper``."""

import sys

from socketlab.shaper.loop import main

sys.exit(main(sys.argv[1:]))
