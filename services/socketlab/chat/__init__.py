"""Chat (SPEC §3 demo 7): a multi-client hub and a client for humans and scripts.

``wire`` is the chat vocabulary on top of the lab framing (``socketlab.protocol``);
``core`` is the hub's logic without any I/O (participants, names, fan-out,
bounded queues, heartbeats); ``hub`` is the selectors loop around it on
:data:`socketlab.config.CHAT_PORT`. ``client`` is ``socketlab chat`` (interactive
and scripted), ``script`` parses scripted sessions, ``swarm`` drives many
participants from one process (load tests and the fan-out benchmark).
"""
