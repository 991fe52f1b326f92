"""The offline demo toolset (`TOOLS`): calculator, unit conversion, date arithmetic and a countries table."""
from __future__ import annotations

import datetime as _dt
import json
import math
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .calc import evaluate
from .core import ToolSet, tool

# unit -> (dimension, factor to the dimension's base unit); temperature is affine and handled apart.
_UNITS: dict[str, tuple[str, float]] = {}
_ALIASES: dict[str, str] = {}


def _define(dimension: str, unit: str, factor: float, *aliases: str) -> None:
    _UNITS[unit] = (dimension, factor)
    for name in (unit, *aliases):
        _ALIASES[name.lower()] = unit


for _u, _f, *_a in [("mm", 0.001, "millimeter", "millimeters", "millimetre", "millimetres"),
                    ("cm", 0.01, "centimeter", "centimeters", "centimetre", "centimetres"),
                    ("m", 1.0, "meter", "meters", "metre", "metres"),
                    ("km", 1000.0, "kilometer", "kilometers", "kilometre", "kilometres"),
                    ("in", 0.0254, "inch", "inches", '"'), ("ft", 0.3048, "foot", "feet", "'"),
                    ("yd", 0.9144, "yard", "yards"), ("mi", 1609.344, "mile", "miles"),
                    ("nmi", 1852.0, "nautical mile", "nautical miles")]:
    _define("length", _u, _f, *_a)
for _u, _f, *_a in [("mg", 1e-6, "milligram", "milligrams"), ("g", 0.001, "gram", "grams"),
                    ("kg", 1.0, "kilogram", "kilograms", "kilo", "kilos"),
                    ("t", 1000.0, "tonne", "tonnes", "metric ton", "metric tons"),
                    ("oz", 0.028349523125, "ounce", "ounces"), ("lb", 0.45359237, "pound", "pounds", "lbs"),
                    ("st", 6.35029318, "stone", "stones")]:
    _define("mass", _u, _f, *_a)
for _u, _f, *_a in [("ml", 0.001, "milliliter", "milliliters", "millilitre", "millilitres"),
                    ("l", 1.0, "liter", "liters", "litre", "litres"),
                    ("m3", 1000.0, "cubic meter", "cubic meters", "m^3"),
                    ("tsp", 0.00492892159375, "teaspoon", "teaspoons"),
                    ("tbsp", 0.01478676478125, "tablespoon", "tablespoons"),
                    ("fl_oz", 0.0295735295625, "fl oz", "fluid ounce", "fluid ounces"),
                    ("cup", 0.2365882365, "cups"), ("pt", 0.473176473, "pint", "pints"),
                    ("qt", 0.946352946, "quart", "quarts"), ("gal", 3.785411784, "gallon", "gallons")]:
    _define("volume", _u, _f, *_a)
for _u, _f, *_a in [("m/s", 1.0, "mps", "meters per second", "metres per second"),
                    ("km/h", 1 / 3.6, "kph", "kmh", "kilometers per hour", "kilometres per hour"),
                    ("mph", 0.44704, "miles per hour"), ("knot", 0.514444444444, "knots", "kn", "kt"),
                    ("ft/s", 0.3048, "fps", "feet per second")]:
    _define("speed", _u, _f, *_a)
for _u, _f, *_a in [("m2", 1.0, "m^2", "square meter", "square meters", "sq m"),
                    ("km2", 1e6, "km^2", "square kilometer", "square kilometers", "sq km"),
                    ("ha", 1e4, "hectare", "hectares"), ("acre", 4046.8564224, "acres"),
                    ("ft2", 0.09290304, "ft^2", "square foot", "square feet", "sq ft"),
                    ("mi2", 2589988.110336, "mi^2", "square mile", "square miles", "sq mi")]:
    _define("area", _u, _f, *_a)
for _u, _f, *_a in [("s", 1.0, "sec", "second", "seconds"), ("min", 60.0, "minute", "minutes"),
                    ("h", 3600.0, "hr", "hour", "hours"), ("day", 86400.0, "days", "d"),
                    ("week", 604800.0, "weeks", "wk")]:
    _define("time", _u, _f, *_a)
for _u, *_a in [("C", "c", "°c", "celsius", "degC"), ("F", "f", "°f", "fahrenheit", "degF"), ("K", "k", "kelvin")]:
    _UNITS[_u] = ("temperature", 0.0)
    for _n in (_u, *_a):
        _ALIASES[_n.lower()] = _u


def _unit(name: str) -> str:
    unit = _ALIASES.get(name.strip().lower())
    if unit is None:
        raise ValueError(f"unknown unit {name!r}; known: {', '.join(_UNITS)}")
    return unit


def _to_kelvin(value: float, unit: str) -> float:
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def _from_kelvin(value: float, unit: str) -> float:
    return {"C": value - 273.15, "F": (value - 273.15) * 9 / 5 + 32, "K": value}[unit]


@tool(process_safe=True)
def calculator(expression: str) -> dict:
    """Evaluate an arithmetic expression exactly as written.

    Args:
        expression: Arithmetic such as "0.15 * 2480 + 3" with + - * / // % ** and parentheses; also sqrt, abs,
            round, min, max, log, exp and the constants pi and e.
    """
    return {"expression": expression, "result": evaluate(expression)}


@tool(process_safe=True)
def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    """Convert a quantity between units of length, mass, volume, speed, area, time or temperature.

    Args:
        value: The quantity to convert.
        from_unit: The unit of `value`, e.g. "km", "mi", "lb", "kg", "C", "F", "gal", "km/h".
        to_unit: The unit wanted, of the same kind as from_unit.
    """
    src, dst = _unit(from_unit), _unit(to_unit)
    (dim_a, fa), (dim_b, fb) = _UNITS[src], _UNITS[dst]
    if dim_a != dim_b:
        raise ValueError(f"cannot convert {dim_a} ({src}) to {dim_b} ({dst})")
    if dim_a == "temperature":
        result = _from_kelvin(_to_kelvin(value, src), dst)
    else:
        result = value * fa / fb
    if not math.isfinite(result):
        raise ValueError("the result is out of range")
    return {"value": value, "from_unit": src, "to_unit": dst, "result": float(f"{result:.10g}")}


def _date(text: str, field: str) -> _dt.date:
    try:
        return _dt.date.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"{field} must be a date written YYYY-MM-DD, not {text!r}") from None


@tool(process_safe=True)
def date_diff(start: str, end: str) -> dict:
    """Count the days from one date to another (negative if end is before start).

    Args:
        start: The first date, YYYY-MM-DD.
        end: The second date, YYYY-MM-DD.
    """
    a, b = _date(start, "start"), _date(end, "end")
    days = (b - a).days
    return {"start": a.isoformat(), "end": b.isoformat(), "days": days, "weeks": round(days / 7, 2)}


@tool(process_safe=True)
def date_add(date: str, days: int) -> dict:
    """Add a number of days (negative to subtract) to a date.

    Args:
        date: The starting date, YYYY-MM-DD.
        days: How many days to add.
    """
    d = _date(date, "date")
    try:
        result = d + _dt.timedelta(days=days)
    except OverflowError:
        raise ValueError("the resulting date is out of range") from None
    return {"date": d.isoformat(), "days": days, "result": result.isoformat(), "weekday": result.strftime("%A")}


@tool(process_safe=True)
def weekday(date: str) -> dict:
    """The day of the week of a date.

    Args:
        date: The date, YYYY-MM-DD.
    """
    d = _date(date, "date")
    return {"date": d.isoformat(), "weekday": d.strftime("%A")}


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).lower().replace(".", "").split())


@lru_cache(maxsize=1)
def countries() -> tuple[dict, ...]:
    """The bundled table (umi_edge/data/countries.json)."""
    with open(Path(__file__).parent.parent / "data" / "countries.json", encoding="utf-8") as f:
        return tuple(json.load(f)["countries"])


def _find_country(name: str) -> dict:
    key = _fold(name)
    if key.startswith("the "):
        key = key[4:]
    for c in countries():
        if key in (_fold(c["name"]), *(_fold(a) for a in c["aliases"])):
            return c
    for c in countries():  # a capital also identifies its country
        if key == _fold(c["capital"]):
            return c
    raise ValueError(f"no country named {name!r} in the table; try list_countries")


@tool(process_safe=True)
def country_info(country: str) -> dict:
    """Facts about a country: capital, population, area in km², currency and continent.

    Args:
        country: The country's English name, e.g. "France" or "United States".
    """
    c = _find_country(country)
    return {k: v for k, v in c.items() if k != "aliases"}


@tool(process_safe=True)
def list_countries(continent: Optional[str] = None) -> dict:
    """List the countries in the table, optionally only those of one continent.

    Args:
        continent: Africa, Asia, Europe, North America, South America or Oceania; omit for all.
    """
    rows = countries()
    if continent:
        rows = tuple(c for c in rows if _fold(c["continent"]) == _fold(continent))
        if not rows:
            known = sorted({c["continent"] for c in countries()})
            raise ValueError(f"unknown continent {continent!r}; known: {', '.join(known)}")
    return {"continent": continent, "countries": [c["name"] for c in rows]}


# the order the shipped adapters were trained on: a team lists these docs in it (ToolSet.keep_order)
TOOLS = ToolSet([calculator, convert_units, date_diff, date_add, weekday, country_info, list_countries],
                keep_order=True)
