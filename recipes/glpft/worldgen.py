"""Training episodes over the synthetic tool world (toolworld.py): each offers its own 3-12 tools, drawn around
the ones it needs with distractors that share words, and is executed through `generate.Episode` like the demo
episodes (same rendering, real observations, numbered plans).

Kinds: one lookup (sometimes with an enum option), a computed quote (a quantity from the query), a lookup then
the calculator, two lookups then add / subtract / compare, a name resolved to an id whose lookup follows (the
second call's arguments come from the first observation; sometimes then the calculator), and give-ups: no
offered tool fits (other families only, or the right family without the asked field), a request no tool
serves, or an id the lookup does not know (its error object). Values in the docs' examples never name a real
entity, so a call that copies the example fails.
"""
from __future__ import annotations

import random
from typing import Callable

import toolworld as W
from umi_edge.tools import ToolSet
from umi_edge.tools.demo import TOOLS as DEMO_TOOLS

CALC = "calculator"
# (kind, weight): the share of world episodes
KINDS = (("single", 0.27), ("quote", 0.07), ("find_only", 0.03), ("missing", 0.05), ("no_fit", 0.10),
         ("impossible", 0.03), ("arith", 0.14), ("pair", 0.15), ("find", 0.11), ("find_arith", 0.05))
CHAIN_KINDS = {"arith", "pair", "find", "find_arith"}
GIVE_UP_KINDS = {"missing", "no_fit", "impossible"}
N_TOOLS = {3: 1, 4: 2, 5: 3, 6: 3, 7: 3, 8: 2, 9: 2, 10: 1, 11: 1, 12: 1}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten",
                12: "twelve"}
IMPOSSIBLE = ("Play some relaxing music.", "Send a text to my landlord saying the rent is paid.",
              "Book me a table for two at 8 pm.", "Translate this sentence into Portuguese.",
              "Turn off the heating in the bedroom.", "What is the news headline today?",
              "Order a large pizza with olives.", "Set a timer for 25 minutes.", "Call a taxi to the station.",
              "Draw a picture of a lighthouse.", "Who won the chess championship last year?",
              "Write an email to the team about Friday.", "Start a video call with my manager.",
              "What song is playing right now?", "Renew my passport online.", "Post my photo to my feed.")


def kind_of(kind: str) -> str:
    """"one_call", "chain" or "give_up": the breakdown a kind belongs to."""
    return "chain" if kind in CHAIN_KINDS else "give_up" if kind in GIVE_UP_KINDS else "one_call"


def fmt(x) -> str:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:,}".rstrip("0").rstrip(".")


def num(value) -> str:
    import json

    return json.dumps(value)


def with_unit(value, f: W.F) -> str:
    v = value if isinstance(value, str) else num(value)
    if not f.unit:
        return v
    return v + f.unit if f.unit in ("%", "°C") else f"{v} {f.unit}"


class World:
    """Draws world episodes from a list of families with one rng."""

    def __init__(self, rng: random.Random, families=W.TRAIN_FAMILIES):
        self.rng = rng
        self.families = [W.FAMILIES[f] for f in families]
        self.functions = [fn for fam in self.families for fn in fam.functions]

    # --- helpers ----------------------------------------------------------------------------------------------
    def pick(self, xs):
        return self.rng.choice(xs)

    def typo(self, text: str, keep: list[str]) -> str:
        """Sometimes swap two letters inside a word (never in ids, names or numbers), or write it all lower case."""
        r = self.rng.random()
        if r < 0.1:
            words = text.split(" ")
            ok = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and w.islower()
                  and not any(w in k for k in keep)]
            if ok:
                i = self.pick(ok)
                w = words[i]
                j = self.rng.randrange(1, len(w) - 2)
                words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
                return " ".join(words)
        elif r < 0.15:
            return text[:1].lower() + text[1:].rstrip("?.") if not any(k[:1] == text[:1] for k in keep) else text
        return text

    def count(self, k: int) -> str:
        return NUMBER_WORDS[k] if k in NUMBER_WORDS and self.rng.random() < 0.3 else fmt(k)

    def entity(self, fam: W.Family) -> dict:
        return self.pick(fam.entities)

    def ref(self, fam: W.Family, e: dict) -> str:
        """How the query names an entity: its id (now and then in lower case), or its name if keyed by name."""
        return e["id"].lower() if fam.spec.id_pattern and self.rng.random() < 0.1 else e["id"]

    def numeric(self, fn: W.Function) -> list[W.F]:
        return [f for f in fn.fields if not f.choices]

    def offer(self, need: list, fam: W.Family | None, calc: bool, *, exclude=()) -> ToolSet:
        """The needed tools (Tool objects) plus distractors: other functions of the family and of other families
        (preferring ones that share a word with the needed ones), sometimes demo tools; 3-12 in all, shuffled."""
        rng = self.rng
        n = max(len(need), rng.choices(list(N_TOOLS), list(N_TOOLS.values()))[0])
        n -= calc and CALC not in [t.name for t in need] and n == max(N_TOOLS)   # room for the calculator
        chosen = list(need)
        used_fns = {id(W.function_of(t.name)) for t in need if W.function_of(t.name)} | {id(f) for f in exclude}
        words = {w for t in need for w in _words(t)}
        pool = [fn for fn in (fam.functions if fam else []) if id(fn) not in used_fns]
        rng.shuffle(pool)
        same = pool[:rng.randrange(0, len(pool) + 1)]
        others = [fn for fn in self.functions if id(fn) not in used_fns and fn not in same
                  and (fam is None or fn.family != fam.spec.family)]
        weights = [3 if words & _words(fn.variants[0]) else 1 for fn in others]
        extra: list = []
        while len(chosen) + len(same) + len(extra) < n and others:
            i = rng.choices(range(len(others)), weights)[0]
            extra.append(others.pop(i))
            weights.pop(i)
        for fn in same + extra:
            if len(chosen) >= n:
                break
            chosen.append(self.pick(fn.variants))
        names = {t.name for t in chosen}
        if calc and CALC not in names:
            chosen.append(DEMO_TOOLS[CALC])
        elif not calc and CALC not in names and rng.random() < 0.35 and len(chosen) < 12:
            chosen.append(DEMO_TOOLS[CALC])
        if rng.random() < 0.15 and len(chosen) < 12:
            extra_demo = self.pick([t for t in DEMO_TOOLS if t.name != CALC])
            chosen.append(extra_demo)
        rng.shuffle(chosen)
        return ToolSet(chosen)

    # --- episodes ---------------------------------------------------------------------------------------------
    def episode(self) -> tuple[str, Callable, ToolSet, str]:
        """(query, script, offered tools, kind)."""
        while True:   # a kind that cannot be made here (no such family, equal values) draws again
            kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
            got = getattr(self, "_" + kind)()
            if got is not None:
                return (*got, kind)

    def _lookup_fn(self, need_numeric: bool = False):
        fam = self.pick(self.families)
        fns = [fn for fn in fam.functions if fn.kind == "lookup" and (not need_numeric or self.numeric(fn))]
        if not fns:
            return None
        fn = self.pick(fns)
        f = self.pick(self.numeric(fn) if need_numeric else list(fn.fields))
        return fam, fn, f

    def _ask(self, f: W.F, ref: str, phrase: str = "") -> str:
        what = self.pick(f.words)
        sp = f" {phrase}" if phrase else ""
        return self.pick([f"What is the {what} of {ref}{sp}?", f"Tell me the {what} for {ref}{sp}.",
                          f"Look up the {what} of {ref}{sp}.", f"Can you check the {what} of {ref}{sp}?",
                          f"I need the {what} of {ref}{sp}, please.", f"{ref}{sp}: what is its {what}?",
                          f"What's the {what} for {ref}{sp}?", f"Please find the {what} of {ref}{sp}.",
                          f"how about the {what} of {ref}{sp}?"])

    def _option(self, fam: W.Family, fn: W.Function, tool) -> tuple[str, dict, str]:
        """(query phrase, call arguments, plan words) for the enum option: a non-default value is said in the
        query and passed; otherwise the call leaves it to its default."""
        o = fam.spec.option
        if not fn.option or self.rng.random() < 0.5:
            return "", {}, ""
        value = self.pick(o.values[1:])
        arg = next(a for a in tool.parameters["properties"] if a in o.args)
        return o.phrase.format(value), {arg: value}, f" with {arg} {value}"

    def _key_arg(self, tool) -> str:
        return tool.parameters["required"][0]

    def _single(self):
        fam, fn, f = self._lookup_fn()
        e = self.entity(fam)
        tool = self.pick(fn.variants)
        ref = self.ref(fam, e)
        phrase, opt_args, opt_words = self._option(fam, fn, tool)
        q = self.typo(self._ask(f, ref, phrase), [ref])
        tools = self.offer([tool], fam, False)
        what = f.words[0]

        def script(ep):
            ep.plan(f"look up the {what} of {ref} with {tool.name}")
            r = ep.call(self.pick([f"{tool.name} gives the {what}; I will call it for {ref}{opt_words}.",
                                   f"I will look up {ref} with {tool.name}{opt_words}."]),
                        tool.name, {self._key_arg(tool): ref, **opt_args})
            val = with_unit(r[f.key], f)
            sp = f" {phrase}" if phrase else ""
            ep.conclude(self.pick([f"The {what} of {ref}{sp} is {val}.", f"{ref}{sp} has a {what} of {val}."]))
        return q, script, tools

    def _quote(self):
        fams = [fam for fam in self.families if fam.spec.quote]
        if not fams:
            return None
        fam = self.pick(fams)
        fn = next(fn for fn in fam.functions if fn.kind == "quote")
        q_ = fn.quote
        e = self.entity(fam)
        ref = self.ref(fam, e)
        k = self.pick([2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 24, 30, 50, 75, 120, 250, 1200, 1500, 2500])
        tool = self.pick(fn.variants)
        qty_arg = next(a for a in tool.parameters["required"][1:])
        ks = self.count(k)
        q = self.typo(self.pick([f"What is the {q_.words} for {ks} {q_.qty_words} of {ref}?",
                                 f"Work out the {q_.words} of {ref} for {ks} {q_.qty_words}.",
                                 f"How much is the {q_.words} of {ks} {q_.qty_words} for {ref}?",
                                 f"{ref}, {ks} {q_.qty_words}: what is the {q_.words}?"]), [ref])
        tools = self.offer([tool], fam, False)

        def script(ep):
            ep.plan(f"get the {q_.words} of {k} {q_.qty_words} for {ref} with {tool.name}")
            r = ep.call(f"{tool.name} computes the {q_.words}; I will call it for {ref} and {k} {q_.qty_words}.",
                        tool.name, {self._key_arg(tool): ref, qty_arg: k})
            unit = f" {q_.unit}" if q_.unit else ""
            ep.conclude(f"The {q_.words} for {fmt(k)} {q_.qty_words} of {ref} is {num(r[q_.key])}{unit}.")
        return q, script, tools

    def _find_only(self):
        fams = [fam for fam in self.families if any(fn.kind == "find" for fn in fam.functions)]
        if not fams:
            return None
        fam = self.pick(fams)
        fn = next(fn for fn in fam.functions if fn.kind == "find")
        e = self.entity(fam)
        tool = self.pick(fn.variants)
        idw = fam.spec.id_word
        q = self.pick([f"What is the {idw} of {e['name']}?", f"Find the {idw} for {e['name']}.",
                       f"Which {idw} does {e['name']} have?"])
        tools = self.offer([tool], fam, False)

        def script(ep):
            ep.plan(f"find the {idw} of {e['name']} with {tool.name}")
            r = ep.call(f"{tool.name} finds a {fam.spec.entity} by name; I will call it for {e['name']}.",
                        tool.name, {self._key_arg(tool): e["name"]})
            ep.conclude(f"The {idw} of {e['name']} is {r[fam.spec.id_args[0]]}.")
        return q, script, tools

    def _missing(self):
        fam, fn, f = self._lookup_fn()
        if not fam.spec.id_pattern:
            return None
        while True:
            ref = W.make_id(self.rng, fam.spec.id_pattern)
            if ref.upper() not in fam.by_id:
                break
        tool = self.pick(fn.variants)
        q = self.typo(self._ask(f, ref), [ref])
        tools = self.offer([tool], fam, False)
        what = f.words[0]

        def script(ep):
            ep.plan(f"look up the {what} of {ref} with {tool.name}")
            ep.call(f"I will look up {ref} with {tool.name}.", tool.name, {self._key_arg(tool): ref})
            ep.give_up(self.pick([f"{tool.name} knows no {fam.spec.entity} {ref}, and no other tool has it, so I "
                                  "cannot answer.",
                                  f"There is no {fam.spec.entity} with {fam.spec.id_word} {ref}; I have to give up."]))
        return q, script, tools

    def _no_fit(self):
        fam, fn, f = self._lookup_fn()
        e = self.entity(fam)
        ref = self.ref(fam, e)
        q = self.typo(self._ask(f, ref), [ref])
        what = f.words[0]
        # the family's other functions may be offered (words in common, but not this field): a harder give-up
        same = self.rng.random() < 0.5
        others = [x for x in fam.functions if x is not fn and x.kind == "lookup"]
        shown = [self.pick(x.variants) for x in others] if same and others else []
        finders = [x for x in fam.functions if x.kind in ("find", "quote")]
        tools = self.offer(shown, fam if shown else None, False, exclude=[fn, *finders])
        near = [t for t in shown if t.name in tools]

        def script(ep):
            if near:
                t = near[0]
                other = " and ".join(x.words[0] for x in W.function_of(t.name).fields)
                ep.give_up(f"{t.name} gives the {other} of a {fam.spec.entity}, not the {what}, and no other tool "
                           "has it, so I cannot answer.")
            else:
                ep.give_up(self.pick([f"None of the available tools gives the {what} of a {fam.spec.entity}, so I "
                                      "cannot answer.",
                                      f"No tool here looks up the {what} of a {fam.spec.entity}; I have to give up."]))
        return q, script, tools

    def _impossible(self):
        q = self.pick(IMPOSSIBLE)
        tools = self.offer([], None, False)
        need = q.rstrip(".?").lower()

        def script(ep):
            ep.give_up(self.pick([f"None of the available tools can do this ({need}), so I cannot help.",
                                  "This needs a tool that is not among the available apis; I have to give up."]))
        return q, script, tools

    def _arith(self):
        got = self._lookup_fn(need_numeric=True)
        if got is None:
            return None
        fam, fn, f = got
        e = self.entity(fam)
        ref = self.ref(fam, e)
        tool = self.pick(fn.variants)
        what = f.words[0]
        qwhat = self.pick(f.words)
        op = self.pick(["pct", "times", "plus", "minus", "div"])
        if op == "pct":
            k = self.pick([5, 10, 12, 15, 20, 25, 30, 40, 50, 75])
            q = self.pick([f"What is {k}% of the {qwhat} of {ref}?", f"Take {k} percent of the {qwhat} of {ref}.",
                           f"How much is {k}% of {ref}'s {qwhat}?"])
        else:
            k = self.pick([2, 3, 4, 5, 6, 8, 10, 12, 15, 25, 40, 100, 250, 1000, 1500])
            ks = self.count(k)
            q = self.pick({"times": [f"What is the {qwhat} of {ref} multiplied by {ks}?",
                                     f"What would {ks} times the {qwhat} of {ref} be?",
                                     f"Multiply the {qwhat} of {ref} by {ks}."],
                           "plus": [f"Add {ks} to the {qwhat} of {ref}.",
                                    f"What is the {qwhat} of {ref} plus {ks}?",
                                    f"If the {qwhat} of {ref} went up by {ks}, what would it be?"],
                           "minus": [f"What is the {qwhat} of {ref} minus {ks}?",
                                     f"Subtract {ks} from the {qwhat} of {ref}.",
                                     f"If the {qwhat} of {ref} dropped by {ks}, what would remain?"],
                           "div": [f"Divide the {qwhat} of {ref} by {ks}.",
                                   f"What is the {qwhat} of {ref} split {ks} ways?",
                                   f"What is the {qwhat} of {ref} divided by {ks}?"]}[op])
        q = self.typo(q, [ref])
        tools = self.offer([tool], fam, True)
        sym = {"pct": None, "times": "*", "plus": "+", "minus": "-", "div": "/"}[op]
        step2 = {"pct": f"take {k}% of it with the calculator", "times": f"multiply it by {k} with the calculator",
                 "plus": f"add {k} to it with the calculator", "minus": f"subtract {k} from it with the calculator",
                 "div": f"divide it by {k} with the calculator"}[op]

        def script(ep):
            ep.plan(f"look up the {what} of {ref} with {tool.name}", step2)
            r0 = ep.call(f"First I look up the {what} of {ref} with {tool.name}.", tool.name,
                         {self._key_arg(tool): ref})
            v = r0[f.key]
            expr = f"{k} / 100 * {num(v)}" if op == "pct" else f"{num(v)} {sym} {k}"
            r = ep.call(f"The {what} is {num(v)}; now I {step2.replace(' with the calculator', '')}: I will compute "
                        f"{expr} with the calculator.", CALC, {"expression": expr})
            res = with_unit(r["result"], f)
            base = with_unit(v, f)
            ep.conclude({"pct": f"{k}% of the {what} of {ref} ({base}) is {res}.",
                         "times": f"The {what} of {ref} is {base}; {fmt(k)} times that is {res}.",
                         "plus": f"The {what} of {ref} is {base}; adding {fmt(k)} gives {res}.",
                         "minus": f"The {what} of {ref} is {base}; minus {fmt(k)} that is {res}.",
                         "div": f"The {what} of {ref} is {base}; divided by {fmt(k)} that is {res}."}[op])
        return q, script, tools

    def _pair(self):
        got = self._lookup_fn(need_numeric=True)
        if got is None:
            return None
        fam, fn, f = got
        e1, e2 = self.rng.sample(fam.entities, 2)
        default = fam.spec.option.values[0] if fam.spec.option else ""
        v1, v2 = e1["values"][default][f.key], e2["values"][default][f.key]
        if v1 == v2:
            return None
        op = self.pick(["add", "diff", "compare"])
        if op == "diff" and v1 < v2:
            e1, e2, v1, v2 = e2, e1, v2, v1
        r1, r2 = self.ref(fam, e1), self.ref(fam, e2)
        tool = self.pick(fn.variants)
        what, qwhat = f.words[0], self.pick(f.words)
        q = self.pick({"add": [f"What is the combined {qwhat} of {r1} and {r2}?",
                               f"Add up the {qwhat} of {r1} and {r2}.",
                               f"What is the total {qwhat} of {r1} and {r2} together?"],
                       "diff": [f"How much higher is the {qwhat} of {r1} than that of {r2}?",
                                f"By how much does the {qwhat} of {r1} exceed that of {r2}?",
                                f"What is the difference in {qwhat} between {r1} and {r2}?"],
                       "compare": [f"Which has the higher {qwhat}, {r1} or {r2}?",
                                   f"Compare the {qwhat} of {r1} and {r2}: which is higher?",
                                   f"Is the {qwhat} of {r1} higher than that of {r2}?"]}[op])
        q = self.typo(q, [r1, r2])
        tools = self.offer([tool], fam, op != "compare")
        key = self._key_arg(tool)

        def script(ep):
            last = {"add": "add the two with the calculator", "diff": "subtract the second from the first with the "
                    "calculator", "compare": None}[op]
            ep.plan(f"look up the {what} of {r1} with {tool.name}", f"look up the {what} of {r2} with {tool.name}",
                    *([last] if last else []))
            a = ep.call(f"First I look up {r1} with {tool.name}.", tool.name, {key: r1})[f.key]
            b = ep.call(f"Next I look up {r2} with {tool.name}.", tool.name, {key: r2})[f.key]
            if op == "compare":
                hi, lo, vh, vl = (r1, r2, a, b) if a > b else (r2, r1, b, a)
                ep.conclude(f"{hi} has the higher {what}: {with_unit(vh, f)} against {with_unit(vl, f)} for {lo}.")
                return
            expr = f"{num(a)} + {num(b)}" if op == "add" else f"{num(a)} - {num(b)}"
            r = ep.call(f"Now I {last.replace(' with the calculator', '')}: I will compute {expr} with the "
                        "calculator.", CALC, {"expression": expr})
            res = with_unit(r["result"], f)
            ep.conclude(f"The combined {what} of {r1} and {r2} is {res}." if op == "add" else
                        f"The {what} of {r1} is {res} higher than that of {r2} ({with_unit(a, f)} against "
                        f"{with_unit(b, f)}).")
        return q, script, tools

    def _find(self, arith: bool = False):
        fams = [fam for fam in self.families if any(fn.kind == "find" for fn in fam.functions)]
        if not fams:
            return None
        fam = self.pick(fams)
        finder = self.pick(next(fn for fn in fam.functions if fn.kind == "find").variants)
        fns = [fn for fn in fam.functions if fn.kind == "lookup" and (not arith or self.numeric(fn))]
        if not fns:
            return None
        fn = self.pick(fns)
        f = self.pick(self.numeric(fn) if arith else list(fn.fields))
        e = self.entity(fam)
        name, idw = e["name"], fam.spec.id_word
        tool = self.pick(fn.variants)
        what, qwhat = f.words[0], self.pick(f.words)
        k = self.pick([2, 3, 4, 5, 10, 20, 25, 50])
        if arith:
            q = self.pick([f"What is {k}% of the {qwhat} of {name}?", f"What is the {qwhat} of {name} times {k}?"])
            op = "pct" if "%" in q else "times"
        else:
            q, op = self._ask(f, name), None
        q = self.typo(q, [name])
        tools = self.offer([finder, tool], fam, arith)

        def script(ep):
            steps = [f"find the {idw} of {name} with {finder.name}", f"look up its {what} with {tool.name}"]
            if op:
                steps.append(f"{'take ' + str(k) + '% of it' if op == 'pct' else 'multiply it by ' + str(k)} with "
                             "the calculator")
            ep.plan(*steps)
            r0 = ep.call(f"First I find the {idw} of {name} with {finder.name}.", finder.name,
                         {self._key_arg(finder): name})
            ident = r0[fam.spec.id_args[0]]
            r1 = ep.call(f"The {idw} of {name} is {ident}; now I call {tool.name} for it.", tool.name,
                         {self._key_arg(tool): ident})
            v = r1[f.key]
            if not op:
                ep.conclude(f"The {what} of {name} ({ident}) is {with_unit(v, f)}.")
                return
            expr = f"{k} / 100 * {num(v)}" if op == "pct" else f"{num(v)} * {k}"
            r = ep.call(f"The {what} is {num(v)}; I will compute {expr} with the calculator.", CALC,
                        {"expression": expr})
            res = with_unit(r["result"], f)
            ep.conclude(f"{k}% of the {what} of {name} ({with_unit(v, f)}) is {res}." if op == "pct" else
                        f"The {what} of {name} is {with_unit(v, f)}; {k} times that is {res}.")
        return q, script, tools

    def _find_arith(self):
        return self._find(arith=True)


def _words(tool) -> set[str]:
    import re

    text = tool.name + " " + tool.description
    return {w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", text)) if len(w) > 3}
