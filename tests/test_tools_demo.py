"""The demo toolset: safe calculator, unit conversion, date arithmetic and the countries table."""
from __future__ import annotations

import json

import pytest

from umi_edge.tools.calc import CalcError, evaluate
from umi_edge.tools.demo import TOOLS, countries


def call(name, **args):
    r = TOOLS.call(name, json.dumps(args))
    return r, (json.loads(r.text) if r.ok else r.text)


@pytest.mark.parametrize("expr,value", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("2 ** 10", 1024), ("2^10", 1024), ("7 // 2", 3), ("7 % 4", 3),
    ("-3 + +1", -2), ("0.1 + 0.2", 0.3), ("1/4", 0.25), ("sqrt(16) + abs(-2)", 6), ("max(1, 234)", 234),
    ("round(2.567, 2)", 2.57), ("15% of 2,480", 372), ("15% * 2480", 372), ("2,480 + 1", 2481), ("3 x 4", 12),
    ("pi", 3.14159265359), ("factorial(5)", 120), ("12 ÷ 4 × 2", 6),
])
def test_calculator_values(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr,why", [
    ("__import__('os').system('true')", "not allowed"), ("__import__('os')", "unknown function"), ("open('x')", "unknown function"),
    ("(1).__class__", "Attribute"), ("[1, 2]", "List"), ("lambda: 1", "Lambda"), ("x + 1", "unknown name"),
    ("'a' * 3", "Constant"), ("True + 1", "Constant"), ("9 ** 9 ** 9", "exponent"), ("10 ** 999 * 10 ** 999", "too large"),
    ("1 / 0", "division by zero"), ("sqrt(-1)", "math domain"), ("factorial(1000)", "factorial"),
    ("", "empty"), ("1 +", "cannot parse"), ("1" * 600, "longer than"), ("abs(x=1)", "not allowed"),
])
def test_calculator_rejects_unsafe_or_invalid(expr, why):
    with pytest.raises(CalcError, match=why):
        evaluate(expr)


def test_calculator_tool_reports_errors_as_observations():
    r, out = call("calculator", expression="2 * (3 + 4)")
    assert out == {"expression": "2 * (3 + 4)", "result": 14}
    r, out = call("calculator", expression="__import__('os')")
    assert r.error == "raised" and "unknown function" in out


@pytest.mark.parametrize("value,src,dst,result", [
    (10, "km", "mi", 6.213711922), (1, "mile", "meters", 1609.344), (100, "C", "F", 212.0), (32, "°F", "celsius", 0.0),
    (0, "K", "C", -273.15), (2, "lb", "kg", 0.90718474), (1, "gal", "l", 3.785411784), (100, "km/h", "mph", 62.13711922),
    (1, "ha", "m2", 10000.0), (90, "minutes", "h", 1.5), (5, "Feet", "in", 60.0),
])
def test_convert_units(value, src, dst, result):
    assert call("convert_units", value=value, from_unit=src, to_unit=dst)[1]["result"] == pytest.approx(result)


def test_convert_units_errors():
    assert "cannot convert length" in call("convert_units", value=1, from_unit="km", to_unit="kg")[1]
    assert "unknown unit 'parsec'" in call("convert_units", value=1, from_unit="parsec", to_unit="km")[1]
    assert call("convert_units", value="ten", from_unit="km", to_unit="m")[0].error == "bad_arguments"


def test_dates():
    assert call("date_diff", start="2024-01-01", end="2024-12-25")[1]["days"] == 359
    assert call("date_diff", start="2024-03-01", end="2024-02-28")[1]["days"] == -2
    assert call("date_add", date="2024-02-28", days=2)[1] == {"date": "2024-02-28", "days": 2, "result": "2024-03-01",
                                                               "weekday": "Friday"}
    assert call("date_add", date="2024-01-10", days=-10)[1]["result"] == "2023-12-31"
    assert call("weekday", date="2000-01-01")[1]["weekday"] == "Saturday"
    assert "YYYY-MM-DD" in call("weekday", date="01/02/2000")[1]
    assert "out of range" in call("date_add", date="9999-12-31", days=1)[1]


def test_countries_table_and_lookups():
    table = countries()
    assert len(table) >= 50 and len({c["name"] for c in table}) == len(table)
    for c in table:
        assert set(c) == {"name", "capital", "population", "area_km2", "currency", "currency_name", "continent",
                          "aliases"}
        assert c["population"] > 0 and c["area_km2"] > 0 and len(c["currency"]) == 3
    france = call("country_info", country="France")[1]
    assert (france["capital"], france["currency"], france["continent"]) == ("Paris", "EUR", "Europe")
    assert call("country_info", country="the usa")[1]["name"] == "United States"
    assert call("country_info", country="Bogota")[1]["name"] == "Colombia"    # accents folded, capital accepted
    assert "no country named 'Atlantis'" in call("country_info", country="Atlantis")[1]
    assert call("list_countries", continent="oceania")[1]["countries"] == ["Australia", "New Zealand"]
    assert len(call("list_countries")[1]["countries"]) == len(table)
    assert "unknown continent" in call("list_countries", continent="Atlantis")[1]


def test_demo_docs_are_in_the_training_format():
    docs = TOOLS.docs()
    assert [d["Name"] for d in docs] == ["calculator", "convert_units", "date_diff", "date_add", "weekday",
                                         "country_info", "list_countries"]
    for d in docs:
        assert list(d) == ["Name", "function", "input"] and len(d["function"]) <= 256
        assert d["function"].startswith(f'This is the subfunction for tool "{d["Name"]}", you can use this tool.')
        assert all(", " in v for v in d["input"].values())  # every demo argument is documented
