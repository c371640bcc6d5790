"""The server's actions, one module per family; each module exports ``ACTIONS``.

``messages`` (the pure actions and ``stall``), ``objects`` (``objects`` and
the signed-pickle content type), ``files`` (``ls``, ``fetch``) and ``sink``.
:mod:`socketlab.server.dispatch` joins them into the dispatch table.
"""
