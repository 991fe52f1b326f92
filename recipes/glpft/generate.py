"""Training data for the GLPFT recipe: executed α-UMi trajectories over the demo toolset, in the four
`train_{planner,caller,summarizer,backbone}.json` files of the public α-UMi training examples.

Every episode is a query (phrasing template × slot values) and a scripted plan; each call is rendered as
the caller would write it, parsed with the protocol's parser and run through `ToolSet.call`, exactly as
`umi_edge.loop` does, so every observation is the runtime's own text. Prompts come from
`umi_edge.protocol` (alpha-umi/toolbench-v1 and the backbone protocol). Countries, dates and queries of
the held-out task suite (`umi_edge/data/tasks/heldout.jsonl`) never appear.

    python recipes/glpft/generate.py --out recipes/glpft/out/data [--episodes 600] [--seed 0]
    python recipes/glpft/generate.py --tasks 80 --seed 7 --episodes 1400 --out recipes/glpft/out/valid.jsonl
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

from umi_edge.protocol import Turn, get_protocol
from umi_edge.protocol.backbone import Backbone, target as backbone_target
from umi_edge.tools.demo import TOOLS, countries

ROLES = ("planner", "caller", "summarizer", "backbone")
# The caller budget the trained set runs with. The caller grammar bounds JSON strings so any admitted call
# fits the budget: 192 tokens (the default set) allows 22-character expressions, 256 allows 33; a sum of
# three populations needs up to 32.
CALLER_MAX_TOKENS = 256
NEXT = {"caller": "\n Next: caller.", "conclusion": "\n Next: conclusion.", "give_up": "\n Next: give up."}


# --- the held-out split ------------------------------------------------------------------------------

def normalize_query(text: str) -> str:
    return " ".join(re.sub(r"[^\w%.-]+", " ", text.lower()).split()).strip(" .")


def heldout() -> dict:
    """What training must not contain: the held-out queries, and the countries and dates they name."""
    text = resources.files("umi_edge").joinpath("data/tasks/heldout.jsonl").read_text(encoding="utf-8")
    queries = [json.loads(line)["query"] for line in text.splitlines() if line.strip()]
    names = set()
    for c in countries():
        for n in (c["name"], *c["aliases"]):
            if any(re.search(rf"\b{re.escape(n)}\b", q, re.IGNORECASE) for q in queries):
                names.add(c["name"])
    dates = {d for q in queries for d in re.findall(r"\d{4}-\d{2}-\d{2}", q)}
    return {"queries": {normalize_query(q) for q in queries}, "countries": names, "dates": dates}


# --- one episode --------------------------------------------------------------------------------------

class Episode:
    """A trajectory under construction; each step renders its samples from the history so far."""

    def __init__(self, query: str, docs: list[dict], tools=TOOLS):
        self.query = query
        self.docs = docs
        self.tools = tools                  # the offered ToolSet (the demo toolset unless a world episode)
        self.kind = ""                      # the episode's family/kind, for per-kind breakdowns
        self.proto = get_protocol("alpha-umi/toolbench-v1")
        self.backbone = Backbone()
        self.history: list[Turn] = [Turn("user", query)]
        self.samples: dict[str, list[dict]] = {r: [] for r in ROLES}
        self.calls: list[dict] = []
        self.steps: list[str] = []
        self.step = 0

    def plan(self, *steps: str) -> None:
        """Number the episode's tool steps. The first thought lists them ("Plan: 1. ...; 2. ..."), each call's
        thought names its step ("Step 2 of 3: ...", "again" after a failed call) and the conclusion says the last
        one is done, so the planner reads from its own history how many calls remain instead of inferring it
        from the query."""
        self.steps, self.step = list(steps), 0

    def _numbered(self, thought: str) -> str:
        if not self.steps:
            return thought
        retry = bool(self.calls) and not self.calls[-1]["ok"]  # a call after a tool error redoes its step
        self.step += not retry
        head = f"Step {self.step} of {len(self.steps)}{' again' if retry else ''}: {thought}"
        if self.calls:
            return head
        return "Plan: " + "; ".join(f"{i}. {x}" for i, x in enumerate(self.steps, 1)) + ". " + head

    def _record(self, role: str, history: list[Turn], prompt: str, target: str) -> None:
        self.samples[role].append({"tools": self.docs, "history": [{"from": t.role, "value": t.text} for t in history],
                                   "input": prompt, "target": target})

    def _plan(self, thought: str, kind: str, backbone: str) -> str:
        plan = thought + NEXT[kind]
        self._record("planner", self.history, self.proto.planner_prompt(self.docs, self.history), plan)
        self._record("backbone", self.history, self.backbone.prompt(self.docs, self.history), backbone)
        return plan

    def call(self, thought: str, tool: str, args: dict) -> dict | None:
        """Plan + call + real observation; the tool's JSON result, or None when it reported a fault."""
        thought = self._numbered(thought)
        # one-line JSON: the runtime's default caller grammar admits no newlines inside the arguments
        call_text = f"Action: {tool}\nAction Input: {json.dumps(args)}"
        plan = self._plan(thought, "caller", backbone_target(thought + NEXT["caller"], call=call_text))
        self._record("caller", [*self.history, Turn("assistant", plan)],
                     self.proto.caller_prompt(self.docs, self.history, plan), call_text)
        parsed = self.proto.parse_call(self.proto.postprocess(call_text), self.tools.names)
        result = self.tools.call(parsed.action, parsed.arguments)
        observation = self.proto.truncate_observation(result.text)
        self.calls.append({"tool": parsed.action, "arguments": parsed.arguments, "observation": observation,
                           "ok": result.ok})
        self.history.extend(self.proto.step_turns(plan, call_text, observation))
        return json.loads(result.text) if result.ok else None

    def conclude(self, answer: str) -> None:
        """The planner's last thought names the plan's last step done; the summarizer writes `answer`."""
        n = len(self.steps)
        thought = f"Step {n} of {n} is done, so I can give the final answer."
        plan = self._plan(thought, "conclusion", backbone_target(thought, answer=answer))
        self._record("summarizer", [*self.history, Turn("assistant", plan)],
                     self.proto.summarizer_prompt(self.history, plan), answer)
        self.history += [Turn("assistant", plan), Turn("conclusion", answer)]

    def give_up(self, thought: str) -> None:
        plan = self._plan(thought, "give_up", backbone_target(thought))
        self.history.append(Turn("assistant", plan))


# --- slot values ---------------------------------------------------------------------------------------

def fmt(x) -> str:
    """A number as the user would write it: thousands grouped, no trailing .0."""
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:,}".rstrip("0").rstrip(".")


def num(value) -> str:
    """A tool result as it appears in the observation, so answers are copied, never recomputed."""
    return json.dumps(value)


class Slots:
    def __init__(self, rng: random.Random, banned: dict):
        self.rng = rng
        self.banned = banned
        self.countries = [c for c in countries() if c["name"] not in banned["countries"]]

    def country(self, k: int = 1) -> list[dict]:
        return self.rng.sample(self.countries, k)

    def date(self, lo: int = 1950, hi: int = 2035) -> str:
        while True:
            d = dt.date(self.rng.randint(lo, hi), self.rng.randint(1, 12), self.rng.randint(1, 28)).isoformat()
            if d not in self.banned["dates"]:
                return d

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def money(self, lo: int, hi: int) -> float:
        return round(self.rng.uniform(lo, hi), self.rng.choice([0, 2]))

    def pick(self, options):
        return self.rng.choice(options)


# (value range, from unit as written in the query, from unit for the tool, to unit as written, to unit)
UNITS = [
    ((1, 500), "kilometers", "km", "miles", "mi"), ((1, 500), "miles", "mi", "kilometers", "km"),
    ((1, 200), "kilograms", "kg", "pounds", "lb"), ((1, 400), "pounds", "lb", "kilograms", "kg"),
    ((-40, 120), "degrees Fahrenheit", "F", "Celsius", "C"), ((-30, 60), "degrees Celsius", "C", "Fahrenheit", "F"),
    ((1, 50), "gallons", "gal", "liters", "l"), ((1, 80), "liters", "l", "gallons", "gal"),
    ((10, 250), "km/h", "km/h", "mph", "mph"), ((10, 150), "mph", "mph", "km/h", "km/h"),
    ((1, 9000), "meters", "m", "feet", "ft"), ((1, 30000), "feet", "ft", "meters", "m"),
    ((1, 100), "hectares", "ha", "acres", "acre"), ((1, 500), "acres", "acre", "hectares", "ha"),
    ((1, 50), "ounces", "oz", "grams", "g"), ((1, 30), "cups", "cup", "milliliters", "ml"),
    ((1, 12), "weeks", "week", "seconds", "s"), ((1, 72), "hours", "h", "minutes", "min"),
    ((1, 100), "inches", "in", "centimeters", "cm"), ((1, 50), "knots", "knot", "km/h", "km/h"),
    ((0, 100), "degrees Celsius", "C", "Kelvin", "K"), ((1, 20), "square miles", "mi2", "square kilometers", "km2"),
    # the rest of the tool's unit table, so every unit it knows is seen at least once
    ((1, 900), "millimeters", "mm", "inches", "in"), ((1, 500), "yards", "yd", "meters", "m"),
    ((1, 300), "nautical miles", "nmi", "kilometers", "km"), ((1, 900), "milligrams", "mg", "grams", "g"),
    ((1, 40), "tonnes", "t", "pounds", "lb"), ((1, 30), "stone", "st", "kilograms", "kg"),
    ((1, 20), "cubic meters", "m3", "liters", "l"), ((1, 12), "teaspoons", "tsp", "milliliters", "ml"),
    ((1, 12), "tablespoons", "tbsp", "teaspoons", "tsp"), ((1, 64), "fluid ounces", "fl_oz", "cups", "cup"),
    ((1, 20), "pints", "pt", "liters", "l"), ((1, 20), "quarts", "qt", "gallons", "gal"),
    ((1, 100), "meters per second", "m/s", "km/h", "km/h"), ((1, 300), "feet per second", "ft/s", "mph", "mph"),
    ((1, 5000), "square meters", "m2", "square feet", "ft2"), ((1, 9000), "square feet", "ft2", "acres", "acre"),
    ((1, 60), "days", "day", "hours", "h"), ((1, 400), "Kelvin", "K", "degrees Celsius", "C"),
]
# misspelled or spelled-out units the tool rejects, and the unit the planner then uses instead
# (at most 11 characters: the caller grammar's bound for unit strings at CALLER_MAX_TOKENS)
BAD_UNITS = {"km": "kms", "mi": "mile(s)", "kg": "kilogramme", "lb": "lbm", "F": "farenheit",
             "C": "celcius", "gal": "US gallon", "l": "litre(s)", "mph": "miles/hr", "km/h": "kilometer/h"}
IMPOSSIBLE = [
    ("What is the weather in {city} right now?", "the current weather"),
    ("Will it rain in {city} tomorrow?", "a weather forecast"),
    ("What is the current stock price of {company}?", "live stock prices"),
    ("How did {company} shares do on the market today?", "stock market data"),
    ("Send a text message to {person} saying I will be late.", "sending messages"),
    ("Email {person} the meeting notes.", "sending email"),
    ("Book a flight from {city} to {city2} for next Friday.", "booking flights"),
    ("Reserve a hotel room in {city} for two nights.", "hotel reservations"),
    ("Call a taxi to take me to the airport.", "ordering a taxi"),
    ("Play some jazz music.", "playing music"),
    ("Set an alarm for 6:30 tomorrow morning.", "setting alarms"),
    ("Remind me to call {person} at 5 pm.", "reminders"),
    ("What is the exchange rate between the euro and the dollar today?", "live exchange rates"),
    ("Translate 'good morning' into {language}.", "translation"),
    ("Who won the football match last night?", "sports results"),
    ("Search the web for the best laptop under $1,000.", "web search"),
    ("What time does the {city} museum open today?", "opening hours"),
    ("Add a meeting with {person} to my calendar on Monday.", "calendar access"),
    ("Pay my electricity bill.", "payments"),
    ("Transfer $200 to {person}'s bank account.", "bank transfers"),
    ("How is the traffic on the way to {city} right now?", "live traffic"),
    ("Show me a photo of the Eiffel Tower.", "images"),
    ("Write a poem about the sea and post it on my blog.", "publishing to a blog"),
    ("What is my current location?", "location data"),
    ("Buy two tickets for the concert on Saturday.", "ticket sales"),
    ("Check my bank balance.", "bank accounts"),
    ("Open the garage door.", "device control"),
    ("Record a voice memo for me.", "audio recording"),
    ("What movies are playing in {city} tonight?", "cinema listings"),
    ("Track my package from the post office.", "package tracking"),
    ("How many steps did I walk today?", "fitness data"),
    ("Find me a dentist near {city} with good reviews.", "business reviews"),
    ("Download the latest version of my favorite app.", "software downloads"),
    ("When is the next train from {city} to {city2}?", "train timetables"),
    ("What is the official language of {country}?", "official languages"),
    ("Who is the head of state of {country}?", "heads of state"),
    ("What is the highest mountain in {country}?", "mountain heights"),
    ("How many calories are in a banana?", "nutrition facts"),
    ("What is the air quality in {city} today?", "air quality data"),
    ("Find me a recipe for vegetable lasagna.", "recipes"),
    ("Schedule a video call with {person} tomorrow.", "scheduling calls"),
    ("Post this photo on my Instagram.", "social media"),
    ("Rent a car in {city} for the weekend.", "car rentals"),
    ("How long is the flight from {city} to {city2}?", "flight data"),
    ("What time is it in {city} right now?", "the current time"),
    ("Read me my unread emails.", "email access"),
]
COMPANIES = ["Apple", "Microsoft", "Tesla", "Amazon", "Nvidia", "Toyota", "Samsung", "Nestle"]
PEOPLE = ["Anna", "my boss", "David", "Maria", "my sister", "Tom", "the landlord"]
LANGUAGES = ["French", "Japanese", "Spanish", "German", "Swahili"]


# --- episode families ------------------------------------------------------------------------------------
# Each takes (Slots) and returns (query, script); the script drives an Episode.

def calc_family(s: Slots):
    kind = s.pick(["pct", "mul", "div", "add", "sub", "pow", "sqrt", "tip", "discount", "split", "hyp", "mixed"])
    if kind == "pct":
        p, x = s.pick([5, 7.5, 12, 15, 20, 25, 33, 40, 65, 85]), s.int(100, 90000)
        q = s.pick(["What is {p}% of {x}?", "Calculate {p} percent of {x}.", "How much is {p}% of {x}?",
                    "Find {p}% of {x}.", "What's {p} percent of {x}?", "Work out {p}% of {x}.",
                    "Take {p}% of {x}: what do you get?", "{p}% of {x} is how much?"]).format(p=fmt(p), x=fmt(x))
        expr, say = f"{p} / 100 * {x}", f"{fmt(p)}% of {fmt(x)} is {{r}}."
    elif kind in ("mul", "div", "add", "sub"):
        a, b = s.int(12, 99999), s.int(2, 9999)
        op, word = {"mul": ("*", s.pick(["Multiply {a} by {b}.", "What is {a} times {b}?", "Compute {a} * {b}.",
                                         "What is the product of {a} and {b}?", "How much is {a} multiplied by {b}?",
                                         "Work out {a} x {b}."])),
                    "div": ("/", s.pick(["Divide {a} by {b}.", "What is {a} divided by {b}?", "Compute {a} / {b}.",
                                         "How much is {a} split into {b} equal parts?",
                                         "What do you get when you divide {a} by {b}?", "What is {a} over {b}?"])),
                    "add": ("+", s.pick(["Add {a} and {b}.", "What is {a} plus {b}?",
                                         "What is the sum of {a} and {b}?", "What do {a} and {b} add up to?",
                                         "Add {b} to {a}."])),
                    "sub": ("-", s.pick(["Subtract {b} from {a}.", "What is {a} minus {b}?",
                                         "What is {a} - {b}?", "Take {b} away from {a}.",
                                         "How much is left if you take {b} from {a}?"]))}[kind]
        q = word.format(a=fmt(a), b=fmt(b))
        expr, say = f"{a} {op} {b}", "The answer is {r}."
    elif kind == "pow":
        a, n = s.int(2, 40), s.pick([2, 3, 4, 5, 10])
        q = s.pick({2: ["What is the square of {a}?", "What is {a} squared?", "Square {a}."],
                    3: ["What is {a} cubed?", "What is the cube of {a}?", "Cube {a}: what do you get?",
                        "What is {a} raised to the third power?"]}.get(
            n, ["What is {a} to the power of {n}?", "Raise {a} to the power {n}.", "What is {a} to the {n}th power?"]))
        q = q.format(a=a, n=n)
        expr, say = f"{a} ** {n}", f"{a} to the power of {n} is {{r}}."
    elif kind == "sqrt":
        a = s.int(2, 300) ** 2 if s.rng.random() < 0.6 else s.int(2, 99999)
        q = s.pick(["What is the square root of {a}?", "Compute the square root of {a}.", "Find the square root of {a}.",
                    "What number squared gives {a}?"]).format(a=fmt(a))
        expr, say = f"sqrt({a})", f"The square root of {fmt(a)} is {{r}}."
    elif kind == "tip":
        bill, p = s.money(10, 400), s.pick([10, 12, 15, 18, 20, 22, 25])
        q = s.pick(["A bill of ${b} gets a {p}% tip. How much is the tip?", "How much is a {p}% tip on ${b}?",
                    "I want to leave {p}% on a ${b} dinner. How big is the tip?",
                    "Calculate a {p}% tip for a ${b} meal."]).format(b=fmt(bill), p=p)
        expr, say = f"{p} / 100 * {bill}", f"The tip is ${{r}}."
    elif kind == "discount":
        price, p = s.int(20, 2000), s.pick([10, 15, 20, 25, 30, 40, 50, 60])
        q = s.pick(["A ${x} coat is {p}% off. What does it cost now?",
                    "What is the sale price of a ${x} item at {p}% off?",
                    "A ${x} TV is discounted by {p}%. What is the new price?",
                    "How much do ${x} shoes cost after a {p}% discount?",
                    "What do I pay for a ${x} bike with {p}% off?"]).format(x=fmt(price), p=p)
        expr, say = f"{price} * (1 - {p} / 100)", "The sale price is ${r}."
    elif kind == "split":
        total, n = s.int(50, 5000), s.int(2, 12)
        q = s.pick(["Split ${t} evenly among {n} people: how much does each pay?",
                    "{n} friends share a ${t} bill equally. How much is each share?",
                    "If {n} people divide ${t} equally, how much does each get?"]).format(t=fmt(total), n=n)
        expr, say = f"{total} / {n}", "Each person pays ${r}."
    elif kind == "hyp":
        a, b = s.int(3, 60), s.int(3, 60)
        q = s.pick(["What is the hypotenuse of a right triangle with legs {a} and {b}?",
                    "A right triangle has legs of {a} and {b}. How long is the hypotenuse?",
                    "Find the hypotenuse when the two legs are {a} and {b}.",
                    "How long is the longest side of a right triangle whose legs are {a} and {b}?"]).format(a=a, b=b)
        expr, say = f"sqrt({a} ** 2 + {b} ** 2)", "The hypotenuse is {r}."
    else:
        a, b, c = s.int(10, 999), s.int(2, 99), s.int(2, 50)
        q = s.pick(["What is ({a} + {b}) * {c}?", "What is {a} - {b} * {c}?", "Compute {a} / {b} + {c}."])
        expr = q.split("is ", 1)[-1].replace("Compute ", "").rstrip("?.").format(a=a, b=b, c=c)
        q, say = q.format(a=a, b=b, c=c), "The result is {r}."
    bad = kind == "pct" and s.rng.random() < 0.3

    def script(e: Episode):
        e.plan(f"compute {expr} with the calculator")
        if bad:
            wrong = f"{fmt(p)} percent of {x}"
            e.call(f"I will use the calculator to compute {wrong}.", "calculator", {"expression": wrong})
            r = e.call("The calculator could not parse the words; I will write it as arithmetic: "
                       f"{expr}.", "calculator", {"expression": expr})
        else:
            r = e.call(s.pick([f"I need to compute {expr}, so I will call the calculator.",
                               f"This is arithmetic: I will ask the calculator for {expr}."]),
                       "calculator", {"expression": expr})
        e.conclude(say.format(r=num(r["result"])))
    return q, script


def convert_family(s: Slots):
    (lo, hi), qa, a, qb, b = s.pick(UNITS)
    v = s.int(lo, hi) if s.rng.random() < 0.7 else round(s.rng.uniform(max(lo, 0.5), hi), 1)
    q = s.pick(["Convert {v} {qa} to {qb}.", "How many {qb} is {v} {qa}?", "What is {v} {qa} in {qb}?",
                "I have {v} {qa}. How much is that in {qb}?", "Please convert {v} {qa} into {qb}.",
                "{v} {qa} equals how many {qb}?", "How much is {v} {qa} in {qb}?",
                "Express {v} {qa} in {qb}.", "What do {v} {qa} come to in {qb}?"]).format(v=fmt(v), qa=qa, qb=qb)
    bad = BAD_UNITS.get(a) if s.rng.random() < 0.25 else None

    def script(e: Episode):
        e.plan(f"convert {fmt(v)} {a} to {b} with convert_units")
        if bad:
            e.call(f"I will convert {fmt(v)} {qa} to {qb} with convert_units.", "convert_units",
                   {"value": v, "from_unit": bad, "to_unit": b})
            thought = (f"The unit {bad!r} is not known; the error lists {a!r}, so I will call convert_units "
                       "again with it.")
        else:
            thought = s.pick([f"I will convert {fmt(v)} {qa} to {qb} with convert_units.",
                              f"This is a unit conversion from {a} to {b}; I will call convert_units."])
        r = e.call(thought, "convert_units", {"value": v, "from_unit": a, "to_unit": b})
        e.conclude(f"{fmt(v)} {qa} is {num(r['result'])} {qb}.")
    return q, script


def date_family(s: Slots):
    kind = s.pick(["diff", "add", "sub", "weekday"])
    d1 = s.date()
    bad = s.rng.random() < 0.2
    written = dt.date.fromisoformat(d1).strftime("%m/%d/%Y")
    if kind == "diff":
        d2 = s.date()
        d1, d2 = sorted([d1, d2])
        q = s.pick(["How many days are there from {a} to {b}?", "How many days passed between {a} and {b}?",
                    "Count the days from {a} until {b}.", "How many days lie between {a} and {b}?",
                    "What is the number of days from {a} to {b}?",
                    "How long is it in days from {a} to {b}?"]).format(a=d1, b=d2)
        tool, args = "date_diff", {"start": d1, "end": d2}
        step = f"count the days from {d1} to {d2} with date_diff"
        say = lambda r: f"There are {r['days']} days from {d1} to {d2}."  # noqa: E731
        bad_args = {"start": dt.date.fromisoformat(d1).strftime("%m/%d/%Y"), "end": d2}
    elif kind in ("add", "sub"):
        n = s.int(1, 1500)
        days = n if kind == "add" else -n
        q = (s.pick(["What date is {n} days after {d}?", "What is the date {n} days after {d}?",
                     "Add {n} days to {d}.", "Which date comes {n} days after {d}?",
                     "Starting from {d}, what is the date {n} days later?",
                     "What will the date be {n} days after {d}?"]) if kind == "add" else
             s.pick(["What date was {n} days before {d}?", "What is {d} minus {n} days?",
                     "Which date was {n} days earlier than {d}?", "Go back {n} days from {d}: what date is it?",
                     "What was the date {n} days prior to {d}?"])).format(n=n, d=d1)
        tool, args = "date_add", {"date": d1, "days": days}
        step = (f"add {n} days to {d1} with date_add" if days > 0 else
                f"go back {n} days from {d1} with date_add, days = {days}")
        say = lambda r: f"{n} days {'after' if days > 0 else 'before'} {d1} is {r['result']} (a {r['weekday']})."
        bad_args = {"date": written, "days": days}
    else:
        q = s.pick(["What day of the week was {d}?", "On which weekday does {d} fall?",
                    "What weekday is {d}?", "Which day of the week is {d}?", "Tell me the weekday of {d}.",
                    "Was {d} a Monday, a Friday, or some other day?"]).format(d=d1)
        tool, args, say = "weekday", {"date": d1}, lambda r: f"{d1} is a {r['weekday']}."
        step = f"find the weekday of {d1} with weekday"
        bad_args = {"date": written}

    def script(e: Episode):
        e.plan(step)
        if bad:
            e.call(f"I will call {tool} for this date question.", tool, bad_args)
            thought = f"The tool wants dates written YYYY-MM-DD; I will call {tool} again with {d1}."
        else:
            thought = f"I will call {tool} to answer this date question."
        r = e.call(thought, tool, args)
        e.conclude(say(r))
    return q, script


FACTS = {
    "capital": (["What is the capital of {c}?", "Which city is the capital of {c}?", "Name the capital of {c}.",
                 "What's the capital city of {c}?"],
                lambda c, r: f"The capital of {c} is {r['capital']}."),
    "population": (["What is the population of {c}?", "How many people live in {c}?", "How populous is {c}?",
                    "What is {c}'s population?"],
                   lambda c, r: f"{c} has a population of {num(r['population'])}."),
    "currency_name": (["Which currency does {c} use?", "What is the currency of {c}?",
                       "What money do people pay with in {c}?"],
                      lambda c, r: f"{c} uses the {r['currency_name']} ({r['currency']})."),
    "area_km2": (["How large is {c} in square kilometers?", "What is the area of {c}?", "How big is {c}?",
                  "What is the land area of {c} in km²?"],
                 lambda c, r: f"The area of {c} is {num(r['area_km2'])} km²."),
    "continent": (["On which continent is {c}?", "Which continent is {c} in?",
                   "What continent does {c} belong to?", "{c} lies on which continent?"],
                  lambda c, r: f"{c} is in {r['continent']}."),
    "currency": (["What is the currency code of {c}?"], lambda c, r: f"The currency code of {c} is {r['currency']}."),
}
DEMONYMS = {"France": "French", "Germany": "German", "Japan": "Japanese", "Spain": "Spanish", "Italy": "Italian",
            "Brazil": "Brazilian", "India": "Indian", "Egypt": "Egyptian", "Kenya": "Kenyan", "Poland": "Polish"}


def country_family(s: Slots):
    fact = s.pick(list(FACTS))
    (c,) = s.country()
    phrasings, say = FACTS[fact]
    q = s.pick(phrasings).format(c=c["name"])
    bad = DEMONYMS.get(c["name"]) if s.rng.random() < 0.3 else None

    def script(e: Episode):
        e.plan(f"look up {c['name']} with country_info")
        if bad:
            e.call(f"I will look up {c['name']} with country_info.", "country_info", {"country": bad})
            thought = f"country_info needs the country's name, not {bad!r}; I will call it with {c['name']!r}."
        else:
            thought = s.pick([f"I need facts about {c['name']}, so I will call country_info.",
                              f"country_info has the {fact.replace('_', ' ')} of {c['name']}; I will call it."])
        r = e.call(thought, "country_info", {"country": c["name"]})
        e.conclude(say(c["name"], r))
    return q, script


def multi_family(s: Slots):
    kind = s.pick(["sum2", "sum3", "density", "ratio", "diff", "growth", "weekday_after", "conv_chain",
                   "conv_calc", "days_weekday", "pct_pop", "capital_density"])
    cs = s.country(3)
    a, b, c = (x["name"] for x in cs)

    def facts(e, names):
        out = []
        for n in names:
            out.append(e.call(s.pick([f"I need the facts of {n}, so I will call country_info.",
                                      f"Next I look up {n} with country_info."]), "country_info", {"country": n}))
        return out

    def calc(e, expr, why):
        return e.call(f"{why} I will compute {expr} with the calculator.", "calculator", {"expression": expr})

    if kind in ("sum2", "sum3"):
        names = [a, b] if kind == "sum2" else [a, b, c]
        q = s.pick(["What is the combined population of {l}?", "How many people live in {l} together?",
                    "Add up the populations of {l}.", "How many people live in {l} in all?",
                    "What do the populations of {l} sum to?"]).format(
            l=" and ".join([", ".join(names[:-1]), names[-1]]))

        def script(e):
            e.plan(*(f"look up {n} with country_info" for n in names), "add the populations with the calculator")
            rs = facts(e, names)
            r = calc(e, " + ".join(str(x["population"]) for x in rs), "Now I add the populations.")
            listed = " and ".join([", ".join(names[:-1]), names[-1]])
            e.conclude(f"The combined population of {listed} is {num(r['result'])}.")
    elif kind == "density":
        q = s.pick(["What is the population density of {a} in people per square kilometer?",
                    "How many people per km² live in {a}?", "How densely populated is {a}?",
                    "On average, how many people live on each square kilometer of {a}?"]).format(a=a)

        def script(e):
            e.plan(f"look up {a} with country_info", "divide its population by its area with the calculator")
            (r0,) = facts(e, [a])
            r = calc(e, f"{r0['population']} / {r0['area_km2']}", "Density is population divided by area.")
            e.conclude(f"The population density of {a} is about {num(r['result'])} people per km².")
    elif kind == "ratio":
        what = s.pick(["area", "population"])
        key = "area_km2" if what == "area" else "population"
        q = s.pick([f"How many times larger is {a}'s area than {b}'s?", f"By what factor is {a} bigger than {b}?",
                    f"What is the ratio of {a}'s area to {b}'s?"] if what == "area" else
                   [f"How many times more people live in {a} than in {b}?",
                    f"What is the ratio of {a}'s population to {b}'s?",
                    f"How many times bigger is the population of {a} than that of {b}?"])

        def script(e):
            e.plan(f"look up {a} with country_info", f"look up {b} with country_info",
                   f"divide {a}'s {what} by {b}'s with the calculator")
            r0, r1 = facts(e, [a, b])
            r = calc(e, f"{r0[key]} / {r1[key]}", f"I divide {a}'s {what} by {b}'s.")
            e.conclude(f"{a}'s {what} is {num(r['result'])} times {b}'s.")
    elif kind == "diff":
        q = s.pick([f"What is the difference in population between {a} and {b}?",
                    f"How many more people live in {a} than in {b}?",
                    f"By how many people does {a}'s population exceed {b}'s?"])

        def script(e):
            e.plan(f"look up {a} with country_info", f"look up {b} with country_info",
                   f"subtract {b}'s population from {a}'s with the calculator")
            r0, r1 = facts(e, [a, b])
            r = calc(e, f"{r0['population']} - {r1['population']}", "I subtract the two populations.")
            e.conclude(f"The difference in population between {a} and {b} is {num(r['result'])}.")
    elif kind == "growth":
        p = s.pick([1, 2, 3, 5, 10])
        up = s.rng.random() < 0.6
        f = f"{1 + p / 100:g}" if up else f"{1 - p / 100:g}"
        q = s.pick([f"If {a}'s population {'grew' if up else 'shrank'} by {p}%, what would it be?",
                    f"What would {a}'s population be after a {p}% {'rise' if up else 'fall'}?",
                    f"Suppose the population of {a} {'rises' if up else 'falls'} by {p}%. What is the new figure?"])

        def script(e):
            e.plan(f"look up {a} with country_info", f"multiply its population by {f} with the calculator")
            (r0,) = facts(e, [a])
            r = calc(e, f"{r0['population']} * {f}", f"A {p}% {'increase' if up else 'decrease'} multiplies by {f}.")
            e.conclude(f"{a}'s population would be {num(r['result'])}.")
    elif kind == "weekday_after":
        d, n = s.date(), s.int(1, 400)
        q = s.pick(["What day of the week is {n} days after {d}?", "Which weekday falls {n} days after {d}?",
                    "What weekday will it be {n} days after {d}?", "{n} days after {d}, which day of the week is it?",
                    "Which day of the week comes {n} days after {d}?"]).format(n=n, d=d)

        def script(e):
            e.plan(f"find the date {n} days after {d} with date_add", "find the weekday of that date with weekday")
            r0 = e.call(f"First I find the date {n} days after {d} with date_add.", "date_add", {"date": d, "days": n})
            r = e.call(f"The date is {r0['result']}; now I call weekday for it.", "weekday", {"date": r0["result"]})
            e.conclude(f"{n} days after {d} is {r['date']}, a {r['weekday']}.")
    elif kind == "conv_chain":
        v = s.int(1, 100)
        (x, qx), (y, qy), (z, qz) = s.pick([(("km", "kilometers"), ("mi", "miles"), ("ft", "feet")),
                                            (("mi", "miles"), ("km", "kilometers"), ("m", "meters")),
                                            (("kg", "kilograms"), ("lb", "pounds"), ("oz", "ounces")),
                                            (("gal", "gallons"), ("l", "liters"), ("ml", "milliliters"))])
        q = s.pick([f"Convert {v} {qx} to {qy} and then to {qz}.", f"Convert {v} {qx} to {qy}, then convert that to {qz}.",
                    f"First turn {v} {qx} into {qy}, and then express the result in {qz}.",
                    f"How many {qy} is {v} {qx}, and how many {qz} is that?"])

        def script(e):
            e.plan(f"convert {v} {x} to {y} with convert_units", f"convert that to {z} with convert_units")
            r0 = e.call(f"First I convert {v} {x} to {y}.", "convert_units", {"value": v, "from_unit": x, "to_unit": y})
            r = e.call(f"That is {num(r0['result'])} {y}; now I convert it to {z}.", "convert_units",
                       {"value": r0["result"], "from_unit": y, "to_unit": z})
            e.conclude(f"{v} {qx} is {num(r0['result'])} {qy}, which is {num(r['result'])} {qz}.")
    elif kind == "conv_calc":
        v, h = s.int(20, 90), s.int(2, 8)
        q = s.pick([f"A car drives at {v} mph. What is that in km/h, and how far in km does it go in {h} hours?",
                    f"A train runs at {v} mph. Convert that to km/h and tell me how many km it covers in {h} hours."])

        def script(e):
            e.plan(f"convert {v} mph to km/h with convert_units", f"multiply that by {h} hours with the calculator")
            r0 = e.call(f"First I convert {v} mph to km/h.", "convert_units",
                        {"value": v, "from_unit": "mph", "to_unit": "km/h"})
            r = calc(e, f"{r0['result']} * {h}", "Distance is speed times time.")
            e.conclude(f"{v} mph is {num(r0['result'])} km/h; in {h} hours the car goes {num(r['result'])} km.")
    elif kind == "days_weekday":
        d1, d2 = sorted([s.date(), s.date()])
        q = s.pick([f"How many days are there from {d1} to {d2}, and what weekday is {d2}?",
                    f"Count the days from {d1} to {d2}, and tell me which day of the week {d2} is."])

        def script(e):
            e.plan(f"count the days from {d1} to {d2} with date_diff", f"find the weekday of {d2} with weekday")
            r0 = e.call(f"First I count the days with date_diff.", "date_diff", {"start": d1, "end": d2})
            r = e.call(f"Now I find the weekday of {d2}.", "weekday", {"date": d2})
            e.conclude(f"There are {r0['days']} days from {d1} to {d2}, and {d2} is a {r['weekday']}.")
    elif kind == "pct_pop":
        p, x = s.pick([5, 10, 15, 20, 25]), s.int(100, 9000)
        q = s.pick([f"What is {p}% of {fmt(x)} plus the population of {a}?",
                    f"Add {p}% of {fmt(x)} to the population of {a}."])

        def script(e):
            e.plan(f"look up {a} with country_info", f"add {p}% of {x} to its population with the calculator")
            (r0,) = facts(e, [a])
            r = calc(e, f"{p} / 100 * {x} + {r0['population']}", f"I add {p}% of {x} to the population.")
            e.conclude(f"{p}% of {fmt(x)} plus the population of {a} is {num(r['result'])}.")
    else:
        q = f"What is the capital of {a} and how many people live in {a} per square kilometer?"

        def script(e):
            e.plan(f"look up {a} with country_info", "divide its population by its area with the calculator")
            (r0,) = facts(e, [a])
            r = calc(e, f"{r0['population']} / {r0['area_km2']}", "Density is population divided by area.")
            e.conclude(f"The capital of {a} is {r0['capital']}, and {a} has about {num(r['result'])} "
                             "people per km².")
    return q, script


MISSING = ["Iceland", "Atlantis", "Wakanda", "Luxembourg", "Narnia", "Monaco", "Nepal", "Cuba"]


def give_up_family(s: Slots):
    if s.rng.random() < 0.25:
        name = s.pick(MISSING)
        q = s.pick(["What is the capital of {n}?", "What is the population of {n}?"]).format(n=name)

        def script(e):
            e.plan(f"look up {name} with country_info")
            e.call(f"I will look up {name} with country_info.", "country_info", {"country": name})
            e.give_up(f"{name} is not in the country table, and no other tool has this fact, so I cannot answer.")
        return q, script
    template, need = s.pick(IMPOSSIBLE)
    c1, c2 = s.country(2)
    q = template.format(city=c1["capital"], city2=c2["capital"], country=c1["name"], company=s.pick(COMPANIES),
                        person=s.pick(PEOPLE), language=s.pick(LANGUAGES))

    def script(e):
        e.give_up(s.pick([f"None of the available tools provides {need}, so I cannot do this.",
                          f"This needs {need}, which no available api offers; I have to give up."]))
    return q, script


def list_family(s: Slots):
    cont = s.pick(["Africa", "Asia", "Europe", "North America", "South America", "Oceania"])
    q = s.pick(["Which countries in the table are in {c}?", "List the countries of {c} you know about."]).format(c=cont)

    def script(e):
        e.plan(f"list the countries of {cont} with list_countries")
        r = e.call(f"list_countries can filter by continent; I will call it with {cont}.", "list_countries",
                   {"continent": cont})
        e.conclude(f"The countries in {cont} are: {', '.join(r['countries'])}.")
    return q, script


# family -> weight (share of episodes)
FAMILIES: dict[str, tuple[Callable, float]] = {
    "calc": (calc_family, 0.15), "convert": (convert_family, 0.13), "date": (date_family, 0.13),
    "country": (country_family, 0.12), "multi": (multi_family, 0.30), "give_up": (give_up_family, 0.14),
    "list": (list_family, 0.03),
}


# --- the data set --------------------------------------------------------------------------------------------

def episodes(n: int, seed: int = 0, exclude: set[str] = frozenset(), *, demo_share: float = 1.0,
             world_families=None) -> Iterator[Episode]:
    """`n` distinct episodes, deterministic in `seed`, none with a held-out query, country or date, nor a
    query in `exclude` (normalized, `normalize_query`). A `1 - demo_share` share are tool-world episodes
    (worldgen.py) over `world_families` (default: the training families), each with its own offered tools;
    with `demo_share` 1 the stream is the demo-only one, unchanged."""
    rng = random.Random(seed)
    banned = heldout()
    slots = Slots(rng, banned)
    proto = get_protocol("alpha-umi/toolbench-v1")
    docs = TOOLS.docs(proto.doc_chars)
    names, weights = zip(*((k, w) for k, (_, w) in FAMILIES.items()))
    world = None
    if demo_share < 1.0:
        import toolworld
        import worldgen

        wrng = random.Random(f"world:{seed}")
        world = worldgen.World(wrng, world_families or toolworld.TRAIN_FAMILIES)
    seen: set[str] = set()
    tries = 0
    while len(seen) < n:
        tries += 1
        if tries > 50 * n:
            raise RuntimeError(f"only {len(seen)} distinct episodes after {tries} tries; ask for fewer")
        if world is not None and wrng.random() >= demo_share:
            query, script, tools, kind = world.episode()
            kind = "world/" + kind
        else:
            name = rng.choices(names, weights)[0]
            (family, _), tools, kind = FAMILIES[name], TOOLS, "demo/" + name
            query, script = family(slots)
        key = normalize_query(query)
        if key in seen or key in banned["queries"] or key in exclude or any(
                re.search(rf"\b{re.escape(c)}\b", query) for c in banned["countries"]):
            continue
        seen.add(key)
        e = Episode(query, docs if tools is TOOLS else tools.docs(proto.doc_chars), tools)
        e.kind = kind
        script(e)
        yield e


def build(n: int, seed: int = 0, demo_share: float = 1.0) -> dict[str, list[dict]]:
    """The four role files' records, shuffled deterministically (`demo_share`: see `episodes`)."""
    out: dict[str, list[dict]] = {r: [] for r in ROLES}
    for e in episodes(n, seed, demo_share=demo_share):
        for r in ROLES:
            out[r].extend(e.samples[r])
    rng = random.Random(seed + 1)
    for r in ROLES:
        rng.shuffle(out[r])
    return out


def write(data: dict[str, list[dict]], out_dir: Path) -> dict[str, int]:
    """train_<role>.json per role, each through a temp file and os.replace."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for role, records in data.items():
        path = out_dir / f"train_{role}.json"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=out_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(records, f, ensure_ascii=False, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return {r: len(v) for r, v in data.items()}


# --- a validation suite from the generator ---------------------------------------------------------------------

def _values(x) -> Iterator:
    if isinstance(x, dict):
        for v in x.values():
            yield from _values(v)
    elif isinstance(x, list):
        for v in x:
            yield from _values(v)
    else:
        yield x


def task_of(e: Episode, id: str) -> dict:
    """An `umi-edge eval tasks` task for a generated episode: give up where it gave up; else the tools it called
    successfully, in order, and the values of its last observation that its reference answer states."""
    task = {"id": id, "query": e.query, "tools": "demo" if e.tools is TOOLS else
            f"{Path(__file__).resolve().parent / 'toolworld.py'}:{','.join(e.tools.names)}"}
    if e.history[-1].role != "conclusion":
        return {**task, "expect": "give_up"}
    from umi_edge.eval.tasks import numbers_in

    answer = e.history[-1].text
    stated = numbers_in(answer)   # numbers as the checker reads them ("80" inside "373080" is not stated)
    numbers, words = [], []
    for v in _values(json.loads(e.calls[-1]["observation"])):
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, (int, float)) and any(abs(v - x) <= 1e-9 * max(1.0, abs(v)) for x in stated):
            numbers.append(v)
        elif isinstance(v, str) and v in answer:
            words.append(v)
    check: dict = {"calls": [{"tool": c["tool"]} for c in e.calls if c["ok"]]}
    if numbers:
        check.update(answer_number=numbers, rel_tol=0.005)
    if words:
        check["answer_contains"] = words
    return {**task, "expect": "answer", "check": check}


def validation_tasks(n: int, seed: int, train_episodes: int, train_seed: int = 0, world: bool = False) -> list[dict]:
    """`n` tasks from the generator's families, none with a training query (nor a held-out one): scores a
    training run without touching the held-out suite. Same templates as training, other slot values. With
    `world`, tool-world tasks over the validation families only (toolworld.VALID_FAMILIES), whose tools no
    training episode offers; each task names its offered tools (`toolworld.py:a,b,...`)."""
    train = {normalize_query(e.query) for e in episodes(train_episodes, train_seed)}
    if world:
        import toolworld

        chosen = episodes(n, seed, exclude=train, demo_share=0.0, world_families=toolworld.VALID_FAMILIES)
        return [task_of(e, f"w-{i + 1:03d}") for i, e in enumerate(chosen)]
    return [task_of(e, f"v-{i + 1:03d}") for i, e in enumerate(episodes(n, seed, exclude=train))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "data"))
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", type=int, metavar="N", default=0,
                    help="instead, write N validation tasks (JSONL for `umi-edge eval tasks`) to --out, drawn with "
                         "--seed and disjoint from the --episodes training queries of seed 0")
    ap.add_argument("--world", action="store_true",
                    help="with --tasks: tool-world tasks over the validation families (never in training)")
    ap.add_argument("--demo-share", type=float, default=1.0,
                    help="share of demo-tool episodes; the rest are tool-world episodes (config: [data].demo_share)")
    args = ap.parse_args(argv)
    if args.tasks:
        from umi_edge.eval.demo_tasks import write_jsonl

        tasks = validation_tasks(args.tasks, args.seed, args.episodes, world=args.world)
        write_jsonl(Path(args.out), tasks)
        print(json.dumps({"out": args.out, "tasks": len(tasks), "seed": args.seed}))
        return 0
    counts = write(build(args.episodes, args.seed, args.demo_share), Path(args.out))
    print(json.dumps({"out": args.out, "episodes": args.episodes, "seed": args.seed, "records": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
