"""A small client for Airflow's REST API v2: the calls the demo, the tests and the docs need."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests

TERMINAL = {"success", "failed"}


class AirflowApi:
    def __init__(self, base_url: str, username: str = "admin", password: str = "admin") -> None:
        self.base = base_url.rstrip("/")
        self.username, self.password = username, password
        self.s = requests.Session()
        self._token: str | None = None

    def login(self) -> None:
        r = self.s.post(
            f"{self.base}/auth/token", json={"username": self.username, "password": self.password}, timeout=30
        )
        r.raise_for_status()
        self._token = r.json()["access_token"]
        self.s.headers["Authorization"] = f"Bearer {self._token}"

    def _req(self, method: str, path: str, **kw: Any) -> Any:
        if self._token is None:
            self.login()
        r = self.s.request(method, f"{self.base}/api/v2{path}", timeout=60, **kw)
        if r.status_code == 401:
            self.login()
            r = self.s.request(method, f"{self.base}/api/v2{path}", timeout=60, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> HTTP {r.status_code}: {r.text[:2000]}")
        return r.json() if r.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                return self._req("GET", f"/dags/{dag_id}")
            except RuntimeError as exc:
                last = exc
            time.sleep(1)
        errors = self._req("GET", "/importErrors")
        raise TimeoutError(f"DAG {dag_id} not parsed after {timeout}s ({last}); import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self._req("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        body = self._req("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return body["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self._req("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        body = self._req("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        body = self._req(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": "true", "stringify": "false"},
        )
        return body.get("value")

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        """``{link name: url}`` of a task instance's extra links."""
        body = self._req(
            "GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links"
        )
        return body.get("extra_links", body) if isinstance(body, dict) else body

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600, until: set[str] | None = None) -> dict:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            run = self.dag_run(dag_id, run_id)
            state = run["state"]
            if state in (until or TERMINAL):
                return run
            time.sleep(1)
        raise TimeoutError(
            f"{dag_id}/{run_id} still {state} after {timeout}s: {self.task_instances(dag_id, run_id)}"
        )

    def wait_task_state(
        self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float = 300
    ) -> dict:
        deadline = time.monotonic() + timeout
        ti = None
        while time.monotonic() < deadline:
            ti = self.task_instances(dag_id, run_id).get(task_id)
            if ti and ti["state"] in states:
                return ti
            run = self.dag_run(dag_id, run_id)
            if run["state"] in TERMINAL:
                raise RuntimeError(
                    f"run {run_id} ended {run['state']} before {task_id} reached {states}: {ti}"
                )
            time.sleep(1)
        raise TimeoutError(f"{task_id} not in {states} after {timeout}s: {ti}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as plain text (the API returns structured events; we join their messages)."""
        body = self._req(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": "true"},
        )
        lines = []
        for item in body.get("content", []):
            if isinstance(item, dict):
                lines.append(
                    " ".join(str(v) for k, v in item.items() if k in ("event", "error_detail") and v)
                )
            else:
                lines.append(str(item))
        return "\n".join(lines)

    # --- human in the loop ------------------------------------------------------------------------
    def pending_hitl(self, dag_id: str, run_id: str) -> list[dict]:
        body = self._req(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/hitlDetails",
            params={"response_received": "false", "state": "awaiting_input"},
        )
        return body["hitl_details"]

    def respond_hitl(
        self, dag_id: str, run_id: str, task_id: str, option: str, params_input: dict | None = None
    ) -> dict:
        return self._req(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": params_input or {}},
        )
