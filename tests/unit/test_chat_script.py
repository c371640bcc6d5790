"""Chat scripts: parsing lines and flags into steps, and clear errors."""

from __future__ import annotations

import pytest

from socketlab.chat.errors import ScriptError
from socketlab.chat.script import (
    DEFAULT_DEADLINE,
    Bye,
    Expect,
    ExpectCount,
    ExpectLeft,
    Pause,
    Say,
    WaitFor,
    parse_script,
    steps_from_flags,
)


def test_full_script() -> None:
    text = """
    # a conversation
    wait-for bob
    say hello bob: how are you?
    pause 0.5
    deadline 12
    expect bob: fine, thanks
    expect-count 2
    expect-left bob
    bye
    """
    assert parse_script(text.splitlines()) == [
        WaitFor("bob", DEFAULT_DEADLINE),
        Say("hello bob: how are you?"),
        Pause(0.5),
        Expect("bob", "fine, thanks", 12.0),
        ExpectCount(2, 12.0),
        ExpectLeft("bob", 12.0),
        Bye(),
    ]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        pytest.param("shout hi", "unknown step 'shout'", id="unknown-verb"),
        pytest.param("say", "say needs a text", id="empty-say"),
        pytest.param("pause soon", "not a number", id="bad-pause"),
        pytest.param("pause -1", "negative", id="negative-pause"),
        pytest.param("expect hello", "NAME: TEXT", id="expect-without-colon"),
        pytest.param("expect-count many", "whole number", id="bad-count"),
        pytest.param("wait-for", "name is needed", id="wait-for-nobody"),
    ],
)
def test_errors_name_file_and_line(line: str, fragment: str) -> None:
    with pytest.raises(ScriptError) as info:
        parse_script(["say ok", line], source="chat.txt")
    assert str(info.value).startswith("chat.txt:2: ")
    assert fragment in str(info.value)


def test_flags_in_fixed_order() -> None:
    steps = steps_from_flags(
        wait_for=["alice"],
        says=["one", "two"],
        pause=0.25,
        expects=["alice: hi"],
        expect_count=3,
        expect_left=["alice"],
        deadline=5,
    )
    assert steps == [
        WaitFor("alice", 5),
        Say("one"),
        Pause(0.25),
        Say("two"),
        Expect("alice", "hi", 5),
        ExpectCount(3, 5),
        ExpectLeft("alice", 5),
    ]


def test_flag_expect_needs_a_colon() -> None:
    with pytest.raises(ScriptError, match="NAME:TEXT"):
        steps_from_flags(expects=["alice hi"])
