"""``lab watch`` (and ``lab run --watch``): the lab, refreshed every second.

The thin I/O part; everything shown is built by :mod:`lab.report.watch` (pure).
:class:`Watcher` takes one :class:`~lab.report.watch.WatchSnapshot` per call:

* services and health: ``Lab.status()``;
* the shaped links and whether they are in force: the shaping helpers' labels
  against the rules each namespace has (:func:`lab.shaping.status.evaluate_links`,
  what ``lab status`` shows), with the rules read by counter helpers instead of a
  throwaway container per namespace and second;
* per-link counters: packets and bytes from the NFQUEUE rule in the destination's
  namespace (nfqueue engine) or the htb class in the source's, drops from the netem
  qdisc or from the verdict loop's counter lines (the shaping helpers log them
  every ``SOCKETLAB_SHAPER_STATS_INTERVAL``, 1 s by default);
* the UDP listener's ``GET /stats``, read directly from its address on the lab
  network (bounded in size and time), else through ``socketlab udp-stats`` in
  the listener when the host cannot reach that address (Docker Desktop);
* chat participants, from the server's log lines (read-only: see
  :class:`lab.report.watch.ChatRoster`).

**Counter helpers**: one netkit helper per running service (role ``watch``,
labelled with the service), running :func:`lab.report.watch.sampler_script`;
started on the first refresh, started again when its service restarts (a new
namespace), removed by :meth:`Watcher.close` (and by ``lab down`` if a crash
left one). :func:`run_watch` draws a rich ``Live`` view on a TTY, else one plain
line per refresh, until stopped (Ctrl-C, ``count`` refreshes, or an event).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from rich.console import Console
from rich.live import Live

from lab.commands import EXIT_OK, make_lab, positive_int
from lab.config import WatchConfig
from lab.console import out_console
from lab.errors import LabError
from lab.interface import HelperContainer, Lab
from lab.report.watch import (
    SAMPLE_END,
    ChatRoster,
    ChatState,
    NamespaceSample,
    ServiceState,
    ShapedLink,
    UdpCounters,
    WatchSnapshot,
    last_sample,
    link_counters,
    parse_shaper_stats,
    plain_line,
    render,
    sampler_script,
    udp_counters,
)
from lab.shaping import builders
from lab.shaping.helpers import SHAPER_ROLE, Helper
from lab.shaping.status import evaluate_links
from socketlab.config import UDP_STATUS_PORT

log = logging.getLogger("lab.watch")

WATCH_ROLE: Final = "watch"
WATCH_CAPS: Final = ("NET_ADMIN", "NET_RAW")  # iptables -S needs them; nothing is changed
LABEL_SERVICE: Final = "io.socketlab.watch-service"
UDP_SERVICE: Final = "udp-listener"
CHAT_SERVICE: Final = "server"


def docker_time(text: str) -> float | None:
    """Unix time of Docker's ``2026-12-01T10:05:00.123456789Z`` (None if it is not one)."""
    head, dot, rest = text.rstrip("Z").partition(".")
    fraction = "." + rest[:6] if dot else ""
    try:
        return datetime.fromisoformat(f"{head}{fraction}+00:00").timestamp()
    except ValueError:
        return None


class Watcher:
    """Takes snapshots of one lab; :meth:`close` removes the counter helpers."""

    def __init__(
        self, lab: Lab, config: WatchConfig | None = None, *, udp_port: int = UDP_STATUS_PORT
    ) -> None:
        self.lab = lab
        self.config = config or lab.config.watch
        self.udp_port = udp_port
        self.samplers: dict[str, HelperContainer] = {}
        self.roster = ChatRoster()
        self._chat_read: float | None = None  # Unix time of the last server log read
        self._udp_direct = True

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> WatchSnapshot:
        """Everything one refresh shows; what cannot be read becomes a problem line."""
        problems: list[str] = []
        at = time.time()
        try:
            rows = self.lab.status()
        except LabError as exc:
            return WatchSnapshot(at=at, problems=(f"lab status: {exc}",))
        services = tuple(
            ServiceState(service=r.service, state=r.state, health=r.health, ip=r.ip) for r in rows
        )
        running = {r.service: r.ip for r in rows if r.state == "running" and r.ip not in {"", "-"}}
        started = self._started(running, problems)
        samples = self._samples(running, started, problems)
        links = self._links(running, started, samples, problems)
        udp = self._udp(running, problems) if UDP_SERVICE in running else None
        chat = self._chat(problems) if CHAT_SERVICE in running else None
        return WatchSnapshot(
            at=at,
            services=services,
            links=tuple(links),
            udp=udp,
            chat=chat,
            problems=tuple(problems),
        )

    def _started(self, running: dict[str, str], problems: list[str]) -> dict[str, str]:
        started: dict[str, str] = {}
        for service in running:
            try:
                started[service] = self.lab.started_at(service)
            except LabError as exc:
                problems.append(f"{service}: {exc}")
        return started

    # ------------------------------------------------------------------ counter helpers

    def _sampler(self, service: str, started: str) -> HelperContainer:
        helper = self.samplers.get(service)
        if helper is not None:
            with contextlib.suppress(LabError):
                helper.reload()
            # A restarted service has a new namespace; the helper is still in the old one.
            if helper.status == "running" and helper.started_at >= started:
                return helper
            with contextlib.suppress(LabError):
                helper.remove()
            del self.samplers[service]
        helper = self.lab.start_helper(
            service,
            ["sh", "-c", sampler_script(interval=self.config.interval / 2)],
            role=WATCH_ROLE,
            caps=WATCH_CAPS,
            labels={LABEL_SERVICE: service},
            ready=SAMPLE_END,  # its first block is complete
            ready_stream="stdout",
            ready_timeout=self.config.helper_timeout,
        )
        self.samplers[service] = helper
        return helper

    def _samples(
        self, running: dict[str, str], started: dict[str, str], problems: list[str]
    ) -> dict[str, NamespaceSample]:
        samples: dict[str, NamespaceSample] = {}
        for service in running:
            try:
                helper = self._sampler(service, started.get(service, ""))
                sample = last_sample(helper.logs(stderr=False, tail=self.config.log_tail))
            except LabError as exc:
                problems.append(f"counters of {service}: {exc}")
                continue
            if sample is None:
                problems.append(f"counters of {service}: none yet")
            else:
                samples[service] = sample
        for service in [s for s in self.samplers if s not in running]:
            with contextlib.suppress(LabError):  # the service stopped: its namespace is gone
                self.samplers.pop(service).remove()
        return samples

    # ------------------------------------------------------------------ links

    def _shapers(self, problems: list[str]) -> list[Helper]:
        helpers = []
        try:
            containers = self.lab.helpers(SHAPER_ROLE)
        except LabError as exc:
            problems.append(f"shaping helpers: {exc}")
            return []
        for container in containers:
            try:
                helpers.append(Helper.from_container(container))
            except (KeyError, ValueError) as exc:
                problems.append(f"shaping helper {container.name}: bad labels ({exc})")
        return sorted(helpers, key=lambda h: (h.source, h.dest))

    def _loop_stats(self, helper: Helper) -> dict[str, int] | None:
        if helper.container is None or not builders.needs_verdict_loop(helper.spec, helper.engine):
            return None
        text = helper.container.logs(tail=self.config.log_tail)
        return parse_shaper_stats(text).get(helper.queue)

    def _links(
        self,
        running: dict[str, str],
        started: dict[str, str],
        samples: dict[str, NamespaceSample],
        problems: list[str],
    ) -> list[ShapedLink]:
        helpers = self._shapers(problems)
        rules = {service: sample.rules for service, sample in samples.items()}
        names = {ip: service for service, ip in running.items()}
        states = evaluate_links(helpers, rules, names, source_started=started)
        by_link = {f"{h.source} -> {h.dest}": h for h in helpers}
        links = []
        for truth in states:
            state = truth
            helper = by_link.get(state.link)
            counters = None
            if helper is not None:
                source, dest = samples.get(helper.source), samples.get(helper.dest)
                shaped_at = docker_time(helper.started_at)
                if shaped_at is not None and any(
                    sample is not None and sample.at < shaped_at for sample in (source, dest)
                ):
                    # The rules were read before this link was shaped: judge it next time.
                    state = dataclasses.replace(state, state="just shaped", healthy=True)
                try:
                    loop = self._loop_stats(helper)
                except LabError as exc:
                    problems.append(f"verdict loop of {state.link}: {exc}")
                    loop = None
                htb = builders.uses_htb(helper.spec, helper.engine)
                klass = builders.classid(helper.queue)
                netem_handle = f"qdisc {helper.queue + 1:x}:"
                counters = link_counters(
                    tc_class=source.tc.get(f"class {klass}") if source and htb else None,
                    netem=source.tc.get(netem_handle) if source and htb else None,
                    rule=dest.nfqueue.get(helper.source_ip) if dest else None,
                    loop=loop,
                    sampled_at=read_at.at if (read_at := dest or source) else None,
                )
            links.append(
                ShapedLink(
                    link=state.link,
                    shaping=state.shaping,
                    engine=state.engine,
                    state=state.state,
                    healthy=state.healthy,
                    **({"counters": counters} if counters is not None else {}),
                )
            )
        return links

    # ------------------------------------------------------------------ udp and chat

    def _udp_direct_read(self, ip: str) -> Any:
        connection = http.client.HTTPConnection(ip, self.udp_port, timeout=self.config.read_timeout)
        try:
            connection.request("GET", "/stats")
            answer = connection.getresponse()
            body = answer.read(self.config.max_stats_bytes + 1)
        finally:
            connection.close()
        if answer.status != 200:
            raise ValueError(f"HTTP {answer.status}")
        if len(body) > self.config.max_stats_bytes:
            raise ValueError(f"answer over {self.config.max_stats_bytes} bytes")
        return json.loads(body)

    def _udp_exec_read(self) -> Any:
        timeout = self.config.read_timeout
        answer = self.lab.exec(UDP_SERVICE, ["socketlab", "udp-stats"], timeout=timeout + 5)
        answer.check("socketlab udp-stats")
        if len(answer.stdout) > self.config.max_stats_bytes:
            raise ValueError(f"answer over {self.config.max_stats_bytes} bytes")
        return json.loads(answer.stdout)

    def _udp(self, running: dict[str, str], problems: list[str]) -> UdpCounters | None:
        try:
            if self._udp_direct:
                try:
                    stats = self._udp_direct_read(running[UDP_SERVICE])
                except OSError as exc:
                    # The host may not reach container addresses (Docker Desktop).
                    log.info("event=watch_udp_direct_failed error=%s", exc)
                    self._udp_direct = False
                    stats = self._udp_exec_read()
            else:
                stats = self._udp_exec_read()
        except (LabError, OSError, ValueError, http.client.HTTPException) as exc:
            problems.append(f"udp-listener stats: {exc}")
            return None
        if not isinstance(stats, dict):
            problems.append("udp-listener stats: not a JSON object")
            return None
        return udp_counters(stats)

    def _chat(self, problems: list[str]) -> ChatState | None:
        now = time.time()
        # Re-read a second of overlap: feeding lines twice changes nothing (ChatRoster).
        since = None if self._chat_read is None else self._chat_read - 1.0
        try:
            text = self.lab.logs(CHAT_SERVICE, since=since, stream="stderr")
        except LabError as exc:
            problems.append(f"chat participants: {exc}")
            return None
        self._chat_read = now
        self.roster.feed(text)
        return ChatState(participants=self.roster.participants)

    # ------------------------------------------------------------------ end

    def close(self) -> None:
        """Remove every counter helper this watcher started."""
        for service in list(self.samplers):
            helper = self.samplers.pop(service)
            try:
                helper.remove()
            except LabError as exc:  # lab down removes it later (it carries the labels)
                log.warning("event=watch_helper_not_removed name=%s error=%s", helper.name, exc)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the loop


def run_watch(
    watcher: Watcher,
    *,
    console: Console,
    stop: threading.Event | None = None,
    count: int | None = None,
    interval: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Refresh until ``stop`` is set or ``count`` snapshots were shown; return how many.

    A TTY gets a rich Live view, anything else one plain line per refresh. The pace
    is an Event wait (``stop`` ends it at once), one ``interval`` from each start."""
    stop = stop or threading.Event()
    interval = watcher.config.interval if interval is None else interval
    shown = 0
    previous: WatchSnapshot | None = None
    live = (
        Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    )
    with live if live is not None else contextlib.nullcontext():
        while not stop.is_set() and (count is None or shown < count):
            began = clock()
            current = watcher.snapshot()
            if live is not None:
                live.update(render(current, previous), refresh=True)
            else:
                console.print(
                    plain_line(current, previous), markup=False, highlight=False, soft_wrap=True
                )
            shown += 1
            previous = current
            if count is not None and shown >= count:
                break
            stop.wait(max(0.0, interval - (clock() - began)))
    return shown


# --------------------------------------------------------------------------- CLI


def cmd_watch(args: argparse.Namespace) -> int:
    """``lab watch``: until Ctrl-C (exit 0, helpers removed) or ``--count`` refreshes."""
    lab = make_lab(args)
    with Watcher(lab) as watcher:
        try:
            run_watch(watcher, console=out_console, count=args.count)
        except KeyboardInterrupt:
            # Ctrl-C is how a watch ends: no traceback, helpers removed on the way out.
            out_console.print("watch stopped", markup=False)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``watch`` to ``lab``'s subparsers."""
    watch = subparsers.add_parser(
        "watch",
        help="live view: services, shaped links with counters, UDP listener, chat (Ctrl-C quits)",
        description="Refresh every second (SOCKETLAB_WATCH_INTERVAL): a live view on a "
        "terminal, one line per refresh otherwise. Ctrl-C quits.",
    )
    watch.add_argument(
        "--count", type=positive_int, default=None, metavar="N", help="stop after N refreshes"
    )
    watch.set_defaults(func=cmd_watch)
