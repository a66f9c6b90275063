"""The README's "Write your own pipeline" code is the files in dags/examples/, and the factory's bad calls.

No server: the README comparison reads files; the factory checks run at DAG-construction time.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import DAGS_DIR, REPO

EXAMPLES = DAGS_DIR / "examples"
BLOCK = re.compile(r"<!-- example: (?P<path>[^ ]+) -->\n```python\n(?P<code>.*?)```\n", re.S)


def _readme_blocks() -> dict[str, str]:
    return {m["path"]: m["code"] for m in BLOCK.finditer((REPO / "README.md").read_text())}


def test_readme_shows_every_example_file_exactly():
    blocks = _readme_blocks()
    files = {f"dags/examples/{p.name}" for p in EXAMPLES.glob("*.py")}
    assert set(blocks) == files, f"README example blocks {sorted(blocks)} vs files {sorted(files)}"
    for path, code in blocks.items():
        assert code == (REPO / path).read_text(), f"README block for {path} differs from the file"


def test_the_notebook_script_is_not_parsed_as_a_dag():
    ignored = (EXAMPLES / ".airflowignore").read_text().split()
    assert "train_elsewhere.py" in ignored and "data/" in ignored


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "a.csv"}, "give train (an estimator import path or a training function) or model_uri"),
        ({"train": "sklearn.tree.DecisionTreeClassifier", "model_uri": "runs:/x/model"}, "exactly one"),
        ({"model_uri": "runs:/abc/model"}, "a model_uri needs source="),
        ({"train": 42, "source": "a.csv"}, "train must be an estimator import path or a function, got int"),
        ({"train": "sklearn.tree.DecisionTreeClassifier", "approval": "yes"}, "approval must be one of"),
        ({"train": "sklearn.svm.SVC", "source": ["a.csv"]}, "source must be a data-source spec (a string or"),
        (
            {"train": "sklearn.svm.SVC", "source": "a.csv", "hyperparameters": [1]},
            "hyperparameters must be a dict",
        ),
        ({"train": "sklearn.svm.SVC", "source": "a.csv", "conditions": ""}, "conditions='' is not valid"),
        (
            {"train": "sklearn.svm.SVC", "source": "a.csv", "test_size": 1.5},
            "test_size=1.5 is not valid: 1.5",
        ),
    ],
)
def test_pipeline_factory_refuses_bad_arguments_naming_them(kwargs, message):
    from airflow_saga.pipelines import training_pipeline

    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        training_pipeline("m", **kwargs)


def test_pipeline_factory_refuses_a_blank_model_name():
    from airflow_saga.pipelines import training_pipeline

    with pytest.raises(TypeError, match="model_name must be a non-empty string, got ' '"):
        training_pipeline(" ", train="sklearn.tree.DecisionTreeClassifier", source="sklearn:iris")


def test_pipeline_factory_schedules_on_the_models_drift_asset_and_names_the_dag():
    from airflow_saga.pipelines import training_pipeline

    dag = training_pipeline("team/churn v2", train="sklearn.tree.DecisionTreeClassifier", source="x.csv")
    assert dag.dag_id == "team_churn_v2_pipeline"
    assert dag.timetable.asset_condition.uri == "saga://drift/team%2Fchurn%20v2"
    assert dag.params["model_name"] == "team/churn v2" and dag.params["estimator"].startswith("sklearn.")
    manual = training_pipeline("m", model_uri="models:/m@c", source="h.csv", schedule=None, dag_id="d")
    assert type(manual.timetable).__name__ == "NullTimetable" and "train" not in manual.task_dict
    assert manual.params["model_uri"] == "models:/m@c" and "cache" not in manual.params
