"""`umi-edge eval static` / `eval tasks` through the CLI, with Team.load replaced by a fake-engine team."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from umi_edge.cli import cli
from umi_edge.engine.fake import fake_roles
from umi_edge.eval.samples import oracle_predictions, write_json_atomic
from umi_edge.eval.static import load_samples
from umi_edge.team import Team
from shared_data import TRAIN, needs_train

STATIC_KEYS = {"n_samples", "plan_acc", "act_em", "hallu_rate", "arg_f1", "easy_arg_f1", "hard_arg_f1", "rouge_l"}


@pytest.fixture
def fake_team(monkeypatch):
    """Team.load returns a Team over these scripted roles; returns the dict so a test can fill the scripts."""
    roles = fake_roles()
    loaded = []

    def load(cls, set_name=None, **kwargs):
        loaded.append((set_name, kwargs))
        return Team({r: roles[r] for r in ("planner", "caller", "summarizer")}, constrained=False)

    monkeypatch.setattr(Team, "load", classmethod(load))
    roles["loaded"] = loaded
    return roles


def _data(tmp_path):
    conv = [{"from": "user", "value": "q"},
            {"from": "assistant", "value": "call Next: caller."},
            {"from": "caller", "value": 'Action: t_for_x\nAction Input: {"a": 1}'},
            {"from": "observation", "value": "ok"},
            {"from": "assistant", "value": "done Next: conclusion."},
            {"from": "conclusion", "value": "It is ok."}]
    p = tmp_path / "data.json"
    p.write_text(json.dumps([{"tools": [{"Name": "t_for_x", "function": "", "input": {}}], "instruction": "q",
                              "conversations": conv}]))
    return p


@needs_train
def test_static_score_only_oracle_json(tmp_path):
    samples, _ = load_samples(TRAIN)
    preds = tmp_path / "oracle.json"
    write_json_atomic(preds, oracle_predictions(samples))
    r = CliRunner().invoke(cli, ["eval", "static", str(TRAIN), "--predictions", str(preds), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == STATIC_KEYS | {"notes"}
    assert out["n_samples"] == 79 and out["plan_acc"] == 1.0 and out["hallu_rate"] == 0.0
    r = CliRunner().invoke(cli, ["eval", "static", str(TRAIN), "--predictions", str(preds)])
    assert r.exit_code == 0 and "100.00" in r.stdout


def test_static_run_with_out_and_resume(tmp_path, fake_team):
    data, out = _data(tmp_path), tmp_path / "p.json"
    fake_team["planner"].push("call Next: caller.", "done Next: conclusion.")
    fake_team["caller"].push('Action: t_for_x\nAction Input: {"a": 1}')
    fake_team["summarizer"].push("It is ok.")
    args = ["eval", "static", str(data), "--set", "mine", "--out", str(out), "--plan-label", "planner",
            "--temperature", "0", "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["plan_acc"] == m["act_em"] == m["arg_f1"] == 1.0 and m["notes"]["plan_label"] == "planner"
    assert fake_team["loaded"][0] == ("mine", {"models": None, "progress": True, "verbose": False,
                                               "temperature": 0.0})
    assert "planner: call Next: caller.</s>" in fake_team["caller"].prompts[0]
    assert [p["id"] for p in json.loads(out.read_text())] == ["0:1", "0:4"]
    # a second run resumes: nothing is generated (the fake has no outputs left) and the numbers agree
    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout) == m


def test_static_flags_conflict_and_bad_data(tmp_path):
    data = _data(tmp_path)
    r = CliRunner().invoke(cli, ["eval", "static", str(data), "--predictions", str(data), "--limit", "3"])
    assert r.exit_code == 2 and "--limit" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"tools": []}')
    r = CliRunner().invoke(cli, ["eval", "static", str(bad), "--predictions", str(bad)])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output


def test_tasks_json_and_human(tmp_path, fake_team):
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        '{"id": "sum", "query": "What is 2+3?", "tools": ["calculator"], "check": {"answer_number": 5}}\n'
        '{"id": "nope", "query": "Fly me to the moon.", "expect": "give_up"}\n')
    fake_team["planner"].push("Add. Next: caller.", "Known. Next: conclusion.", "Impossible. Next: give up.")
    fake_team["caller"].push('Action: calculator\nAction Input: {"expression": "2+3"}')
    fake_team["summarizer"].push("2 + 3 = 5")
    r = CliRunner().invoke(cli, ["eval", "tasks", str(tasks), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert {"n_tasks", "success_rate", "give_up_rate", "hallucinated_calls", "mean_steps", "mean_seconds"} <= set(rep)
    assert rep["n_tasks"] == 2 and rep["success_rate"] == 1.0 and rep["give_up_rate"] == 0.5
    assert "[1/2] ok" in r.stderr and "[2/2] ok" in r.stderr


def test_tasks_bundled_suite_name_and_limit(fake_team):
    fake_team["planner"].push("Cannot. Next: give up.")
    r = CliRunner().invoke(cli, ["eval", "tasks", "demo", "--limit", "1"])
    assert r.exit_code == 0, r.output
    assert "tasks 1: success 0.0%, give-up 100.0%" in r.stdout
    assert "FAIL calc-01" in r.stderr


def test_tasks_bad_file_is_one_line(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"id": "a"}\n')
    r = CliRunner().invoke(cli, ["eval", "tasks", str(p)])
    assert r.exit_code == 1 and "t.jsonl:1: task a: field 'query'" in r.output


def test_tasks_compare_runs_every_set_on_the_same_tasks(tmp_path, fake_team):
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(json.dumps({"id": "g", "query": "weather?", "tools": ["calculator"], "expect": "give_up"}) + "\n")
    fake_team["planner"].push("Cannot. Next: give up.")
    fake_team["planner"].push("I will compute. Next: conclusion.")
    fake_team["summarizer"].push("No idea.")
    r = CliRunner().invoke(cli, ["eval", "tasks", str(tasks), "--set", "a", "--compare", "b", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [s for s, _ in fake_team["loaded"]] == ["a", "b"]
    assert [(c["set"], c["success_rate"]) for c in rep["compare"]] == [("a", 1.0), ("b", 0.0)]
    assert rep["sets"]["b"]["status_counts"] == {"answered": 1}
    assert "a [1/1] ok" in r.stderr and "b [1/1] FAIL g" in r.stderr


_PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from umi_edge.proc import exit_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(), 0.05))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)
    time.sleep(120)
"""


def test_eval_workers_exit_when_the_parent_is_killed(tmp_path):
    """`eval tasks --jobs N` workers must not keep running a model for minutes after the parent was killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)                      # alive, busy in time.sleep(120)
    finally:
        parent.send_signal(signal.SIGKILL)      # no clean-up runs in the parent
        parent.wait()

    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] != "Z"   # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 30
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(worker)
