"""The fabrication check of `eval tasks`: every number an answer states comes from the query, a call's
arguments or an observation; the runner records the ungrounded ones and the report gives a rate per set."""
from __future__ import annotations

import json
from importlib import resources

from umi_edge.engine.fake import fake_roles
from umi_edge.eval.tasks import TaskResult, fabricated_numbers, load_tasks, merge_shards, run_tasks, summarize
from umi_edge.team import Team

OBS = '{"tank_id": "TK-07", "water_temp_c": 14.2, "ph": 8.0, "count": 68213456, "change": -2.5}'


def test_grounded_numbers_pass():
    q = "What is 15% of the water temperature in tank TK-07 over 3 days?"
    assert fabricated_numbers("TK-07 is at 14.2 °C and pH 8.0.", [q, OBS]) == []
    assert fabricated_numbers("15% of 14.2 is 2.13 over 3 days.", [q, OBS, '{"result": 2.13}']) == []
    # written with fewer digits, scaled, signed, or with separators: still the observed value
    assert fabricated_numbers("About 14 degrees; 68.2 million fish; 68,213,456 in all.", [OBS]) == []
    assert fabricated_numbers("It fell by 2.5%.", [OBS]) == []
    # numbers inside ids and dates match the same pieces in the query
    assert fabricated_numbers("TK-07 on 2024-03-05.", ["TK-07 on 2024-03-05?"]) == []
    # a call's arguments ground what the caller took from the query ("four nights" -> 4)
    assert fabricated_numbers("4 nights cost 166 EUR.", ["Fee for four nights?", '{"nights": 4}',
                                                         '{"fee_eur": 166.0}']) == []


def test_invented_numbers_are_found():
    q = "How many units of A-1042 are in stock in the main warehouse?"
    assert fabricated_numbers("A-10422 is in stock in the main warehouse.", [q, '{"units": 318}']) == [10422]
    assert fabricated_numbers("The temperature is 14.9 °C.", [OBS]) == [14.9]     # not a rounding of 14.2
    assert fabricated_numbers("It holds 12 and 318 units.", ['{"units": 318}']) == [12]
    assert fabricated_numbers(None, [OBS]) == [] and fabricated_numbers("No numbers here.", []) == []


def test_digits_glued_to_a_letter_name_something():
    from umi_edge.eval.tasks import numbers_in

    assert numbers_in("berth B12, ticket A1,340 and 1.5e3 m") == [1500]      # no "340" out of "A1,340"
    assert fabricated_numbers("Ticket A1,340 is ready.", []) == []


def test_runner_records_fabrications_and_the_report_rates_them():
    """Scripted team on three unseen tasks: a grounded answer, a fabricated one, and a give-up (no answer,
    so not in the rate's denominator)."""
    path = resources.files("umi_edge").joinpath("data/tasks/unseen.jsonl")
    tasks = {t.id: t for t in load_tasks(str(path))}
    chosen = [tasks["u-aqua-01"], tasks["u-aqua-03"], tasks["u-obs-05"]]
    roles = fake_roles(
        planner=["Read the tank. Next: caller.", "Done. Next: conclusion.",
                 "Count the fish. Next: caller.", "Done. Next: conclusion.",
                 "No such telescope here. Next: give up."],
        caller=['Action: tank_reading\nAction Input: {"tank_id": "TK-07"}',
                'Action: getFishCount\nAction Input: {"tank_id": "TK-15"}'],
        summarizer=["The water in TK-07 is 14.2 °C.", "TK-15 holds 1340 fish in 7 species."],
    )
    with Team(roles) as team:
        report = run_tasks(chosen, team)
    rows = {r["id"]: r for r in report["tasks"]}
    assert rows["u-aqua-01"]["success"] and rows["u-aqua-01"]["fabricated"] == []
    assert rows["u-aqua-03"]["success"] and rows["u-aqua-03"]["fabricated"] == [7]   # there are 6 species
    assert rows["u-obs-05"]["status"] == "gave_up" and rows["u-obs-05"]["fabricated"] == []
    assert report["answered"] == 2 and report["fabricated_answers"] == 1 and report["fabrication_rate"] == 0.5
    json.dumps(report)


def test_fabrication_survives_sharding():
    results = [TaskResult(f"t{i}", "answer", "answered" if i % 3 else "gave_up", True, 1, 0.1, 0, f"a{i}",
                          fabricated=[float(i)] if i % 2 else []) for i in range(7)]
    whole = summarize(results)
    assert whole["answered"] == 4 and whole["fabricated_answers"] == 2     # t1, t5 (t3 gave up)
    for n in (2, 3):
        assert merge_shards([summarize(results[k::n]) for k in range(n)]) == whole
