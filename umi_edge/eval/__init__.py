"""Evaluation: the α-UMi static (step-level) metrics and end-to-end task success over a task suite.

- `samples`: ToolBench-format test records → teacher-forced samples and reference strings; the
  train-example → test-record helper (`records_from_train_examples`); predictions.json I/O.
- `metrics`: the reference evaluator's parser and metrics (`score(records)`); `rouge`: Rouge-L as
  `rouge==1.0.1` computes it.
- `static`: `run_static(data, roles, ...)` (teacher-forced predictions, resumable) and `score_file`.
- `tasks`: the JSONL task format, checks and `run_tasks(tasks, team)`; `demo_tasks` generates the
  bundled suites by running the demo tools.
"""
