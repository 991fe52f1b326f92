r"""GBNF grammars for constrained α-UMi decoding: the caller's `Action:` / `Action Input:` call over the
registered tools, and the planner's route marker when the model wrote none.

JSON arguments come from llama-cpp-python's JSON-schema converter with these changes: JSON strings hold
no raw control characters and, by default, only ASCII (other characters as \uXXXX escapes), so every call
is valid UTF-8 and parses with json.loads; unbounded strings and arrays get bounds, shrunk per tool until
the longest admitted call fits the caller's token budget, so even a random-weight model finishes a call.
Required keys come first, in schema order. Free-form objects stay unbounded (no guarantee for those).
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import re
from typing import Any, Iterable, Mapping

from .alpha_umi import MARKERS

log = logging.getLogger(__name__)

# A leading space is allowed because SentencePiece models continue "caller: " with "▁Action" (protocol.md §4.2).
CALLER_PREFIX = "Action: "
INPUT_SEPARATOR = "\nAction Input: "
ROUTES = {kind: marker for kind, marker in reversed(MARKERS)}   # kind → marker: caller, conclusion, give_up
ROUTE_MARKERS = tuple(ROUTES.values())

MAX_STRING = 256   # characters in an unbounded JSON string
MAX_ITEMS = 16     # items in an unbounded JSON array

# JSON string characters. No raw U+0000-U+001F (json.loads rejects them). ASCII by default, other
# characters as \uXXXX escapes (the convention of the tool docs in the prompt): llama.cpp's grammar
# decodes malformed UTF-8 leniently, so only ASCII guarantees that every admitted byte string is valid UTF-8.
_ESCAPE = r'"\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
CHAR_RULE = r'[ !#-\[\]-~] | ' + _ESCAPE
UNICODE_CHAR_RULE = r'[^"\\\x00-\x1F\x7F\uD800-\uDFFF] | ' + _ESCAPE
# At most 2 exponent digits: every admitted number is finite as a float (the converter allows 16).
NUMBER_RULE = '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9] [0-9]?)? space'
COMPACT_SPACE = '" "?'
PRETTY_SPACE = '| " " | "\\n" [ ]{0,4}'   # admits the pretty-printed JSON α-UMi callers were trained on


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
    if not isinstance(schema, Mapping):
        return schema
    sub = lambda x: _bounded(x, max_string, max_items)  # noqa: E731
    if isinstance(schema.get("type"), list):  # the converter would drop the other keywords of a type list
        rest = {k: v for k, v in schema.items() if k != "type"}
        return {"anyOf": [sub({**rest, "type": t}) for t in schema["type"]]}
    out = dict(schema)
    for key in ("properties", "$defs", "definitions"):
        if isinstance(out.get(key), Mapping):
            out[key] = {k: sub(v) for k, v in out[key].items()}
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(out.get(key), list):
            out[key] = [sub(v) for v in out[key]]
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), Mapping):
            out[key] = sub(out[key])
        elif isinstance(out.get(key), list):
            out[key] = [sub(v) for v in out[key]]
    if out.get("type") == "string" and not ({"pattern", "format", "enum", "const"} & set(out)):
        out["maxLength"] = min(out.get("maxLength", max_string), max(max_string, out.get("minLength", 0)))
    if out.get("type") == "array" and isinstance(out.get("items"), Mapping):
        out["maxItems"] = min(out.get("maxItems", max_items), max(max_items, out.get("minItems", 0)))
    return out


def _tool_schemas(tools: Iterable[Any]) -> list[tuple[str, Mapping]]:
    pairs = [(t.name, t.parameters) if hasattr(t, "parameters") else (t[0], t[1]) for t in tools]
    if not pairs:
        raise ValueError("a caller grammar needs at least one tool")
    return pairs


def worst_case_bytes(schema: Any, space: int = 1) -> float:
    """Upper bound on the UTF-8 bytes of JSON the grammar admits for `schema` (inf when unbounded).

    Every token carries at least one byte, so this also bounds the tokens of a call. A string character
    costs at most 6 bytes (a `\\uXXXX` escape); `space` is the longest whitespace run between tokens.
    """
    if not isinstance(schema, Mapping):
        return float("inf")
    if "const" in schema:
        return len(json.dumps(schema["const"]).encode()) + space
    if "enum" in schema:
        return max((len(json.dumps(v).encode()) for v in schema["enum"]), default=0) + space
    alts = schema.get("anyOf") or schema.get("oneOf")
    if alts:
        return max(worst_case_bytes(a, space) for a in alts)
    kind = schema.get("type")
    if isinstance(kind, list):
        return max(worst_case_bytes({**schema, "type": k}, space) for k in kind)
    if kind == "string":
        if "maxLength" in schema and not ({"pattern", "format"} & set(schema)):
            return 2 + 6 * schema["maxLength"] + space
        return 40 + space if schema.get("format") in ("date", "time", "date-time") else float("inf")
    if kind == "integer":
        return 17 + space
    if kind == "number":
        return 38 + space
    if kind == "boolean":
        return 5 + space
    if kind == "null":
        return 4 + space
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, list):
            return 2 + sum(worst_case_bytes(i, space) + 1 + space for i in items) + space
        n = schema.get("maxItems")
        return float("inf") if n is None else 2 + n * (worst_case_bytes(items or {}, space) + 1 + space) + space
    if kind in (None, "object") and "properties" in schema and schema.get("additionalProperties") in (None, False):
        return 2 + sum(len(json.dumps(k).encode()) + 2 + 2 * space + worst_case_bytes(v, space)
                       for k, v in schema["properties"].items()) + space
    return float("inf")


def _fit(name: str, schema: Mapping, max_tokens: int | None, max_string: int, max_items: int, space: int) -> dict:
    """Bound unbounded strings/arrays; with `max_tokens`, shrink the bounds until the whole call fits."""
    bounded = _bounded(dict(schema), max_string, max_items)
    if max_tokens is None:
        return bounded
    fixed = 1 + len((CALLER_PREFIX + name + INPUT_SEPARATOR).encode())
    lo, hi = 1, max_string
    if fixed + worst_case_bytes(bounded, space) <= max_tokens:
        return bounded
    while lo < hi:  # the largest string bound whose worst case fits
        mid = (lo + hi + 1) // 2
        trial = _bounded(dict(schema), mid, max(1, min(max_items, mid // 4)))
        lo, hi = (mid, hi) if fixed + worst_case_bytes(trial, space) <= max_tokens else (lo, mid - 1)
    fitted = _bounded(dict(schema), lo, max(1, min(max_items, lo // 4)))
    worst = fixed + worst_case_bytes(fitted, space)
    if worst > max_tokens:
        log.warning("tool %s: its longest call (%s bytes) can exceed max_tokens=%d even with the tightest "
                    "bounds; a model may be cut off mid-call", name, worst, max_tokens)
    return fitted


def caller_grammar(tools: Iterable[Any], *, max_tokens: int | None = None, pretty: bool = False,
                   unicode: bool = False, max_string: int = MAX_STRING, max_items: int = MAX_ITEMS) -> str:
    """GBNF admitting exactly `Action: <registered name>\\nAction Input: <JSON for that tool's schema>`.

    `tools`: a ToolSet, Tools, or (name, parameters-schema) pairs. `max_tokens`: the caller's token budget;
    string and array bounds shrink per tool so that any admitted call fits in it (for schemas without
    free-form objects), i.e. even a random model finishes a parseable call. `pretty` also admits
    newline+indent whitespace inside the JSON (closer to the α-UMi training targets, fewer forced tokens).
    `unicode` admits raw non-ASCII in JSON strings (a malformed byte sequence then decodes to U+FFFD).
    """
    from llama_cpp.llama_grammar import SchemaConverter  # heavy import, only when constraining

    space = 5 if pretty else 1
    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    alternatives = []
    for i, (name, schema) in enumerate(_tool_schemas(tools)):
        saved = dict(converter._rules)
        try:
            schema = _fit(name, converter.resolve_refs(copy.deepcopy(dict(schema)), f"tool{i}"), max_tokens,
                          max_string, max_items, space)
            args_rule = converter.visit(schema, f"tool{i}-args")
        except Exception as e:  # noqa: BLE001 - the converter asserts or raises on refs it cannot follow
            # e.g. a $ref to another document (never fetched): any JSON object, and the tool's own
            # argument check turns the call into a fault observation the model sees
            log.warning("tool %s: its parameter schema cannot be made a grammar (%s: %s); any JSON object is "
                        "admitted", name, type(e).__name__, e)
            converter._rules = saved
            args_rule = converter.visit({"type": "object"}, f"tool{i}-args")
        alternatives.append(converter._add_rule(f"tool{i}", f"{literal(name + INPUT_SEPARATOR)} {args_rule}"))
    rules = dict(converter._rules)
    if "number" in rules:
        rules["number"] = NUMBER_RULE
    if "char" in rules:
        rules["char"] = UNICODE_CHAR_RULE if unicode else CHAR_RULE
    rules["space"] = PRETTY_SPACE if pretty else COMPACT_SPACE
    lines = [f'root ::= " "? {literal(CALLER_PREFIX)} ( {" | ".join(alternatives)} )']
    lines += [f"{name} ::= {rule}" for name, rule in sorted(rules.items()) if name != "root"]
    return "\n".join(lines) + "\n"


def route_grammar(routes: Iterable[str] | None = None) -> str:
    """GBNF completing a planner output that has no marker with exactly one of the three route markers
    (with `routes`, one of those kinds': caller / conclusion / give_up).

    An optional newline first: the current α-UMi preprocessing writes `<thought>\\n Next: X.` (protocol.md §3.6).
    """
    markers = ROUTE_MARKERS if routes is None else [ROUTES[r] for r in routes]
    if not markers:
        raise ValueError("route_grammar needs at least one route")
    choices = " | ".join(literal(" " + m) for m in markers)
    return f'root ::= "\\n"? ( {choices} )\n'



FREE_ANSWER = "answer ::= [^\\x00]+\n"
THOUGHT_CHARS = 320   # backbone thought bound: our generated thoughts are <= 249 chars (one line each; a plan)


def backbone_grammar(tools: Iterable[Any], *, max_tokens: int | None = None, thought_chars: int = THOUGHT_CHARS,
                     routes: Iterable[str] | None = None, **options: Any) -> str:
    """GBNF for one single-model (backbone protocol) output: a thought line of at most `thought_chars`
    characters, then either the caller grammar's call or `conclusion: <answer>` (`conclusion: give up.`
    gives up). Every token carries at least one character, so with `max_tokens` the call is sized to
    what the thought leaves (`max_tokens - thought_chars - 1`) and always finishes, as in `caller_grammar`.
    `routes` (caller / conclusion / give_up) limits what may follow the thought."""
    if max_tokens is not None and max_tokens - thought_chars - 1 < 16:
        raise ValueError(f"backbone max_tokens {max_tokens} leaves no room for a call after a "
                         f"{thought_chars}-character thought; raise max_tokens")
    budget = None if max_tokens is None else max_tokens - thought_chars - 1
    call = caller_grammar(tools, max_tokens=budget, **options).replace("root ::=", "call ::=", 1)
    routes = set(ROUTES) if routes is None else set(routes)
    ends = (["call"] if "caller" in routes else []) + (['"conclusion: " answer'] if "conclusion" in routes else
                                                        ['"conclusion: give up."'] if "give_up" in routes else [])
    if not ends:
        raise ValueError("backbone_grammar needs at least one route")
    head = (f'root ::= thought "\\n" ( {" | ".join(ends)} )\nthought ::= [^\\n]{{1,{thought_chars}}}\n'
            + FREE_ANSWER)
    return head + call


# --- grounded answers ---------------------------------------------------------------------------------------

MAX_GROUNDED = 512            # number spellings in one answer grammar; more grounds than this leave it free
_DIGIT_RUN = re.compile(r"\d+(?:[.,]\d+)*")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _spellings(run: str) -> set[str]:
    """How an answer may write the number(s) of one digit run found in a ground: as found, grouped or not
    ("1340" / "1,340"), and rounded to fewer decimals ("34.2857" → "34.29", "34.3", "34")."""
    grouped = _GROUPED.fullmatch(run) is not None
    parts = [run.replace(",", "")] if grouped else run.split(",")   # "1,2,3" is a list
    out = {run} if grouped else set()
    for part in parts:
        if part.count(".") > 1:            # a version or a date written with dots: its parts as found
            out.update(part.split("."))
            continue
        out.add(part)
        whole, _, frac = part.partition(".")
        for form in [whole] + [f"{float(part):.{k}f}" for k in range(1, min(len(frac), 3))]:
            w, dot, f = form.partition(".")
            out.add(form)
            if len(w) > 3:
                out.add(f"{int(w):,}" + dot + f)
    return out


def grounded_numbers(grounds: Iterable[str]) -> list[str]:
    """Every spelling of every number written in `grounds` (the query, the calls, the observations)."""
    out: set[str] = set()
    for text in grounds:
        for m in _DIGIT_RUN.finditer(text or ""):
            out |= _spellings(m.group())
    return sorted(out, key=lambda s: (len(s), s))


@functools.lru_cache(maxsize=1)
def _digit_ranges() -> str:
    """Every Unicode decimal digit (category Nd: "0"-"9", "٠"-"٩", ...) as GBNF character-class ranges."""
    import sys
    import unicodedata

    ranges: list[list[int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)) == "Nd":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"\\U{a:08X}-\\U{b:08X}" for a, b in ranges)


def answer_grammar(grounds: Iterable[str], name: str = "root") -> str | None:
    """GBNF for a summarizer's answer in which every number is one written in `grounds` (or a rounding of
    one): any text, but a run of digits (with inner "." / ",") must be one of those spellings as a whole and
    cannot run on into more digits. None when the grounds hold more than MAX_GROUNDED spellings. `name`: the
    rule it defines (its helper rules are prefixed with it), to embed it in another grammar.

    The answer's numbers then come from the query, the calls and the observations by construction (the task
    check `eval.tasks.fabricated_numbers` measures the same thing after the fact); which one is right is still
    the model's to pick, and arithmetic belongs in a tool call (the calculator), as in training."""
    numbers = grounded_numbers(grounds)
    if len(numbers) > MAX_GROUNDED:
        return None
    other = f"[^.,{_digit_ranges()}]"     # no digit of any script outside a grounded number
    if not numbers:
        return f"{name} ::= ( {other} | [.,] )*\n"
    p = "" if name == "root" else f"{name}-"
    # s0: anywhere a number may start; s1: right after a number; s2: after a number and "." or ","
    return (f"{name} ::= {p}s0\n"
            f"{p}s0 ::= ( {other} {p}s0 | [.,] {p}s0 | {p}num {p}s1 )?\n"
            f"{p}s1 ::= ( {other} {p}s0 | [.,] {p}s2 )?\n"
            f"{p}s2 ::= ( [^{_digit_ranges()}] {p}s0 )?\n"
            f"{p}num ::= {' | '.join(literal(n) for n in numbers)}\n")


def ground_backbone(grammar: str, grounds: Iterable[str]) -> str:
    """A backbone grammar whose `conclusion: <answer>` states only grounded numbers (see answer_grammar)."""
    rules = answer_grammar(grounds, "answer")
    return grammar if rules is None else grammar.replace(FREE_ANSWER, rules, 1)
