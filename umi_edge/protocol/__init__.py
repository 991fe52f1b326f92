"""Prompt protocols by versioned name; each module owns its templates, rendering and output parsers."""
from __future__ import annotations

from typing import Callable

from ..errors import ConfigError
from .alpha_umi import NAME as ALPHA_UMI
from .alpha_umi import AlphaUmi
from .backbone import NAME as BACKBONE
from .backbone import Backbone
from .base import CallParse, Prompt, Route, Segment, Turn
from .interfaces import AnyProtocol, SingleProtocol, TeamProtocol

DEFAULT = ALPHA_UMI

# name -> factory(**options); a chat-template protocol, say, would register one more line here.
PROTOCOLS: dict[str, Callable[..., AnyProtocol]] = {ALPHA_UMI: AlphaUmi, BACKBONE: Backbone}


def get_protocol(name: str = DEFAULT, **options) -> AnyProtocol:
    """The protocol object registered under `name`, built with `options` (its switches)."""
    try:
        factory = PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown protocol {name!r}; valid: {', '.join(sorted(PROTOCOLS))}") from None
    try:
        return factory(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"protocol {name!r}: bad option ({e})") from None


__all__ = ["ALPHA_UMI", "BACKBONE", "DEFAULT", "PROTOCOLS", "AlphaUmi", "AnyProtocol", "Backbone", "CallParse", "Prompt",
           "Route", "Segment", "SingleProtocol", "TeamProtocol", "Turn", "get_protocol"]
