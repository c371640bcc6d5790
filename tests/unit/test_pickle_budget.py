"""A signed pickle cannot make the receiver allocate more than the message's own size limit."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import pytest

from socketlab import objects
from socketlab.client.cli import LabClientConfig
from socketlab.objects import PickleRefused, load_signed_pickle, sample_objects, signature
from socketlab.server import ServerConfig

KEY = b"budget-test-key"


def signed(payload: bytes) -> tuple[bytes, str]:
    return payload, signature(payload, KEY)


def reduce_call(module: str, name: str, *arguments: int) -> bytes:
    """A protocol-2 pickle calling ``module.name(*arguments)`` (what the allowlist sees)."""
    args = b"".join(b"J" + value.to_bytes(4, "little", signed=True) for value in arguments)
    tuple_op = {0: b")", 1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(arguments)]
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + args + tuple_op + b"R."


def test_a_46_byte_pickle_cannot_allocate_half_a_gigabyte() -> None:
    payload = reduce_call("builtins", "bytearray", 500_000_000)
    assert len(payload) < 64
    tracemalloc.start()
    try:
        with pytest.raises(PickleRefused, match="asks for 500000000 bytes"):
            load_signed_pickle(*signed(payload), KEY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024


def test_many_small_allocations_share_one_budget() -> None:
    # 40 x 2000 bytes = 80,000: past a 64 KiB limit although each one is under it.
    calls = b"".join(b"cbuiltins\nbytearray\nJ\xd0\x07\x00\x00\x85R" for _ in range(40))
    payload = b"\x80\x02(" + calls + b"l."
    assert len(payload) < 2000
    with pytest.raises(PickleRefused, match="over what is left of its limit"):
        load_signed_pickle(*signed(payload), KEY)
    small = b"\x80\x02(" + calls[: len(calls) // 2] + b"l."  # 20 x 2000 = 40,000: fine
    loaded = load_signed_pickle(*signed(small), KEY)
    assert [len(item) for item in loaded] == [2000] * 20


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_ordinary_objects_still_load(protocol: int) -> None:
    value = {
        **sample_objects(),
        "bytes": bytearray(b"\x00\x01" * 1000),
        "set": {1, 2, 3},
        "frozen": frozenset({"a"}),
        "complex": 1 + 2j,
    }
    payload = pickle.dumps(value, protocol=protocol)
    assert load_signed_pickle(*signed(payload), KEY) == value


def test_the_budget_is_the_message_limit() -> None:
    payload = reduce_call("builtins", "bytearray", 5000)
    assert len(load_signed_pickle(*signed(payload), KEY, max_size=8000)) == 5000
    with pytest.raises(PickleRefused, match="asks for 5000 bytes"):
        load_signed_pickle(*signed(payload), KEY, max_size=4000)
    assert objects.DEFAULT_MAX_PICKLE == 64 * 1024


def test_the_key_comes_from_its_file_not_the_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "pickle-key"
    key_file.write_text("from-the-file\n")
    env = {"SOCKETLAB_PICKLE_KEY_FILE": str(key_file)}
    assert ServerConfig.from_env(env).resolved().pickle_key == b"from-the-file"
    assert LabClientConfig.from_env(env).resolved().pickle_key == b"from-the-file"
    both = {**env, "SOCKETLAB_PICKLE_KEY": "explicit"}
    assert ServerConfig.from_env(both).resolved().pickle_key == b"explicit", "outside the lab"
    missing = {"SOCKETLAB_PICKLE_KEY_FILE": str(tmp_path / "none")}
    assert ServerConfig.from_env(missing).resolved().pickle_key is None, "pickle disabled"
    key_file.write_text("\n")
    assert LabClientConfig.from_env(env).resolved().pickle_key is None
