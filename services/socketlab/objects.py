"""Objects across the wire: JSON with a type registry by default, signed pickle opt-in.

JSON is the safe default: a registered type is encoded as an object with a
``"__type__"`` key and rebuilt by its registered decoder, which validates every
field; an unknown ``__type__`` is refused. Nothing in the payload can name
code to run.

Pickle exists for the demo only, behind an explicit key: the sender signs the
pickle bytes with HMAC-SHA256 under a key both ends share; the receiver checks
the size, then the signature (constant time, ``hmac.compare_digest``) *before*
it unpickles anything, and even then unpickles with an allowlist of classes.
An unsigned, mis-signed or oversize pickle is refused with a clear error. A
signed pickle cannot make the receiver allocate more than its own size limit
either: sized constructors (``bytearray(500000000)`` is 46 bytes of pickle)
draw on one budget per load, the message's limit, and are refused past it.

::

    ProtocolError
    └── ObjectError             a payload we will not turn into objects
        └── PickleRefused       pickle disabled, unsigned, mis-signed, oversize, forbidden class
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from socketlab.protocol.errors import ProtocolError

TYPE_KEY: Final = "__type__"
PICKLE_TYPE: Final = "application/x-python-pickle"
DEFAULT_MAX_PICKLE: Final = 64 * 1024


class ObjectError(ProtocolError):
    """A payload that does not decode to allowed objects."""


class PickleRefused(ObjectError):
    """A pickle we refuse to load; nothing from it was executed."""


@dataclass(frozen=True)
class Product:
    """The demo's custom object."""

    pid: int
    name: str
    price: Decimal


def _product_to_json(product: Product) -> dict[str, Any]:
    return {"pid": product.pid, "name": product.name, "price": str(product.price)}


def _product_from_json(fields: dict[str, Any]) -> Product:
    pid, name, price = fields.get("pid"), fields.get("name"), fields.get("price")
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise ObjectError("Product.pid must be an integer")
    if not isinstance(name, str):
        raise ObjectError("Product.name must be a string")
    if not isinstance(price, str):
        raise ObjectError("Product.price must be a decimal string")
    try:
        value = Decimal(price)
    except InvalidOperation as exc:
        raise ObjectError(f"Product.price {price!r} is not a decimal") from exc
    if not value.is_finite():
        raise ObjectError("Product.price must be finite")
    return Product(pid=pid, name=name, price=value)


@dataclass(frozen=True)
class Codec:
    """How one registered type goes to and from JSON."""

    cls: type
    to_json: Callable[[Any], dict[str, Any]]
    from_json: Callable[[dict[str, Any]], Any]


class TypeRegistry:
    """Types allowed to cross the wire as JSON, by name."""

    def __init__(self) -> None:
        self._by_name: dict[str, Codec] = {}

    def register(
        self,
        name: str,
        cls: type,
        to_json: Callable[[Any], dict[str, Any]],
        from_json: Callable[[dict[str, Any]], Any],
    ) -> None:
        self._by_name[name] = Codec(cls, to_json, from_json)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def dumps(self, obj: Any) -> str:
        """Encode ``obj`` (JSON values and registered types, nested) as JSON text."""

        def default(value: Any) -> Any:
            for name, codec in self._by_name.items():
                if type(value) is codec.cls:
                    return {TYPE_KEY: name, **codec.to_json(value)}
            raise TypeError(f"{type(value).__name__} is not a registered type")

        try:
            return json.dumps(obj, default=default, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ObjectError(f"cannot encode object: {exc}") from exc

    def loads(self, text: str) -> Any:
        """Decode JSON text, rebuilding registered types; unknown types are refused."""

        def hook(fields: dict[str, Any]) -> Any:
            if TYPE_KEY not in fields:
                return fields
            name = fields.pop(TYPE_KEY)
            codec = self._by_name.get(name) if isinstance(name, str) else None
            if codec is None:
                raise ObjectError(f"type {name!r} is not registered")
            return codec.from_json(fields)

        try:
            return json.loads(text, object_hook=hook)
        except (ValueError, RecursionError) as exc:
            raise ObjectError(f"not valid JSON: {exc}") from exc


def default_registry() -> TypeRegistry:
    """A registry with the demo's types."""
    registry = TypeRegistry()
    registry.register("Product", Product, _product_to_json, _product_from_json)
    return registry


def sample_objects() -> dict[str, Any]:
    """What the objects demo sends: a plain dict and a Product."""
    return {
        "dict": {"name": "socketlab", "ports": [4571, 8080], "ok": True, "ratio": 0.5},
        "product": Product(pid=42, name="Widget \u2014 deluxe", price=Decimal("19.99")),
    }


# --- pickle, opt-in and signed ---------------------------------------------------------

# Classes a signed pickle may contain: plain data and the demo's types. Even a
# correctly signed pickle cannot reach os.system & co. through find_class.
_PICKLE_ALLOWED: Final = frozenset(
    {
        ("socketlab.objects", "Product"),
        ("decimal", "Decimal"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "complex"),
        ("builtins", "bytearray"),
    }
)


class _AllowlistUnpickler(pickle.Unpickler):
    """Only allowlisted classes, and sized constructors within ``budget`` bytes in all."""

    def __init__(self, file: io.BytesIO, *, budget: int) -> None:
        super().__init__(file)
        self._budget = budget

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise PickleRefused(f"pickle refers to {module}.{name}, which is not allowed")
        if (module, name) == ("builtins", "bytearray"):
            return self._bytearray
        return super().find_class(module, name)

    def _bytearray(self, *args: Any) -> bytearray:
        self._spend(_bytearray_size(args))
        return bytearray(*args)

    def _spend(self, size: int) -> None:
        if size > self._budget:
            raise PickleRefused(
                f"pickle asks for {size} bytes, over what is left of its limit ({self._budget})"
            )
        self._budget -= size


def _bytearray_size(args: tuple[Any, ...]) -> int:
    """At most how many bytes ``bytearray(*args)`` allocates."""
    if not args:
        return 0
    source = args[0]
    if isinstance(source, bool):
        return 1
    if isinstance(source, int):
        return max(0, source)  # bytearray(n): n zero bytes
    if isinstance(source, str):
        return 4 * len(source)  # encoded: at most four bytes a character
    try:
        return len(source)
    except TypeError:
        return 0  # an unsized iterable can only be one the pickle itself holds


def signature(payload: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``payload`` under ``key``, hex."""
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def dump_signed_pickle(obj: Any, key: bytes) -> tuple[bytes, str]:
    """Pickle ``obj`` and sign it; returns (payload, hex signature)."""
    if not key:
        raise PickleRefused("pickle is disabled: no shared key configured")
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return payload, signature(payload, key)


def check_pickle_size(size: int, *, max_size: int = DEFAULT_MAX_PICKLE) -> None:
    """Refuse a pickle by its announced size, before reading it."""
    if size > max_size:
        raise PickleRefused(f"pickle of {size} bytes exceeds the limit of {max_size}")


def load_signed_pickle(
    payload: bytes, sig: str | None, key: bytes | None, *, max_size: int = DEFAULT_MAX_PICKLE
) -> Any:
    """Verify, then unpickle; raises PickleRefused before unpickling on any doubt."""
    if not key:
        raise PickleRefused("pickle is disabled on this end (no shared key configured)")
    check_pickle_size(len(payload), max_size=max_size)
    if not sig:
        raise PickleRefused("pickle is unsigned; refusing to load it")
    expected = signature(payload, key)
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace")):
        raise PickleRefused("pickle signature does not match; refusing to load it")
    try:
        return _AllowlistUnpickler(io.BytesIO(payload), budget=max_size).load()
    except PickleRefused:
        raise
    except Exception as exc:  # a signed but broken pickle can fail in many ways
        raise PickleRefused(f"signed pickle does not load: {exc}") from exc
