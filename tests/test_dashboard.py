"""
The Grafana dashboard shipped for the example, examples/grafana/: ready for
file provisioning, and every panel's PromQL answers with data from a real
Prometheus that scraped the running example under traffic.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import urllib.parse

from pathlib import Path
from typing import Any

import aiohttp

from fixtures_servers import PROMTOOL, poll
from test_web_example import plot_example, post, running


GRAFANA = Path(__file__).parent.parent / "examples" / "grafana"
DASHBOARD = GRAFANA / "cat-or-not.json"

#: What Grafana puts in for its built-in and the dashboard's variables
#: when all values are chosen.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries() -> dict[str, str]:
    """
    Every target's PromQL, the variables substituted, by panel and refId.
    """
    queries = {}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            queries[f"{panel['title']} ({target['refId']})"] = expr
    return queries


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


def with_data(answer: dict[str, Any]) -> list[dict[str, Any]] | None:
    """
    An instant query's series if one has a finite value, else None.
    """
    result: list[dict[str, Any]] = answer["result"]
    return result if has_data(result) else None


class TestDashboardFile:
    def test_ready_for_file_provisioning(self):
        """A stable uid, no __inputs (those are for the import UI), and a
        data source variable every panel and query variable uses."""
        board = dashboard()
        variables = {v["name"]: v for v in board["templating"]["list"]}
        datasources = [
            panel["datasource"]
            for panel in board["panels"]
            for panel in [panel, *panel["targets"]]
        ] + [
            v["datasource"] for v in variables.values() if v["type"] == "query"
        ]

        assert "cat-or-not" == board["uid"]
        assert "__inputs" not in board
        assert ("datasource", "prometheus") == (
            variables["datasource"]["type"],
            variables["datasource"]["query"],
        )
        assert [{"type": "prometheus", "uid": "${datasource}"}] == [
            dict(pair) for pair in {tuple(d.items()) for d in datasources}
        ]

    def test_panel_ids_and_places_are_distinct(self):
        """No two panels share an id or overlap in the grid."""
        panels = dashboard()["panels"]
        cells = [
            (x, y)
            for panel in panels
            for x in range(
                panel["gridPos"]["x"],
                panel["gridPos"]["x"] + panel["gridPos"]["w"],
            )
            for y in range(
                panel["gridPos"]["y"],
                panel["gridPos"]["y"] + panel["gridPos"]["h"],
            )
        ]

        assert len(panels) == len({panel["id"] for panel in panels})
        assert len(cells) == len(set(cells))

    def test_only_known_variables(self):
        """Every $variable in a query is one the test substitutes."""
        used = {
            match
            for panel in dashboard()["panels"]
            for target in panel["targets"]
            for match in re.findall(r"\$\w+", target["expr"])
        }

        assert used <= set(VARIABLES)

    def test_promtool_parses_every_query(self, tmp_path: Path):
        """Each panel's PromQL, as a recording rule, passes promtool."""
        queries = panel_queries()
        rules = {
            "groups": [
                {
                    "name": "dashboard",
                    "rules": [
                        {"record": f"panel_{number}", "expr": expr}
                        for number, expr in enumerate(queries.values())
                    ],
                }
            ]
        }
        # JSON is YAML: promtool reads it as a rule file.
        path = tmp_path / "panels.yml"
        path.write_text(json.dumps(rules))

        result = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert 0 == result.returncode, result.stdout + result.stderr
        assert f"SUCCESS: {len(queries)} rules found" in result.stdout


class TestDashboardAgainstPrometheus:
    async def test_every_panel_has_data(self, registry, http, prometheus):
        """With the example scraped under traffic (good pictures, refused
        uploads, wrong and missing API keys), every panel's query returns
        a finite value from Prometheus."""
        key = "k3y"
        async with running(registry, api_key=key) as (analyze, metrics_url):
            target = urllib.parse.urlsplit(metrics_url).netloc
            scraper = await asyncio.to_thread(prometheus, [target])
            await asyncio.to_thread(scraper.wait_for_target_up, target)
            # Two rounds, each scraped: rate() sees the counters grow.
            for round_ in range(2):
                await traffic(http, analyze, key, seed=round_)
                await asyncio.to_thread(
                    scraper.wait_for_value,
                    "sum(cat_or_not_responses_total)",
                    str(43 * (round_ + 1)),
                )
            queries = panel_queries()
            answers = {
                title: await asyncio.to_thread(
                    poll,
                    lambda expr=expr: with_data(
                        scraper.api("query", query=expr)
                    ),
                    what=f"data for {title}: {expr}",
                )
                for title, expr in queries.items()
            }

        assert [] == [
            title for title, result in answers.items() if not has_data(result)
        ]
        assert 16 == len(answers)
        by_code = answers["Responses per second, by status code (A)"]
        assert {"200", "401", "415"} == {s["metric"]["code"] for s in by_code}


async def traffic(
    http: aiohttp.ClientSession, analyze: str, key: str, *, seed: int
) -> None:
    """
    43 requests: 40 pictures with the key, one not a picture, one with a
    wrong key and one without.
    """
    sizes = plot_example.picture_sizes(40, seed=seed)
    answers = await plot_example.send_pictures(analyze, sizes, api_key=key)
    good = {"X-API-Key": key}
    refused = [
        await post(http, analyze, content=b"not a picture", headers=good),
        await post(
            http,
            analyze,
            content=b"x",
            headers={"X-API-Key": "wrong"},
        ),
        await post(http, analyze, content=b"x"),
    ]
    assert [200] * 40 == [answer.status for answer in answers]
    assert [415, 401, 401] == [status for status, _ in refused]
