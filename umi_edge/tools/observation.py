"""Observation text from whatever a tool did: its value serialized, or a fault naming what went wrong.

Nothing a tool returns or raises can escape from here: an exception whose `__str__` raises, a value nested
too deeply for JSON or a str subclass with odd methods all become fault text the model sees.
"""
from __future__ import annotations

import json
from typing import Any, Callable

MAX_MESSAGE = 2000   # characters of an exception message kept (the loop cuts observations far shorter anyway)


def fault(message: str) -> str:
    """Observation text for a fault, shaped like the reference environment's error responses (protocol.md §5.4)."""
    return json.dumps({"error": message, "response": ""}, ensure_ascii=False)


def describe(error: BaseException) -> str:
    """`Type: message` for any exception, even one whose `__str__` raises or returns a non-string."""
    name = type(error).__name__
    try:
        text = str.__str__(str(error))   # an exact str, whatever subclass __str__ returned
    except BaseException:  # noqa: BLE001 - a tool's exception may fail to print in any way
        return f"{name} (its message cannot be printed)"
    text = text[:MAX_MESSAGE]
    return f"{name}: {text}" if text else name


def serialize(value: Any) -> str:
    """Deterministic observation text: str as is; JSON values as sorted, unescaped JSON; else TypeError."""
    if isinstance(value, str):
        return str.__str__(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise TypeError(f"a {type(value).__name__} nested too deeply for JSON") from None
    except Exception as e:  # noqa: BLE001 - containers with odd methods can raise anything while encoding
        raise TypeError(f"a {type(value).__name__} that is not JSON-serializable ({describe(e)})") from None


def outcome(name: str, call: Callable[[], Any]) -> tuple[str, str | None]:
    """(observation text, fault code or None) of `call()`, the call of tool `name`; never raises."""
    try:
        value = call()
    except BaseException as e:  # noqa: BLE001 - any tool failure is reported to the model
        return fault(f"{name} raised {describe(e)}"), "raised"
    try:
        return serialize(value), None
    except TypeError as e:
        return fault(f"{name} returned {e}"), "not_json"
