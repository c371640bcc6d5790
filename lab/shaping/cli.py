"""``lab shape | unshape | partition | heal | ping``: registered by ``lab.cli``.

Services are named as :mod:`lab.addressing` says (``client`` is every replica,
``client.2`` one of them); ``--network`` picks the network of a pair that
shares several, ``-4`` / ``-6`` one address family. ``lab status`` shows the
links and partitions tables through ``lab.shaping.status_tables``.

``lab shape`` has a flag for every shaping option (:data:`lab.shaping.spec.SPEC_OPTIONS`,
help from ``OPTION_HELP``), ``--seed`` included; a bad value is one line naming the
flag and its range (exit 1, nothing changed). ``lab partition`` takes groups
(``client,rss-poller server``) or ``--isolate SERVICE``; ``lab heal`` undoes either.
"""

from __future__ import annotations

import argparse
from typing import Any

from lab.commands import EXIT_FAILURE, EXIT_OK, family_arguments, make_lab
from lab.console import out_console, print_figures, print_rows
from lab.shaping.builders import Engine
from lab.shaping.errors import SelfCheckFailed, ShapingError
from lab.shaping.spec import OPTION_HELP, SPEC_OPTIONS, option_flag, resolve_spec


def _pair(parser: argparse.ArgumentParser, *, optional: bool, groups: bool = False) -> None:
    nargs: dict[str, Any] = {"nargs": "?", "default": None} if optional else {}
    if groups:
        parser.add_argument("source", help="one side: SERVICE, SERVICE.N or a,b,...", **nargs)
        parser.add_argument("dest", help="the other side, the same way", **nargs)
        return
    parser.add_argument("source", help="service (or SERVICE.N) packets leave from", **nargs)
    parser.add_argument("dest", help="service (or SERVICE.N) packets go to", **nargs)


def _pair_or_none(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if (args.source is None) != (args.dest is None):
        raise ShapingError("give two services, or none for all")
    return args.source, args.dest


def cmd_shape(args: argparse.Namespace) -> int:
    from lab.shaping.shape import shape  # noqa: PLC0415 - keep `lab --help` fast

    spec = resolve_spec(
        profile=args.profile, options={name: getattr(args, name) for name in SPEC_OPTIONS}
    )
    try:
        result = shape(
            make_lab(args),
            args.source,
            args.dest,
            spec,
            engine=args.engine,
            check=args.check,
            network=args.network,
            family=args.family,
        )
    except SelfCheckFailed as exc:
        print_rows("self-check", list(exc.rows))
        raise
    for link in result.shaped:
        families = "+".join(f"IPv{f}" for f in link.families)
        out_console.print(
            f"shaped {link.source} -> {link.dest} on {link.network} ({families}): "
            f"{link.spec.describe()} (engine {link.engine}, helper {link.helper})",
            highlight=False,
        )
        for note in link.notes:
            out_console.print(f"  note: {note}", highlight=False, markup=False)
        if link.checks:
            print_rows("self-check", [row.as_row() for row in link.checks])
    return EXIT_OK


def cmd_unshape(args: argparse.Namespace) -> int:
    from lab.shaping.shape import unshape  # noqa: PLC0415

    source, dest = _pair_or_none(args)
    removed = unshape(make_lab(args), source, dest, network=args.network)
    out_console.print(f"unshaped: {', '.join(removed) if removed else 'nothing was shaped'}")
    return EXIT_OK


def cmd_partition(args: argparse.Namespace) -> int:
    from lab.shaping.cuts import isolate, partition  # noqa: PLC0415

    lab = make_lab(args)
    if args.isolate is not None:
        if args.source is not None:
            raise ShapingError("--isolate SERVICE takes no other services")
        pairs = isolate(lab, args.isolate, network=args.network, family=args.family)
        out_console.print(f"isolated {args.isolate}: cut {', '.join(pairs)}", highlight=False)
        return EXIT_OK
    source, dest = _pair_or_none(args)
    if source is None or dest is None:
        raise ShapingError("give two services or groups (a,b c), or --isolate SERVICE")
    pairs = partition(lab, source, dest, network=args.network, family=args.family)
    out_console.print(
        f"partitioned {source} <-> {dest} (both directions): {', '.join(pairs)}", highlight=False
    )
    return EXIT_OK


def cmd_heal(args: argparse.Namespace) -> int:
    from lab.shaping.cuts import heal  # noqa: PLC0415

    source, dest = _pair_or_none(args)
    healed = heal(make_lab(args), source, dest, network=args.network, isolated=args.isolate)
    out_console.print(f"healed: {', '.join(healed) if healed else 'no partition in force'}")
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    from lab.shaping.selfcheck import measure_rtt  # noqa: PLC0415

    lab = make_lab(args)
    topology = lab.topology()
    rows = []
    lost = False
    for source in topology.select(args.source):
        for dest in topology.select(args.dest):
            if source.key == dest.key:
                continue
            stats = measure_rtt(
                lab,
                source.key,
                dest.key,
                count=args.count,
                network=args.network,
                family=args.family or 4,
            )
            lost = lost or stats.received == 0
            median = stats.rtt_median
            rows.append(
                {
                    "link": f"{source.name} -> {dest.name}",
                    "received": f"{stats.received}/{stats.transmitted}",
                    "rtt median": "-" if median is None else f"{median * 1000:.2f} ms",
                    "rtt mean": "-" if stats.rtt_avg is None else f"{stats.rtt_avg * 1000:.2f} ms",
                }
            )
    print_figures(f"ICMP echo, IPv{args.family or 4}", rows)
    return EXIT_FAILURE if lost else EXIT_OK


def register(subparsers: Any) -> None:
    """Add the shaping subcommands to ``lab``'s subparsers."""
    shape = subparsers.add_parser(
        "shape",
        help="impair one direction of a link (delay, loss, rate, ...)",
        description="Impair packets from SOURCE to DEST (one direction). "
        "Replaces earlier shaping of that link.",
    )
    _pair(shape, optional=False)
    for name in SPEC_OPTIONS:
        shape.add_argument(
            option_flag(name),
            dest=name,
            metavar="N" if name in {"seed", "reorder_gap", "loss_burst", "mss"} else "VALUE",
            default=None,
            help=OPTION_HELP[name].replace("%", "%%"),
        )
    shape.add_argument("--profile", help="named profile from lab/profiles.yaml (lan, 3g, ...)")
    shape.add_argument(
        "--engine",
        choices=[str(e) for e in Engine],
        default=None,
        help="force an engine (default: netem when the kernel has it, else nfqueue)",
    )
    shape.add_argument(
        "--check",
        action="store_true",
        help="measure the link afterwards; print measured vs requested",
    )
    family_arguments(shape)
    shape.set_defaults(func=cmd_shape)

    unshape = subparsers.add_parser("unshape", help="remove shaping from one link, or all")
    _pair(unshape, optional=True)
    unshape.add_argument("--network", metavar="NET", default=None, help="only on this network")
    unshape.set_defaults(func=cmd_unshape)

    part = subparsers.add_parser(
        "partition",
        help="block all traffic between two services or groups (a,b c), or isolate one",
        description="Cut every container of SOURCE off from every container of DEST, both "
        "ways. Each side is a service, SERVICE.N or a comma-separated group "
        "(client,rss-poller); members of one side still reach each other.",
    )
    _pair(part, optional=True, groups=True)
    part.add_argument(
        "--isolate", metavar="SERVICE", default=None, help="cut SERVICE off from every other one"
    )
    family_arguments(part)
    part.set_defaults(func=cmd_partition)

    heal = subparsers.add_parser(
        "heal", help="remove one partition (pair or groups), an isolation, or all"
    )
    _pair(heal, optional=True, groups=True)
    heal.add_argument("--network", metavar="NET", default=None, help="only on this network")
    heal.add_argument(
        "--isolate", metavar="SERVICE", default=None, help="undo lab partition --isolate SERVICE"
    )
    heal.set_defaults(func=cmd_heal)

    ping = subparsers.add_parser(
        "ping",
        help="RTT between two services (each replica), from a helper in the source's namespace",
    )
    _pair(ping, optional=False)
    ping.add_argument("--count", type=int, default=20, help="echo requests per pair")
    family_arguments(ping)
    ping.set_defaults(func=cmd_ping)
