"""`eval tasks` and `eval static` end to end on the real SmolLM2 team (slow: minutes on 2 shared cores)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from shared_data import TRAIN, needs_train
from umi_edge.cli import cli

# one planner turn and short generations: this proves the plumbing, not the (untrained) model's skill
QUICK_ENV = {"UMI_EDGE_MAX_TOKENS": "24"}


@pytest.mark.slow
def test_tasks_two_demo_tasks_on_smollm2(default_model_home):
    r = CliRunner().invoke(cli, ["eval", "tasks", "demo", "--limit", "2", "--max-steps", "1", "--n-ctx", "2048",
                                 "--temperature", "0", "--json"], env=QUICK_ENV, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["n_tasks"] == 2
    assert "error" not in rep["status_counts"], rep["tasks"]
    assert rep["mean_steps"] >= 1 and rep["mean_seconds"] > 0
    assert rep["tokens_by_role"]["planner"]["prompt"] > 0 and rep["tokens_by_role"]["planner"]["generated"] > 0
    assert rep["hallucinated_calls"] == 0          # the default set's caller is grammar-constrained


@pytest.mark.slow
@needs_train
def test_static_two_samples_on_smollm2(default_model_home, tmp_path):
    out = tmp_path / "preds.json"
    r = CliRunner().invoke(cli, ["eval", "static", str(TRAIN), "--limit", "2", "--n-ctx", "2048",
                                 "--temperature", "0", "--out", str(out), "--json"],
                           env=QUICK_ENV, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout)
    assert m["n_samples"] == 2
    for k in ("plan_acc", "act_em", "hallu_rate", "rouge_l"):
        assert 0.0 <= m[k] <= 1.0
    preds = json.loads(out.read_text())
    assert len(preds) == 2 and all(p["predictions"] and p["tokens"]["planner"]["prompt"] > 0 for p in preds)


@pytest.mark.slow
def test_tasks_compare_team_and_single_model_in_two_processes(default_model_home, tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[sets.one]\nmodel = "smollm2-135m-instruct"\nprotocol = "alpha-umi/toolbench-backbone-v1"\n'
                      'max_tokens = 417\n')
    r = CliRunner().invoke(cli, ["eval", "tasks", "demo", "--limit", "1", "--max-steps", "1", "--models", str(models),
                                 "--set", "default", "--compare", "one", "--jobs", "2", "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [c["set"] for c in rep["compare"]] == ["default", "one"]
    for name, tokens in (("default", "planner"), ("one", "backbone")):
        s = rep["sets"][name]
        assert s["n_tasks"] == 1 and "error" not in s["status_counts"], s["tasks"]
        assert s["tokens_by_role"][tokens]["generated"] > 0 and s["hallucinated_calls"] == 0
