"""Writes the `unseen` task suite (umi_edge/data/tasks/unseen.jsonl): 50 tasks over the ten tool families of
`umi_edge.tools.unseen`, none of whose tools, names or domains occur in training data. Expected numbers are
computed by running the reference calls on the suite's own tools, so the file and the tools cannot drift.

    python recipes/glpft/unseen_tasks.py [--out umi_edge/data/tasks/unseen.jsonl]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from umi_edge.tools import unseen as U

ROOT = Path(__file__).resolve().parents[2]
SPEC = "umi_edge.tools.unseen:{}"


def call(fn, **args) -> dict:
    return json.loads(U.TOOLS.call(fn.name, json.dumps(args)).text)


def answer(id, query, family, calls, numbers=(), words=(), kind="one_call"):
    """A task whose answer must state `numbers` (1 % tolerance) / `words`, after `calls` [(tool, args), ...]."""
    check: dict = {"calls": [{"tool": t.name, **({"args": a} if a else {})} for t, a in calls]}
    if numbers:
        check.update(answer_number=list(numbers), rel_tol=0.01)
    if words:
        check["answer_contains"] = list(words)
    return {"id": id, "query": query, "tools": SPEC.format(family.upper()), "expect": "answer", "check": check,
            "kind": kind}


def give_up(id, query, family):
    return {"id": id, "query": query, "tools": SPEC.format(family.upper()), "expect": "give_up", "kind": "give_up"}


def tasks() -> list[dict]:
    t = []
    # aquarium
    r = call(U.tank_reading, tank_id="TK-07")
    t.append(answer("u-aqua-01", "What is the water temperature in tank TK-07?", "aquarium",
                    [(U.tank_reading, {"tank_id": "TK-07"})], [r["water_temp_c"]]))
    r = call(U.tank_reading, tank_id="TK-03", probe="bottom")
    t.append(answer("u-aqua-02", "whats the pH at the bottom of tank TK-03", "aquarium",
                    [(U.tank_reading, {"tank_id": "TK-03", "probe": "bottom"})], [r["ph"]]))
    r = call(U.getFishCount, tank_id="TK-15")
    t.append(answer("u-aqua-03", "How many fish live in the TK-15 tank?", "aquarium",
                    [(U.getFishCount, {"tank_id": "TK-15"})], [r["fish_count"]]))
    a, b = call(U.getFishCount, tank_id="TK-12"), call(U.getFishCount, tank_id="TK-21")
    t.append(answer("u-aqua-04", "How many fish are there in tanks TK-12 and TK-21 combined?", "aquarium",
                    [(U.getFishCount, {"tank_id": "TK-12"}), (U.getFishCount, {"tank_id": "TK-21"})],
                    [a["fish_count"] + b["fish_count"]], kind="chain"))
    tid = call(U.find_tank, exhibit_name="Kelp Forest")["tank_id"]
    r = call(U.getFishCount, tank_id=tid)
    t.append(answer("u-aqua-05", "How many species are in the Kelp Forest exhibit?", "aquarium",
                    [(U.find_tank, {}), (U.getFishCount, {"tank_id": tid})], [r["species_count"]], kind="chain"))
    # observatory
    r = call(U.telescopeStatus, scope="SCOPE-3")
    t.append(answer("u-obs-01", "What is the aperture of telescope SCOPE-3 in millimeters?", "observatory",
                    [(U.telescopeStatus, {"scope": "SCOPE-3"})], [r["aperture_mm"]]))
    r = call(U.night_sky_forecast, site="valley", night="tomorrow")
    t.append(answer("u-obs-02", "How cloudy will it be at the valley site tomorrow night?", "observatory",
                    [(U.night_sky_forecast, {"site": "valley", "night": "tomorrow"})], [r["cloud_cover_pct"]]))
    r = call(U.night_sky_forecast)
    t.append(answer("u-obs-03", "What's the seeing forecast for tonight?", "observatory",
                    [(U.night_sky_forecast, {})], [r["seeing_arcsec"]]))
    a, b = call(U.telescopeStatus, scope="SCOPE-1"), call(U.telescopeStatus, scope="SCOPE-4")
    t.append(answer("u-obs-04", "How many requests are queued for SCOPE-1 and SCOPE-4 together?", "observatory",
                    [(U.telescopeStatus, {"scope": "SCOPE-1"}), (U.telescopeStatus, {"scope": "SCOPE-4"})],
                    [a["queued_requests"] + b["queued_requests"]], kind="chain"))
    t.append(give_up("u-obs-05", "How many requests are waiting for telescope SCOPE-8?", "observatory"))
    # winery
    r = call(U.barrel_info, barrel_no="BRL-204")
    t.append(answer("u-wine-01", "Which vintage is in barrel BRL-204?", "winery",
                    [(U.barrel_info, {"barrel_no": "BRL-204"})], [r["vintage"]]))
    r = call(U.cellarClimate, cellar="south")
    t.append(answer("u-wine-02", "What is the humidity in the south cellar?", "winery",
                    [(U.cellarClimate, {"cellar": "south"})], [r["humidity_pct"]]))
    no = call(U.barrel_for_wine, wine_name="Reserve Pinot")["barrel_no"]
    r = call(U.barrel_info, barrel_no=no)
    t.append(answer("u-wine-03", "How many liters of Reserve Pinot are in its barrel?", "winery",
                    [(U.barrel_for_wine, {}), (U.barrel_info, {"barrel_no": no})], [r["liters"]], kind="chain"))
    r = call(U.barrel_info, barrel_no="BRL-311")
    t.append(answer("u-wine-04", "How many 0.75 liter bottles can be filled from barrel BRL-311?", "winery",
                    [(U.barrel_info, {"barrel_no": "BRL-311"}), (U.calculator, {})], [r["liters"] / 0.75],
                    kind="chain"))
    t.append(give_up("u-wine-05", "What will the wine tasting tickets cost next Saturday?", "winery"))
    # ski resort
    r = call(U.lift_wait, lift="LIFT-B")
    t.append(answer("u-ski-01", "How long is the wait at LIFT-B right now?", "ski_resort",
                    [(U.lift_wait, {"lift": "LIFT-B"})], [r["wait_minutes"]]))
    r = call(U.slopeConditions, slope_name="Fox Bowl")
    t.append(answer("u-ski-02", "How deep is the snow on Fox Bowl?", "ski_resort",
                    [(U.slopeConditions, {"slope_name": "Fox Bowl"})], [r["snow_depth"]]))
    r = call(U.slopeConditions, slope_name="Eagle Run", unit="in")
    t.append(answer("u-ski-03", "What is the snow depth on Eagle Run in inches?", "ski_resort",
                    [(U.slopeConditions, {"slope_name": "Eagle Run", "unit": "in"})], [r["snow_depth"]]))
    a, b = call(U.lift_wait, lift="LIFT-A"), call(U.lift_wait, lift="LIFT-D")
    t.append(answer("u-ski-04", "How many minutes longer is the wait at LIFT-D than at LIFT-A?", "ski_resort",
                    [(U.lift_wait, {"lift": "LIFT-D"}), (U.lift_wait, {"lift": "LIFT-A"})],
                    [b["wait_minutes"] - a["wait_minutes"]], kind="chain"))
    t.append(give_up("u-ski-05", "Rent me a snowboard for tomorrow morning.", "ski_resort"))
    # apiary
    r = call(U.hive_weight, hive_id="HIVE-22")
    t.append(answer("u-bee-01", "How heavy is hive HIVE-22?", "apiary",
                    [(U.hive_weight, {"hive_id": "HIVE-22"})], [r["weight_kg"]]))
    r = call(U.honeyHarvest, hive_id="HIVE-31", season="spring")
    t.append(answer("u-bee-02", "How much honey did HIVE-31 give in spring?", "apiary",
                    [(U.honeyHarvest, {"hive_id": "HIVE-31", "season": "spring"})], [r["honey_kg"]]))
    r = call(U.honeyHarvest, hive_id="HIVE-40")
    t.append(answer("u-bee-03", "What was the summer honey harvest of HIVE-40?", "apiary",
                    [(U.honeyHarvest, {"hive_id": "HIVE-40"})], [r["honey_kg"]]))
    r = call(U.honeyHarvest, hive_id="HIVE-14")
    t.append(answer("u-bee-04", "If honey sells for 14 dollars per kg, what is the summer harvest of HIVE-14 worth?",
                    "apiary", [(U.honeyHarvest, {"hive_id": "HIVE-14"}), (U.calculator, {})],
                    [r["honey_kg"] * 14], kind="chain"))
    t.append(give_up("u-bee-05", "How many frames are in hive HIVE-99?", "apiary"))
    # marina
    r = call(U.berth_lookup, berth="B-22")
    t.append(answer("u-marina-01", "Which boat is moored at berth B-22?", "marina",
                    [(U.berth_lookup, {"berth": "B-22"})], words=[r["boat"]]))
    r = call(U.berth_lookup, berth="B-07")
    t.append(answer("u-marina-02", "How long is berth B-07, in meters?", "marina",
                    [(U.berth_lookup, {"berth": "B-07"})], [r["length_m"]]))
    r = call(U.mooringFee, berth="B-12", nights=4)
    t.append(answer("u-marina-03", "What is the mooring fee at B-12 for four nights?", "marina",
                    [(U.mooringFee, {"berth": "B-12", "nights": 4})], [r["fee_eur"]]))
    r = call(U.mooringFee, berth="B-31", nights=12)
    t.append(answer("u-marina-04", "Our boat stays 12 nights at berth B-31. How much is the fee?", "marina",
                    [(U.mooringFee, {"berth": "B-31", "nights": 12})], [r["fee_eur"]]))
    a, b = call(U.berth_lookup, berth="B-12"), call(U.berth_lookup, berth="B-31")
    t.append(answer("u-marina-05", "What is the combined length of berths B-12 and B-31?", "marina",
                    [(U.berth_lookup, {"berth": "B-12"}), (U.berth_lookup, {"berth": "B-31"})],
                    [a["length_m"] + b["length_m"]], kind="chain"))
    # tailor
    r = call(U.alteration_status, ticket="TL-3388")
    t.append(answer("u-tailor-01", "How many days until ticket TL-3388 is ready?", "tailor",
                    [(U.alteration_status, {"ticket": "TL-3388"})], [r["ready_in_days"]]))
    r = call(U.getAlterationPrice, ticket="TL-3342")
    t.append(answer("u-tailor-02", "What does the alteration on TL-3342 cost?", "tailor",
                    [(U.getAlterationPrice, {"ticket": "TL-3342"})], [r["price_usd"]]))
    r = call(U.getAlterationPrice, ticket="TL-3301", express=True)
    t.append(answer("u-tailor-03", "How much is express service for ticket TL-3301?", "tailor",
                    [(U.getAlterationPrice, {"ticket": "TL-3301", "express": True})], [r["price_usd"]]))
    r = call(U.alteration_status, ticket="TL-3410")
    t.append(answer("u-tailor-04", "What stage is job TL-3410 at?", "tailor",
                    [(U.alteration_status, {"ticket": "TL-3410"})], words=[r["stage"]]))
    t.append(give_up("u-tailor-05", "Order three meters of blue linen fabric for me.", "tailor"))
    # kennel
    did = call(U.findBoarder, dog_name="Juno")["dog_id"]
    r = call(U.boarder_profile, dog_id=did)
    t.append(answer("u-dog-01", "How many nights is Juno booked for?", "kennel",
                    [(U.findBoarder, {}), (U.boarder_profile, {"dog_id": did})], [r["nights_booked"]], kind="chain"))
    r = call(U.daily_food_grams, dog_id="DOG-73")
    t.append(answer("u-dog-02", "How much food does DOG-73 get each day?", "kennel",
                    [(U.daily_food_grams, {"dog_id": "DOG-73"})], [r["food_g_per_day"]]))
    r = call(U.boarder_profile, dog_id="DOG-80")
    t.append(answer("u-dog-03", "What does dog DOG-80 weigh?", "kennel",
                    [(U.boarder_profile, {"dog_id": "DOG-80"})], [r["weight_kg"]]))
    r = call(U.daily_food_grams, dog_id="DOG-58")
    t.append(answer("u-dog-04", "How many grams of food does DOG-58 need for a week?", "kennel",
                    [(U.daily_food_grams, {"dog_id": "DOG-58"}), (U.calculator, {})], [r["food_g_per_day"] * 7],
                    kind="chain"))
    t.append(give_up("u-dog-05", "Book a grooming appointment for Biscuit on Friday.", "kennel"))
    # climbing gym
    r = call(U.route_grade, route_id="RT-412")
    t.append(answer("u-climb-01", "What grade is route RT-412?", "climbing_gym",
                    [(U.route_grade, {"route_id": "RT-412"})], words=[r["grade"]]))
    r = call(U.wallOccupancy, wall="lead")
    t.append(answer("u-climb-02", "How many people are climbing on the lead wall now?", "climbing_gym",
                    [(U.wallOccupancy, {"wall": "lead"})], [r["climbers_now"]]))
    r = call(U.route_grade, route_id="RT-420")
    t.append(answer("u-climb-03", "How many ascents have been logged on RT-420?", "climbing_gym",
                    [(U.route_grade, {"route_id": "RT-420"})], [r["ascents"]]))
    a, b = call(U.route_grade, route_id="RT-409"), call(U.route_grade, route_id="RT-433")
    t.append(answer("u-climb-04", "How much taller is RT-433 than RT-409?", "climbing_gym",
                    [(U.route_grade, {"route_id": "RT-433"}), (U.route_grade, {"route_id": "RT-409"})],
                    [b["height_m"] - a["height_m"]], kind="chain"))
    t.append(give_up("u-climb-05", "What is the water temperature in tank TK-03?", "climbing_gym"))
    # print shop
    r = call(U.print_job, job_id="PJ-7790")
    t.append(answer("u-print-01", "How many copies does print job PJ-7790 have?", "print_shop",
                    [(U.print_job, {"job_id": "PJ-7790"})], [r["copies"]]))
    r = call(U.quotePrintRun, pages=16, copies=250, color="color")
    t.append(answer("u-print-02", "What would 250 color copies of a 16-page flyer cost?", "print_shop",
                    [(U.quotePrintRun, {"pages": 16, "copies": 250, "color": "color"})], [r["price_usd"]]))
    r = call(U.quotePrintRun, pages=40, copies=1200)
    t.append(answer("u-print-03", "Quote 1,200 black and white copies of a 40 page report.", "print_shop",
                    [(U.quotePrintRun, {"pages": 40, "copies": 1200})], [r["price_usd"]]))
    r = call(U.print_job, job_id="PJ-7802")
    t.append(answer("u-print-04", "How many pages will job PJ-7802 print in total (pages times copies)?",
                    "print_shop", [(U.print_job, {"job_id": "PJ-7802"}), (U.calculator, {})],
                    [r["pages"] * r["copies"]], kind="chain"))
    t.append(give_up("u-print-05", "What is the humidity in the north wine cellar?", "print_shop"))
    return t


def write(path: Path) -> int:
    rows = [{k: v for k, v in r.items() if k != "kind"} for r in tasks()]   # the kind is not a task field
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def kinds() -> dict[str, str]:
    """task id -> "one_call", "chain" or "give_up" (for per-kind breakdowns of an eval report)."""
    return {r["id"]: r["kind"] for r in tasks()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "umi_edge" / "data" / "tasks" / "unseen.jsonl"))
    args = ap.parse_args(argv)
    n = write(Path(args.out))
    print(json.dumps({"out": args.out, "tasks": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
