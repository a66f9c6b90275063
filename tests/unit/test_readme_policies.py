"""The README's "Governance policies" examples: the JSON policies load, and the DAG example puts the policy
on every task (no server; DAG construction only)."""

from __future__ import annotations

import json
import re

from airflow_saga.core import policy as P
from tests.conftest import REPO

SECTION = (REPO / "README.md").read_text().split("### Governance policies", 1)[1].split("\n### ", 1)[0]
USERS = P.Directory(
    "README users",
    {u: (u, frozenset({r})) for u, r in (("alice", "op"), ("bob", "admin"), ("carol", "user"))},
    frozenset({"viewer", "user", "op", "admin"}),
)


def test_the_json_policies_in_the_readme_load():
    blocks = re.findall(r"```json\n(.*?)```", SECTION, re.S)
    heredoc = re.findall(r"<<'JSON'\n(.*?)JSON\n", SECTION, re.S)
    assert blocks and heredoc
    for text in [*blocks, *heredoc]:
        resolver = P.load_config(json.loads(text), directory=USERS)
        assert isinstance(resolver("churn"), P.RulesPolicy)
    full = P.load_config(json.loads(blocks[0]), directory=USERS)
    assert full.rules_for("fraud").approvers.users == {"carol"} and full.rules_for("fraud").four_eyes


def test_the_dag_example_puts_the_policy_on_every_task():
    [code] = re.findall(r"```python\n(from airflow\.sdk import DAG\n.*?)```", SECTION, re.S)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    tasks = scope["ask"].dag.tasks
    assert {t.task_id for t in tasks} == {"approve_in_airflow", "record", "promote"}
    assert all(t.governance_policy == scope["POLICY"] for t in tasks)
    P.load_config(scope["POLICY"], directory=USERS)
