"""The reaper: removes a lab's resources (or undoes its network faults) when its controller dies.

testcontainers' Ryuk design: a small labelled container holds a TCP connection
from the controller (``lab run``, or the pytest plugin's session); when that
connection drops without the controller saying ``done``, it acts for the one
project named on its command line. :mod:`socketlab.reaper.core` decides
(sans-IO), :mod:`socketlab.reaper.engine` talks to the Docker engine through
its mounted socket, :mod:`socketlab.reaper.main` is ``socketlab reaper``.
What it can touch is documented in :mod:`socketlab.reaper.plan`.
"""
