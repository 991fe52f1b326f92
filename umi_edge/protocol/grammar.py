"""GBNF grammars for constrained α-UMi decoding: the caller's `Action:` / `Action Input:` call over the
registered tools, and the planner's route marker when the model wrote none.

JSON arguments come from llama-cpp-python's JSON-schema converter with three changes: JSON strings
cannot hold raw control characters (so every call parses with json.loads), and strings and arrays
without explicit bounds get generous ones, so even a random-weight model finishes a call in a bounded
number of tokens. Required keys come first, in schema order. Free-form objects stay unbounded.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Mapping

# A leading space is allowed because SentencePiece models continue "caller: " with "▁Action" (§4.2).
CALLER_PREFIX = "Action: "
INPUT_SEPARATOR = "\nAction Input: "
ROUTE_MARKERS = ("Next: caller.", "Next: conclusion.", "Next: give up.")

MAX_STRING = 256   # characters in an unbounded JSON string
MAX_ITEMS = 16     # items in an unbounded JSON array

# No raw U+0000-U+001F: json.loads rejects them inside strings.
CHAR_RULE = r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
COMPACT_SPACE = '" "?'
PRETTY_SPACE = '| " " | "\\n" [ ]{0,8}'   # admits the pretty-printed JSON α-UMi callers were trained on


def literal(text: str) -> str:
    """A GBNF string literal for `text`."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _bounded(schema: Any, max_string: int, max_items: int) -> Any:
    """A copy of `schema` whose unbounded strings and arrays get length limits (for the grammar only)."""
    if isinstance(schema, list):
        return [_bounded(s, max_string, max_items) for s in schema]
    if not isinstance(schema, Mapping):
        return schema
    out = {k: _bounded(v, max_string, max_items) if k not in ("enum", "const", "default", "examples") else v
           for k, v in schema.items()}
    if out.get("type") == "string" and "maxLength" not in out and not ({"pattern", "format", "enum", "const"} & set(out)):
        out["maxLength"] = max(max_string, int(out.get("minLength", 0)))
    if out.get("type") == "array" and "maxItems" not in out and "items" in out and not isinstance(out["items"], list):
        out["maxItems"] = max(max_items, int(out.get("minItems", 0)))
    return out


def _tool_schemas(tools: Iterable[Any]) -> list[tuple[str, Mapping]]:
    pairs = [(t.name, t.parameters) if hasattr(t, "parameters") else (t[0], t[1]) for t in tools]
    if not pairs:
        raise ValueError("a caller grammar needs at least one tool")
    return pairs


def caller_grammar(tools: Iterable[Any], *, pretty: bool = False, max_string: int = MAX_STRING,
                   max_items: int = MAX_ITEMS) -> str:
    """GBNF admitting exactly `Action: <registered name>\\nAction Input: <JSON for that tool's schema>`.

    `tools`: a ToolSet, Tools, or (name, parameters-schema) pairs. `pretty` also admits newline+indent
    whitespace inside the JSON (closer to the α-UMi training targets, fewer forced tokens).
    """
    from llama_cpp.llama_grammar import SchemaConverter  # heavy import, only when constraining

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = []
    for i, (name, schema) in enumerate(_tool_schemas(tools)):
        schema = converter.resolve_refs(copy.deepcopy(_bounded(dict(schema), max_string, max_items)), f"tool{i}")
        args_rule = converter.visit(schema, f"tool{i}-args")
        alternatives.append(converter._add_rule(f"tool{i}", f"{literal(name + INPUT_SEPARATOR)} {args_rule}"))
    rules = dict(converter._rules)
    rules["char"] = CHAR_RULE
    rules["space"] = PRETTY_SPACE if pretty else COMPACT_SPACE
    lines = [f'root ::= " "? {literal(CALLER_PREFIX)} ( {" | ".join(alternatives)} )']
    lines += [f"{name} ::= {rule}" for name, rule in sorted(rules.items()) if name != "root"]
    return "\n".join(lines) + "\n"


def route_grammar() -> str:
    """GBNF completing a planner output that has no marker with exactly one of the three route markers.

    An optional newline first: the current α-UMi preprocessing writes `<thought>\\n Next: X.` (§3.6).
    """
    choices = " | ".join(literal(" " + m) for m in ROUTE_MARKERS)
    return f'root ::= "\\n"? ( {choices} )\n'

