"""``socketlab chat``: a chat participant for humans (interactive) and for scenarios (scripted).

Interactive::

    socketlab chat --name alice [--host server]

Incoming lines are printed *above* the line being typed: the typed text is
cleared, the message printed, the prompt and the typed text redrawn (readline
keeps the buffer), so nothing garbles what you are writing. ``bye``, Ctrl-D or
Ctrl-C leave cleanly; ``/who`` lists the participants.

Scripted (see ``socketlab.chat.script`` for the format)::

    socketlab chat --name bot --script FILE|- [--transcript FILE|-]
    socketlab chat --name bot --wait-for alice --say hi --say "how are you" --pause 0.2 \\
        --expect "alice:fine" --deadline 20 --transcript -

The transcript is JSON lines ``{"t": <unix time>, "dir": "in"|"out", "event": {...}}``.
What peers chose (names, texts, reasons) never reaches the terminal raw: printed
lines go through :func:`socketlab.terminal.neutralize` (an ESC shows as
``\x1b``), and the transcript escapes DEL, C1 and bidi controls too (JSON
itself only escapes C0), so it still decodes to exactly what was received.
Exit codes: 0 done, 1 an expectation missed its deadline, the hub went away or
refused us (name taken, hub full), 2 bad arguments or script, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Final

from socketlab.chat import script as chat_script
from socketlab.chat import wire
from socketlab.chat.errors import ChatError, ChatRefused, HubGone, ScriptError
from socketlab.commandline import add_setting, command_parser
from socketlab.config import CHAT_PORT, SERVER_HOST, EnvConfig, env_config, env_field
from socketlab.errors import ConfigError, peer_errors
from socketlab.protocol import ProtocolError
from socketlab.terminal import BIDI_CONTROLS, neutralize

log = logging.getLogger("socketlab.chat")

RECV_SIZE: Final = 64 * 1024
BYE_GRACE: Final = 2.0  # how long to wait for the hub's bye before closing anyway


@env_config
@dataclass(frozen=True, kw_only=True)
class ClientConfig(EnvConfig):
    """Where the hub is and how long to wait for it (all configurable)."""

    host: str = env_field("SOCKETLAB_SERVER", SERVER_HOST, "host name of the server container")
    port: int = env_field("SOCKETLAB_CHAT_PORT", CHAT_PORT, "TCP port of the chat hub")
    connect_timeout: float = env_field(
        "SOCKETLAB_CONNECT_TIMEOUT", 5.0, "connect timeout of chat and tcp-vs-udp, seconds"
    )
    # The hub pings every few seconds when we are quiet; this much silence means it is gone.
    hub_timeout: float = env_field(
        "SOCKETLAB_CHAT_HUB_TIMEOUT",
        15.0,
        "seconds of silence after which a chat client counts the hub as gone",
    )
    # We ping the hub when we have sent nothing for this long: the hub's own
    # pings may wait behind a backlog we are still reading.
    keepalive: float = 3.0
    poll_interval: float = 0.25


# Characters JSON leaves raw with ensure_ascii=False that a terminal would obey.
_JSON_UNSAFE: Final = str.maketrans(
    {c: f"\\u{ord(c):04x}" for c in [chr(0x7F), *map(chr, range(0x80, 0xA0)), *BIDI_CONTROLS]}
)


def json_line(record: dict[str, Any]) -> str:
    """``record`` as one JSON line that is safe on a terminal and decodes unchanged."""
    return json.dumps(record, ensure_ascii=False).translate(_JSON_UNSAFE)


class Transcript:
    """Every event in and out, as JSON lines with timestamps, flushed line by line."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def record(self, direction: str, event: dict[str, Any]) -> None:
        if self._stream is None:
            return
        line = json_line({"t": time.time(), "dir": direction, "event": event})
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


class ChatClient:
    """One participant over a blocking socket; a receiver thread decodes the hub's events.

    State the caller may wait on (see :meth:`wait_until`): ``present`` (names
    in the room), ``messages`` (every ``message`` event, in arrival order),
    ``left`` (names announced as left, with reasons), ``gone`` (why the
    connection ended, None while it is up).
    """

    def __init__(
        self,
        name: str,
        *,
        config: ClientConfig,
        transcript: Transcript | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.transcript = transcript or Transcript(None)
        self.on_event = on_event
        self.present: set[str] = set()
        self.messages: list[dict[str, Any]] = []
        self.left: dict[str, str] = {}
        self.gone: str | None = None
        self.errors: list[dict[str, Any]] = []
        self._welcome: dict[str, Any] | None = None
        self._bye_acked = False
        self._last_sent = time.monotonic()
        self._changed = threading.Condition()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stream = wire.ChatStream()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ API

    def join(self) -> dict[str, Any]:
        """Connect and join; returns the welcome event. ChatRefused if the hub says no."""
        address = (self.config.host, self.config.port)
        hub = f"the chat hub at {address[0]}:{address[1]}"
        with peer_errors(hub, "connect", timeout=self.config.connect_timeout):
            sock = socket.create_connection(address, timeout=self.config.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.config.poll_interval)  # the receiver wakes up to check for silence
        self._sock = sock
        self._thread = threading.Thread(target=self._receive_loop, name="chat-rx", daemon=True)
        self._thread.start()
        self._send({"type": "join", "name": self.name}, wire.join(self.name))
        deadline = self.config.connect_timeout + self.config.hub_timeout
        self.wait_until(lambda: self._welcome is not None or bool(self.errors), timeout=deadline)
        if self._welcome is None:
            self.close()
            if self.errors:
                error = self.errors[0]
                raise ChatRefused(str(error.get("code")), str(error.get("detail")))
            raise HubGone(self.gone or f"no welcome from the hub within {deadline:g} s")
        return self._welcome

    def say(self, text: str) -> None:
        self._send({"type": "say", "text": text}, wire.say(text))

    def who(self) -> None:
        self._send({"type": "who"}, wire.who())

    def leave(self) -> None:
        """Say bye, wait briefly for the hub's acknowledgement, close."""
        if self.gone is None:
            with contextlib.suppress(ChatError):
                self._send({"type": "bye"}, wire.bye())
                self.wait_until(lambda: self._bye_acked, timeout=BYE_GRACE)
        self.close()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._set_gone("closed by us")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.config.poll_interval + 1.0)

    def wait_until(self, predicate: Callable[[], bool], *, timeout: float) -> bool:
        """Block until ``predicate()`` holds (True), or the deadline passes or we are gone."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.gone is not None:
                    return predicate()
                self._changed.wait(timeout=min(remaining, 1.0))
        return True

    # ------------------------------------------------------------------ internals

    def _send(self, event: dict[str, Any], frame: bytes) -> None:
        sock = self._sock
        if sock is None or self.gone is not None:
            raise HubGone(self.gone or "not connected")
        with self._send_lock:
            # Recorded before the bytes leave: the reply can arrive before sendall returns.
            if event.get("type") not in {"ping", "pong"}:
                self.transcript.record("out", event)
            try:
                sock.sendall(frame)
            except OSError as exc:
                raise HubGone(f"sending to the hub failed: {exc}") from exc
            self._last_sent = time.monotonic()

    def _keepalive(self) -> None:
        if time.monotonic() - self._last_sent >= self.config.keepalive:
            with contextlib.suppress(ChatError):
                self._send({"type": "ping"}, wire.ping())

    def _set_gone(self, why: str) -> None:
        with self._changed:
            if self.gone is None:
                self.gone = why
            self._changed.notify_all()

    def _receive_loop(self) -> None:
        last_heard = time.monotonic()
        try:
            while self._sock is not None:
                sock = self._sock
                try:
                    data = sock.recv(RECV_SIZE)
                except TimeoutError:
                    self._keepalive()
                    if time.monotonic() - last_heard > self.config.hub_timeout:
                        self._set_gone(f"the hub was silent for {self.config.hub_timeout:g} s")
                        return
                    continue
                last_heard = time.monotonic()
                self._keepalive()
                for event in self._stream.receive_data(data):
                    self._on_event(event)
                if not data:
                    self._set_gone("the hub closed the connection")
                    return
        except ProtocolError as exc:
            self._set_gone(f"the hub broke the protocol: {exc}")
        except OSError as exc:
            self._set_gone(f"connection to the hub failed: {exc}")

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "ping":
            with contextlib.suppress(ChatError):
                self._send({"type": "pong"}, wire.pong())
            return
        if kind == "pong":
            return
        self.transcript.record("in", event)
        with self._changed:
            if kind == "welcome":
                self._welcome = event
                self.present = {str(name) for name in event.get("participants", [])}
            elif kind == "joined":
                self.present.add(str(event.get("name")))
            elif kind == "left":
                name = str(event.get("name"))
                self.present.discard(name)
                self.left[name] = str(event.get("reason"))
            elif kind == "message":
                self.messages.append(event)
            elif kind == "error":
                self.errors.append(event)
            elif kind == "bye":
                self._bye_acked = True
            self._changed.notify_all()
        if self.on_event is not None:
            self.on_event(event)


# ---------------------------------------------------------------------- scripted


def run_steps(client: ChatClient, steps: list[chat_script.Step]) -> list[str]:
    """Run a script against a joined client; returns the failures (empty: all good)."""
    failures: list[str] = []
    for step in steps:
        if isinstance(step, chat_script.Bye):
            break
        if isinstance(step, chat_script.Say):
            client.say(step.text)
        elif isinstance(step, chat_script.Pause):
            time.sleep(step.seconds)  # a scripted pause between messages, not a wait
        else:
            predicate, what, deadline = _expectation(client, step)
            if not client.wait_until(predicate, timeout=deadline):
                failures.append(f"{what} not seen within {deadline:g} s")
                if client.gone is not None:
                    failures.append(f"connection ended: {client.gone}")
                    break
    return failures


def _expectation(
    client: ChatClient, step: chat_script.Step
) -> tuple[Callable[[], bool], str, float]:
    if isinstance(step, chat_script.WaitFor):
        return (lambda: step.name in client.present), f"{step.name} present", step.deadline
    if isinstance(step, chat_script.Expect):

        def seen() -> bool:
            return any(
                m.get("from") == step.sender and m.get("text") == step.text for m in client.messages
            )

        return seen, f"message {step.sender}: {step.text!r}", step.deadline
    if isinstance(step, chat_script.ExpectCount):
        return (
            (lambda: len(client.messages) >= step.count),
            f"{step.count} messages (have {len(client.messages)})",
            step.deadline,
        )
    if isinstance(step, chat_script.ExpectLeft):
        return (lambda: step.name in client.left), f"{step.name} left", step.deadline
    raise ScriptError(f"not an expectation: {step!r}")


# ---------------------------------------------------------------------- interactive


def _shown(value: Any) -> str:
    """A field a peer chose, as it may appear on one terminal line."""
    return neutralize(str(value))


def _welcome_line(event: dict[str, Any]) -> str:
    others = [_shown(n) for n in event.get("participants", []) if n != event.get("name")]
    here = ", ".join(others) if others else "nobody else yet"
    return f"* joined as {_shown(event.get('name'))}; here: {here}. Type 'bye' or Ctrl-D to leave."


_DESCRIBE: Final[dict[str, Callable[[dict[str, Any]], str]]] = {
    "message": lambda e: f"{_shown(e.get('from'))}: {_shown(e.get('text'))}",
    "joined": lambda e: f"* {_shown(e.get('name'))} joined",
    "left": lambda e: f"* {_shown(e.get('name'))} left ({_shown(e.get('reason'))})",
    "welcome": _welcome_line,
    "participants": lambda e: f"* here: {', '.join(_shown(n) for n in e.get('names', []))}",
    "error": lambda e: f"! {_shown(e.get('code'))}: {_shown(e.get('detail'))}",
}


def describe(event: dict[str, Any]) -> str | None:
    """How an incoming event reads on a terminal (None: not shown); every field a
    peer chose is neutralised, so no control or bidi character is printed raw."""
    formatter = _DESCRIBE.get(str(event.get("type")))
    return formatter(event) if formatter else None


class LinePrinter:
    """Prints incoming lines above the one being typed, then redraws prompt and typed text."""

    def __init__(self, prompt: str, stream: IO[str], *, redraw: bool) -> None:
        self.prompt = prompt
        self.stream = stream
        self.redraw = redraw
        self._lock = threading.Lock()
        self._line_buffer: Callable[[], str] = lambda: ""
        if redraw:
            try:
                import readline  # noqa: PLC0415 - only an interactive terminal needs it
            except ImportError:  # a Python without readline: redraw the prompt only
                pass
            else:
                self._line_buffer = readline.get_line_buffer

    def show(self, text: str) -> None:
        with self._lock:
            if self.redraw:
                # \r + erase line, the message, then prompt and what was typed so far.
                self.stream.write(f"\r\x1b[2K{text}\n{self.prompt}{self._line_buffer()}")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()


def interactive(client_factory: Callable[..., ChatClient], *, name: str) -> int:
    """The human front end; returns the exit code."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    prompt = f"{name}> " if tty else ""
    printer = LinePrinter(prompt, sys.stdout, redraw=tty)
    main_thread_pid = os.getpid()

    def on_event(event: dict[str, Any]) -> None:
        text = describe(event)
        if text is not None:
            printer.show(text)

    client = client_factory(on_event=on_event)
    client.join()
    # The hub vanishing must wake a blocked input(): SIGINT does, and is handled below.
    done = threading.Event()
    watcher = threading.Thread(
        target=_interrupt_when_gone, args=(client, main_thread_pid, done), daemon=True
    )
    watcher.start()
    try:
        while True:
            line = input(prompt)
            text = line.strip()
            if text == "bye":
                break
            if text == "/who":
                client.who()
            elif text:
                client.say(line)
    except (EOFError, KeyboardInterrupt):
        pass
    except HubGone:
        pass
    done.set()
    try:
        if client.gone is not None:
            printer.show(f"! {neutralize(client.gone)}")
            client.close()
            return 1
        client.leave()
        printer.show("* left the chat")
    except KeyboardInterrupt:  # a second Ctrl-C, or the watcher racing us: we are leaving
        client.close()
    return 0


def _interrupt_when_gone(client: ChatClient, pid: int, done: threading.Event) -> None:
    client.wait_until(lambda: client.gone is not None or done.is_set(), timeout=float("inf"))
    if not done.is_set():
        os.kill(pid, signal.SIGINT)


# ---------------------------------------------------------------------- CLI


def build_parser(config: ClientConfig | None = None) -> argparse.ArgumentParser:
    config = config or ClientConfig()
    parser = command_parser("chat", __doc__)
    parser.formatter_class = argparse.RawTextHelpFormatter
    parser.add_argument("--name", required=True, help="your name in the room (unique)")
    add_setting(parser, "--host", config=config, name="host")
    add_setting(parser, "--port", config=config, name="port")
    add_setting(parser, "--connect-timeout", config=config, name="connect_timeout")
    add_setting(parser, "--hub-timeout", config=config, name="hub_timeout")
    scripted = parser.add_argument_group("scripted mode")
    scripted.add_argument("--script", help="script file, or - for stdin")
    scripted.add_argument("--wait-for", action="append", default=[], metavar="NAME")
    scripted.add_argument("--say", action="append", default=[], metavar="TEXT")
    scripted.add_argument("--pause", type=float, default=0.0, help="seconds between --say")
    scripted.add_argument("--expect", action="append", default=[], metavar="NAME:TEXT")
    scripted.add_argument("--expect-count", type=int, metavar="N")
    scripted.add_argument("--expect-left", action="append", default=[], metavar="NAME")
    scripted.add_argument("--deadline", type=float, default=chat_script.DEFAULT_DEADLINE)
    scripted.add_argument("--transcript", help="write JSON lines here (- for stdout)")
    return parser


def _load_steps(args: argparse.Namespace) -> list[chat_script.Step] | None:
    flags = (args.wait_for, args.say, args.expect, args.expect_left)
    if args.script is None and not any(flags) and args.expect_count is None:
        return None
    steps: list[chat_script.Step] = []
    if args.script == "-":
        steps += chat_script.parse_script(sys.stdin.readlines(), source="<stdin>")
    elif args.script is not None:
        try:
            with open(args.script, encoding="utf-8") as handle:
                steps += chat_script.parse_script(handle, source=args.script)
        except OSError as exc:
            raise ScriptError(f"cannot read {args.script}: {exc}") from exc
    steps += chat_script.steps_from_flags(
        wait_for=args.wait_for,
        says=args.say,
        pause=args.pause,
        expects=args.expect,
        expect_count=args.expect_count,
        expect_left=args.expect_left,
        deadline=args.deadline,
    )
    return steps


def main(argv: list[str]) -> int:
    args = build_parser(ClientConfig.from_env()).parse_args(argv)
    config = ClientConfig(
        host=args.host,
        port=args.port,
        connect_timeout=args.connect_timeout,
        hub_timeout=args.hub_timeout,
    )
    stream: IO[str] | None = None
    try:
        steps = _load_steps(args)
        if steps is None:

            def factory(**kwargs: Any) -> ChatClient:
                return ChatClient(args.name, config=config, **kwargs)

            return interactive(factory, name=args.name)
        if args.transcript == "-":
            stream = sys.stdout
        elif args.transcript:
            try:
                stream = open(args.transcript, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise ConfigError(f"cannot write {args.transcript}: {exc.strerror}") from exc
        return scripted(args.name, config=config, steps=steps, stream=stream)
    except ScriptError as exc:
        raise ConfigError(str(exc)) from exc  # a bad script is bad input: exit 2
    finally:
        if stream is not None and stream is not sys.stdout:
            stream.close()


def scripted(
    name: str, *, config: ClientConfig, steps: list[chat_script.Step], stream: IO[str] | None
) -> int:
    """Join, run ``steps``, leave; 1 when an expectation failed."""
    client = ChatClient(
        name,
        config=config,
        transcript=Transcript(stream),
        on_event=None if stream is not None else _print_event,
    )
    client.join()
    try:
        failures = run_steps(client, steps)
    finally:
        client.leave()
    for failure in failures:
        print(f"socketlab chat: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _print_event(event: dict[str, Any]) -> None:
    text = describe(event)
    if text is not None:
        print(text, flush=True)
