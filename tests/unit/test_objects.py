"""Objects: JSON with a type registry; signed pickle refused unless verified."""

from __future__ import annotations

import pickle
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from socketlab.objects import (
    ObjectError,
    PickleRefused,
    Product,
    default_registry,
    dump_signed_pickle,
    load_signed_pickle,
    sample_objects,
    signature,
)
from socketlab.protocol import ProtocolError

KEY = b"shared-test-key"


class Sentinel:
    """Unpickling this would create a file: the attack the HMAC check must stop."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_sample_objects_round_trip_equal() -> None:
    registry = default_registry()
    objects = sample_objects()
    assert registry.loads(registry.dumps(objects)) == objects
    assert isinstance(registry.loads(registry.dumps(objects))["product"], Product)


@given(st.integers(), st.text(), st.decimals(allow_nan=False, allow_infinity=False))
@settings(max_examples=100)
def test_product_round_trip(pid: int, name: str, price: Decimal) -> None:
    registry = default_registry()
    product = Product(pid=pid, name=name, price=price)
    assert registry.loads(registry.dumps([product, {"p": product}])) == [product, {"p": product}]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param('{"__type__": "os.system", "cmd": "x"}', "not registered", id="unknown-type"),
        pytest.param('{"__type__": 3}', "not registered", id="type-not-string"),
        pytest.param(
            '{"__type__": "Product", "pid": "1", "name": "a", "price": "1"}', "pid", id="bad-pid"
        ),
        pytest.param(
            '{"__type__": "Product", "pid": 1, "name": "a", "price": "abc"}',
            "decimal",
            id="bad-price",
        ),
        pytest.param(
            '{"__type__": "Product", "pid": 1, "name": "a", "price": "NaN"}',
            "finite",
            id="nan-price",
        ),
        pytest.param("{not json", "not valid JSON", id="not-json"),
    ],
)
def test_bad_json_objects_are_refused(text: str, match: str) -> None:
    with pytest.raises(ObjectError, match=match):
        default_registry().loads(text)


def test_unregistered_type_cannot_be_sent() -> None:
    with pytest.raises(ObjectError, match="not a registered type"):
        default_registry().dumps({"x": object()})


def test_signed_pickle_round_trip() -> None:
    payload, sig = dump_signed_pickle(sample_objects(), KEY)
    assert load_signed_pickle(payload, sig, KEY) == sample_objects()


def test_object_error_is_a_protocol_error() -> None:
    assert issubclass(PickleRefused, ProtocolError)


@pytest.mark.parametrize(
    ("sign", "key", "match"),
    [
        pytest.param(None, KEY, "unsigned", id="unsigned"),
        pytest.param("00" * 32, KEY, "does not match", id="wrong-signature"),
        pytest.param("not-hex-\u00e9", KEY, "does not match", id="garbage-signature"),
        pytest.param("wrong-key", KEY, "does not match", id="signed-with-other-key"),
        pytest.param("right", None, "disabled", id="pickle-disabled"),
    ],
)
def test_malicious_pickle_refused_before_unpickling(
    tmp_path: Path, sign: str | None, key: bytes | None, match: str
) -> None:
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(Sentinel(str(sentinel)))
    sig = {"wrong-key": signature(payload, b"other"), "right": signature(payload, KEY)}.get(
        sign or "", sign
    )
    with pytest.raises(PickleRefused, match=match):
        load_signed_pickle(payload, sig, key)
    assert not sentinel.exists()


def test_correctly_signed_pickle_still_cannot_call_arbitrary_code(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    payload = pickle.dumps(Sentinel(str(sentinel)))
    with pytest.raises(PickleRefused, match="not allowed"):
        load_signed_pickle(payload, signature(payload, KEY), KEY)
    assert not sentinel.exists()


def test_oversize_pickle_refused_by_size() -> None:
    payload, sig = dump_signed_pickle(b"x" * 2000, KEY)
    with pytest.raises(PickleRefused, match="exceeds the limit"):
        load_signed_pickle(payload, sig, KEY, max_size=1000)


def test_signed_but_truncated_pickle_is_refused() -> None:
    payload, _ = dump_signed_pickle(sample_objects(), KEY)
    broken = payload[:-5]
    with pytest.raises(PickleRefused, match="does not load"):
        load_signed_pickle(broken, signature(broken, KEY), KEY)


def test_no_key_means_no_pickle_sending() -> None:
    with pytest.raises(PickleRefused, match="disabled"):
        dump_signed_pickle({"a": 1}, b"")
