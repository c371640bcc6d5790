"""socketlab: the code that runs inside the lab's containers.

One importable package holds the wire protocol (sans-IO), the demo servers and
clients, the UDP listener, the feed server and RSS poller, and the in-container
side of network shaping. Every container image, the lab controller (for
verification) and the unit tests import this same package.
"""

__version__ = "0.1.0"
