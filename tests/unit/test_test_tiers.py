"""The tier guard of ``tests/conftest.py``, run for real on a throw-away test module (pytester)."""

from __future__ import annotations

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
from tests.conftest import pytest_runtest_setup  # the guard under test

@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    (tmp_path_factory.getbasetemp() / "server-started").write_text("yes")  # stands for a real start
    return object()
"""

TESTS = """
import pytest

def test_unmarked(mlflow_server):
    pass

@pytest.mark.integration
def test_marked(mlflow_server):
    pass

def test_no_server():
    pass
"""


def test_unmarked_test_with_a_server_fixture_fails_before_the_server_starts(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tiers=TESTS)
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "unmarked or no_server")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_unmarked uses server fixture(s)*mlflow_server*integration or e2e*"])
    assert not list(pytester.path.parent.rglob("server-started"))


def test_marked_test_gets_its_server(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tiers=TESTS)
    pytester.makeini("[pytest]\nmarkers =\n    integration: x\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "marked and not unmarked")
    result.assert_outcomes(passed=1)
    assert list(pytester.path.parent.rglob("server-started"))  # the probe the other test relies on works
