"""Generator of the bundled task suites `umi_edge/data/tasks/{demo,heldout}.jsonl`.

Each task is a query plus the tool calls that solve it; the script *executes those calls on the real
demo toolset* (through `ToolSet.call`, as the loop does) and derives the expected answer from the
results, so the checks can never drift from the tools. Impossible requests (no tool can serve them)
expect a give-up. The held-out suite uses other numbers, countries, dates and phrasings, for evaluating
role adapters trained on traces of the demo suite.

    python -m umi_edge.eval.demo_tasks [--out-dir umi_edge/data/tasks]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

Results = list  # the JSON results of the recipe's calls, in order


def _pct(p, x):
    return f"{p} / 100 * {x}"


class Recipe:
    """A query, the calls that solve it (args may depend on earlier results), and the expected answer."""

    def __init__(self, id: str, query: str, calls: list[tuple[str, Any]], answer: Callable[[Results], Any],
                 kind: str = "number", check_calls: bool = False):
        self.id, self.query, self.calls, self.answer, self.kind = id, query, calls, answer, kind
        self.check_calls = check_calls

    def build(self, tools) -> dict:
        results: Results = []
        made = []
        for name, args in self.calls:
            args = args(results) if callable(args) else args
            r = tools.call(name, json.dumps(args))
            if not r.ok:
                raise RuntimeError(f"{self.id}: {name}({args}) failed: {r.text}")
            results.append(json.loads(r.text))
            made.append({"tool": name, "args": args})
        value = self.answer(results)
        if isinstance(value, dict):
            check = dict(value)
            if "answer_number" in check:
                check.update(tol=0.01, rel_tol=0.005)
        elif self.kind == "number":
            check = {"answer_number": value, "tol": 0.01, "rel_tol": 0.005}
        else:
            check = {"answer_contains": value}
        if self.check_calls:
            check["calls"] = [{"tool": c["tool"]} for c in made]
        names = sorted({name for name, _ in self.calls})
        return {"id": self.id, "query": self.query, "tools": "demo", "expect": "answer", "check": check,
                "n_calls": len(made), "tool_names": names}


def _res(i: int = 0, key: str = "result"):
    return lambda rs: rs[i][key]


def _calc(expr_fn):
    return ("calculator", lambda rs: {"expression": expr_fn(rs)})


def _country(name):
    return ("country_info", {"country": name})


def _conv(v, a, b):
    return ("convert_units", {"value": v, "from_unit": a, "to_unit": b})


def demo_recipes() -> list[Recipe]:
    R = Recipe
    return [
        # calculator, one call
        R("calc-01", "What is 15% of 2,480?", [("calculator", {"expression": _pct(15, 2480)})], _res()),
        R("calc-02", "Compute 1234 * 5678.", [("calculator", {"expression": "1234 * 5678"})], _res()),
        R("calc-03", "What is the square root of 7,056?", [("calculator", {"expression": "sqrt(7056)"})], _res()),
        R("calc-04", "What is (345 + 655) / 8?", [("calculator", {"expression": "(345 + 655) / 8"})], _res()),
        R("calc-05", "What is 2 to the power of 20?", [("calculator", {"expression": "2 ** 20"})], _res()),
        R("calc-06", "A bill of $86.40 gets an 18% tip. How much is the tip?",
          [("calculator", {"expression": _pct(18, 86.40)})], _res()),
        R("calc-07", "What is 987 minus 123 times 4?", [("calculator", {"expression": "987 - 123 * 4"})], _res()),
        R("calc-08", "Split $1,250 evenly among 8 people: how much does each pay?",
          [("calculator", {"expression": "1250 / 8"})], _res()),
        R("calc-09", "What is 12 factorial?", [("calculator", {"expression": "factorial(12)"})], _res()),
        R("calc-10", "What is the area of a circle with radius 3.5 (use pi)?",
          [("calculator", {"expression": "pi * 3.5 ** 2"})], _res()),
        # unit conversion, one call
        R("conv-01", "How many kilometers is a 26.2 mile marathon?", [_conv(26.2, "mi", "km")], _res()),
        R("conv-02", "Convert 100 degrees Fahrenheit to Celsius.", [_conv(100, "F", "C")], _res()),
        R("conv-03", "How many pounds are 72 kilograms?", [_conv(72, "kg", "lb")], _res()),
        R("conv-04", "Convert 5 gallons to liters.", [_conv(5, "gal", "l")], _res()),
        R("conv-05", "What is 120 km/h in miles per hour?", [_conv(120, "km/h", "mph")], _res()),
        R("conv-06", "How many feet tall is a 8,849 meter mountain?", [_conv(8849, "m", "ft")], _res()),
        R("conv-07", "Convert 2.5 hectares to acres.", [_conv(2.5, "ha", "acre")], _res()),
        R("conv-08", "How many ounces are in 1.5 kilograms?", [_conv(1.5, "kg", "oz")], _res()),
        R("conv-09", "What is -40 Celsius in Fahrenheit?", [_conv(-40, "C", "F")], _res()),
        R("conv-10", "How many seconds are in 3 weeks?", [_conv(3, "week", "s")], _res()),
        # dates, one call
        R("date-01", "How many days are there from 2024-01-15 to 2024-12-25?",
          [("date_diff", {"start": "2024-01-15", "end": "2024-12-25"})], _res(0, "days")),
        R("date-02", "What date is 90 days after 2024-03-01?",
          [("date_add", {"date": "2024-03-01", "days": 90})], _res(), kind="contains"),
        R("date-03", "What day of the week was 1969-07-20?", [("weekday", {"date": "1969-07-20"})],
          _res(0, "weekday"), kind="contains"),
        R("date-04", "How many days passed between 2000-01-01 and 2023-06-30?",
          [("date_diff", {"start": "2000-01-01", "end": "2023-06-30"})], _res(0, "days")),
        R("date-05", "What date was 45 days before 2025-02-10?",
          [("date_add", {"date": "2025-02-10", "days": -45})], _res(), kind="contains"),
        R("date-06", "On which weekday does 2030-01-01 fall?", [("weekday", {"date": "2030-01-01"})],
          _res(0, "weekday"), kind="contains"),
        R("date-07", "How many days from 2024-02-01 to 2024-03-01 (a leap year)?",
          [("date_diff", {"start": "2024-02-01", "end": "2024-03-01"})], _res(0, "days")),
        R("date-08", "What is the date 1000 days after 2022-05-17?",
          [("date_add", {"date": "2022-05-17", "days": 1000})], _res(), kind="contains"),
        # country facts, one call
        R("country-01", "What is the capital of Australia?", [_country("Australia")], _res(0, "capital"), kind="contains"),
        R("country-02", "What is the population of Japan?", [_country("Japan")], _res(0, "population")),
        R("country-03", "Which currency does Switzerland use?", [_country("Switzerland")],
          _res(0, "currency_name"), kind="contains"),
        R("country-04", "How large is Canada in square kilometers?", [_country("Canada")], _res(0, "area_km2")),
        R("country-05", "What is the capital of Kenya?", [_country("Kenya")], _res(0, "capital"), kind="contains"),
        R("country-06", "On which continent is Peru?", [_country("Peru")], _res(0, "continent"), kind="contains"),
        R("country-07", "How many people live in Nigeria?", [_country("Nigeria")], _res(0, "population")),
        R("country-08", "What is the currency code of Poland?", [_country("Poland")], _res(0, "currency"),
          kind="contains"),
        # two to four calls
        R("multi-01", "What is 15% of 2,480 plus the population of France?",
          [_country("France"), _calc(lambda rs: f"{_pct(15, 2480)} + {rs[0]['population']}")], _res(1),
          check_calls=True),
        R("multi-02", "What is the combined population of Germany and Italy?",
          [_country("Germany"), _country("Italy"),
           _calc(lambda rs: f"{rs[0]['population']} + {rs[1]['population']}")], _res(2), check_calls=True),
        R("multi-03", "What is the population density of Japan in people per square kilometer?",
          [_country("Japan"), _calc(lambda rs: f"{rs[0]['population']} / {rs[0]['area_km2']}")], _res(1),
          check_calls=True),
        R("multi-04", "How many times larger is Brazil's area than Spain's?",
          [_country("Brazil"), _country("Spain"),
           _calc(lambda rs: f"{rs[0]['area_km2']} / {rs[1]['area_km2']}")], _res(2), check_calls=True),
        R("multi-05", "What day of the week is 100 days after 2024-03-01?",
          [("date_add", {"date": "2024-03-01", "days": 100}), ("weekday", lambda rs: {"date": rs[0]["result"]})],
          _res(1, "weekday"), kind="contains"),
        R("multi-06", "A car drives at 65 mph. What is that in km/h, and how far in km does it go in 3 hours?",
          [_conv(65, "mph", "km/h"), _calc(lambda rs: f"{rs[0]['result']} * 3")], _res(1)),
        R("multi-07", "How many weeks are there between 2024-06-01 and 2025-01-01, rounded to two decimals?",
          [("date_diff", {"start": "2024-06-01", "end": "2025-01-01"}),
           _calc(lambda rs: f"round({rs[0]['days']} / 7, 2)")], _res(1)),
        R("multi-08", "What is the difference in population between India and China?",
          [_country("India"), _country("China"),
           _calc(lambda rs: f"{rs[0]['population']} - {rs[1]['population']}")], _res(2), check_calls=True),
        R("multi-09", "Convert 10 kilometers to miles and then to feet.",
          [_conv(10, "km", "mi"), ("convert_units", lambda rs: {"value": rs[0]["result"], "from_unit": "mi",
                                                                 "to_unit": "ft"})], _res(1)),
        R("multi-10", "What is the total area in square kilometers of Norway, Sweden and Finland?",
          [_country("Norway"), _country("Sweden"), _country("Finland"),
           _calc(lambda rs: " + ".join(str(r["area_km2"]) for r in rs))], _res(3), check_calls=True),
        R("multi-11", "If France's population grew by 2%, what would it be?",
          [_country("France"), _calc(lambda rs: f"{rs[0]['population']} * 1.02")], _res(1), check_calls=True),
        R("multi-12", "How many days are there from 2024-07-04 to 2024-12-31, and what weekday is 2024-12-31?",
          [("date_diff", {"start": "2024-07-04", "end": "2024-12-31"}), ("weekday", {"date": "2024-12-31"})],
          lambda rs: {"answer_number": rs[0]["days"], "answer_contains": rs[1]["weekday"]}),
        R("multi-13", "Convert 350 degrees Fahrenheit to Celsius and to Kelvin.",
          [_conv(350, "F", "C"), _conv(350, "F", "K")],
          lambda rs: {"answer_number": [rs[0]["result"], rs[1]["result"]]}),
        R("multi-14", "What is the capital of Egypt and how many people live in Egypt per square kilometer?",
          [_country("Egypt"), _calc(lambda rs: f"{rs[0]['population']} / {rs[0]['area_km2']}")],
          lambda rs: {"answer_contains": rs[0]["capital"], "answer_number": rs[1]["result"]}),
    ] + _impossible(["What is Apple's stock price right now?",
                     "Book me a table for two at an Italian restaurant tonight.",
                     "What is the weather in Tokyo at this moment?",
                     "Send an email to my manager saying I am late.",
                     "Play my favourite song on Spotify."], "impossible")


def heldout_recipes() -> list[Recipe]:
    R = Recipe
    return [
        R("h-calc-01", "What is 7.5% of 18,400?", [("calculator", {"expression": _pct(7.5, 18400)})], _res()),
        R("h-calc-02", "Multiply 4,321 by 87.", [("calculator", {"expression": "4321 * 87"})], _res()),
        R("h-calc-03", "What is the cube of 23?", [("calculator", {"expression": "23 ** 3"})], _res()),
        R("h-calc-04", "Divide 9,999 by 11.", [("calculator", {"expression": "9999 / 11"})], _res()),
        R("h-calc-05", "A $240 jacket is 35% off. What is the sale price?",
          [("calculator", {"expression": "240 * (1 - 35 / 100)"})], _res()),
        R("h-calc-06", "What is the hypotenuse of a right triangle with legs 9 and 40?",
          [("calculator", {"expression": "sqrt(9 ** 2 + 40 ** 2)"})], _res()),
        R("h-conv-01", "How many miles is 42 kilometers?", [_conv(42, "km", "mi")], _res()),
        R("h-conv-02", "Convert 37 degrees Celsius to Fahrenheit.", [_conv(37, "C", "F")], _res()),
        R("h-conv-03", "How many liters are 3 quarts?", [_conv(3, "qt", "l")], _res()),
        R("h-conv-04", "What is 30 knots in km/h?", [_conv(30, "knot", "km/h")], _res()),
        R("h-conv-05", "How many grams are 12 ounces?", [_conv(12, "oz", "g")], _res()),
        R("h-conv-06", "Convert 1,500 square feet to square meters.", [_conv(1500, "ft2", "m2")], _res()),
        R("h-date-01", "How many days from 2023-03-14 to 2023-10-31?",
          [("date_diff", {"start": "2023-03-14", "end": "2023-10-31"})], _res(0, "days")),
        R("h-date-02", "What date is 200 days after 2025-01-01?",
          [("date_add", {"date": "2025-01-01", "days": 200})], _res(), kind="contains"),
        R("h-date-03", "What weekday was 1989-11-09?", [("weekday", {"date": "1989-11-09"})],
          _res(0, "weekday"), kind="contains"),
        R("h-date-04", "What date was 365 days before 2024-08-15?",
          [("date_add", {"date": "2024-08-15", "days": -365})], _res(), kind="contains"),
        R("h-country-01", "What is the capital of Vietnam?", [_country("Vietnam")], _res(0, "capital"), kind="contains"),
        R("h-country-02", "What is the population of Mexico?", [_country("Mexico")], _res(0, "population")),
        R("h-country-03", "Which currency is used in Thailand?", [_country("Thailand")], _res(0, "currency_name"),
          kind="contains"),
        R("h-country-04", "What is the area of Argentina in km²?", [_country("Argentina")], _res(0, "area_km2")),
        R("h-country-05", "Which continent is Morocco on?", [_country("Morocco")], _res(0, "continent"), kind="contains"),
        R("h-multi-01", "What is the combined population of Chile and Colombia?",
          [_country("Chile"), _country("Colombia"),
           _calc(lambda rs: f"{rs[0]['population']} + {rs[1]['population']}")], _res(2), check_calls=True),
        R("h-multi-02", "What is the population density of the Netherlands per square kilometer?",
          [_country("Netherlands"), _calc(lambda rs: f"{rs[0]['population']} / {rs[0]['area_km2']}")], _res(1),
          check_calls=True),
        R("h-multi-03", "What weekday is 60 days after 2025-06-15?",
          [("date_add", {"date": "2025-06-15", "days": 60}), ("weekday", lambda rs: {"date": rs[0]["result"]})],
          _res(1, "weekday"), kind="contains"),
        R("h-multi-04", "Convert 5 miles to kilometers, then tell me how many meters that is.",
          [_conv(5, "mi", "km"), ("convert_units", lambda rs: {"value": rs[0]["result"], "from_unit": "km",
                                                                "to_unit": "m"})], _res(1)),
        R("h-multi-05", "How many times more people live in Indonesia than in Malaysia?",
          [_country("Indonesia"), _country("Malaysia"),
           _calc(lambda rs: f"{rs[0]['population']} / {rs[1]['population']}")], _res(2), check_calls=True),
        R("h-multi-06", "What is the total population of Denmark, Norway and Ireland?",
          [_country("Denmark"), _country("Norway"), _country("Ireland"),
           _calc(lambda rs: " + ".join(str(r["population"]) for r in rs))], _res(3), check_calls=True),
        R("h-multi-07", "If Canada's population shrank by 3%, how many people would live there?",
          [_country("Canada"), _calc(lambda rs: f"{rs[0]['population']} * 0.97")], _res(1), check_calls=True),
    ] + _impossible(["Order a pizza to my house.",
                     "What are today's top news headlines?",
                     "Turn on the lights in my living room."], "h-impossible")


def _impossible(queries: list[str], prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i + 1:02d}", "query": q, "tools": "demo", "expect": "give_up"}
            for i, q in enumerate(queries)]


def build(recipes: list, tools) -> list[dict]:
    tasks = []
    for r in recipes:
        if isinstance(r, dict):
            tasks.append(r)
            continue
        t = r.build(tools)
        # generator-only fields stay out of the task file
        t.pop("n_calls")
        t.pop("tool_names")
        tasks.append(t)
    return tasks


def write_jsonl(path: Path, tasks: list[dict]) -> None:
    """One task per line, written to a temp file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for t in tasks:
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    from ..tools.demo import TOOLS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "data" / "tasks"))
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    for name, recipes in (("demo", demo_recipes()), ("heldout", heldout_recipes())):
        tasks = build(recipes, TOOLS)
        write_jsonl(out / f"{name}.jsonl", tasks)
        print(f"{out / f'{name}.jsonl'}: {len(tasks)} tasks")


if __name__ == "__main__":
    main()
