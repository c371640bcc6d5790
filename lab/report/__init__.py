"""Run reports: packet analysis of captures, the scenario timeline, ``report.html``, ``lab watch``.

Everything here is pure (values in, values out) except :func:`lab.report.analysis.analyze_file`
and :func:`lab.report.page.write_report`, which read or write one file each::

    config.py     ReportConfig: limits and bin width, read once from SOCKETLAB_REPORT_*
    metrics.py    the names, units and meanings of the ``pcap`` check's metrics
    packets.py    pcap records -> Packet values (dpkt decodes; sizes and counts bounded)
    analysis.py   Packet values -> CaptureAnalysis (TCP retransmissions, dup ACKs,
                  zero windows, RTT, max segment, goodput and UDP gaps over time)
    results.py    results.json -> typed records (strict types, errors name the field)
    timeline.py   results.json-shaped data -> Timeline (steps, faults, shaping, checks)
    plots.py      Timeline + analyses -> one PNG per scenario on a shared time axis
    page.py       results.json + analyses + plots -> self-contained report.html
    watch.py      lab snapshots -> rich renderables and one plain line per second

Errors (the part of the tree in :mod:`lab.errors` this package adds)::

    LabError
    └── ReportError         a report could not be built
        ├── PcapError       a file is not a pcap we can read (magic, link type, I/O)
        └── ResultsError    results.json is not what ``lab run`` writes (where, what)
"""
