"""A safe arithmetic evaluator: parses with `ast` and walks a whitelist of nodes; never calls eval.

Every operation is bounded before it runs: integers never exceed MAX_INT_BITS, powers and round()'s digits
are checked against the size of their result first, so no expression starts big-integer work that runs
(without yielding the GIL) long enough to defeat a tool timeout, a run budget or Ctrl-C.
"""
from __future__ import annotations

import ast
import math
import operator
import re

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "floor": math.floor,
             "ceil": math.ceil, "log": math.log, "log10": math.log10, "log2": math.log2, "exp": math.exp,
             "sin": math.sin, "cos": math.cos, "tan": math.tan, "factorial": math.factorial}
CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 1000          # 10**1000 is already far past anything a float can hold
MAX_FACTORIAL = 170           # the largest n whose n! still fits a float
MAX_ROUND_DIGITS = 1000       # round(x, n): |n| beyond this means nothing and round(5, -10**18) never returns
MAX_INT_BITS = 4096           # any integer along the way (10**1000 has 3322 bits): each operation takes µs
MAX_RESULT = 10**300
MAX_LENGTH = 500             # characters of expression
# "15%" → "(15/100)" and digit-group commas ("2,480") → "2480", the two forms models write most.
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%(?!\s*[\d(.])")
_GROUPED = re.compile(r"\b\d{1,3}(?:,\d{3})+(?:\.\d+)?\b")


class CalcError(ValueError):
    """The expression is not allowed or cannot be evaluated; the message says why."""


def normalize(expression: str) -> str:
    """Accept the notations people (and models) write: ×, ÷, ^, 15%, 2,480, 'x' between numbers."""
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**").replace("−", "-")
    if not re.search(r"[A-Za-z_]\w*\s*\(", text):  # commas separate function arguments otherwise
        text = _GROUPED.sub(lambda m: m.group(0).replace(",", ""), text)
    text = re.sub(r"%\s*of\b", "% *", text)
    text = _PERCENT.sub(r"(\1/100)", text)
    return re.sub(r"(?<=\d)\s*[xX]\s*(?=\d)", "*", text)


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression over numbers, + - * / // % **, parentheses, FUNCTIONS, CONSTANTS."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalcError("empty expression")
    if len(expression) > MAX_LENGTH:
        raise CalcError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(normalize(expression).strip(), mode="eval")
    except SyntaxError:
        raise CalcError(f"cannot parse {expression!r}; use numbers, + - * / // % ** and parentheses") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise CalcError("division by zero") from None
    except OverflowError:
        raise CalcError("result too large") from None
    except (TypeError, ValueError) as e:
        raise CalcError(str(e)) from None
    except (RecursionError, MemoryError):
        raise CalcError("expression nested too deeply") from None
    if isinstance(value, complex):
        raise CalcError("the result is a complex number; only real arithmetic is supported")
    if isinstance(value, int) and abs(value) > MAX_RESULT:
        raise CalcError("result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalcError("the result is not a finite number")
    if isinstance(value, float) and math.isfinite(value):
        value = float(f"{value:.12g}")  # 0.1 + 0.2 → 0.3: binary noise only confuses a small model
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _bounded(value):
    """`value`, unless it is an integer too large to compute with cheaply."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalcError("result too large")
    return value


def _eval(node: ast.AST):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalcError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))   # same size as its operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = FUNCTIONS.get(node.func.id)
        if fn is None:
            raise CalcError(f"unknown function {node.func.id!r}; functions: {', '.join(FUNCTIONS)}")
        args = [_eval(a) for a in node.args]
        if fn is math.factorial and (len(args) != 1 or not isinstance(args[0], int) or args[0] > MAX_FACTORIAL):
            raise CalcError(f"factorial takes one integer up to {MAX_FACTORIAL}")
        if fn is round and len(args) == 2 and isinstance(args[1], int) and abs(args[1]) > MAX_ROUND_DIGITS:
            raise CalcError(f"round() takes at most {MAX_ROUND_DIGITS} digits")
        return _bounded(fn(*args))
    raise CalcError(f"{type(node).__name__} is not allowed in an arithmetic expression")


def _check_power(left, right) -> None:
    """Refuse a power whose result would be too large before computing it (int ** int is exact and slow)."""
    if abs(right) > MAX_EXPONENT:
        raise CalcError(f"exponent larger than {MAX_EXPONENT}")
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1 and \
            (right * math.log10(abs(left)) > MAX_EXPONENT or right * left.bit_length() > MAX_INT_BITS):
        raise CalcError("result too large")
