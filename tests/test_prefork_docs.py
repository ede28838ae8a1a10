"""
The Prometheus configuration and the PromQL of docs/prefork.rst are what
promtool accepts.
"""

from __future__ import annotations

import json

import pytest

from docs_pages import code_blocks
from fixtures_servers import promtool


pytestmark = pytest.mark.prometheus


def blocks(language: str) -> list[str]:
    return code_blocks("prefork.rst", language)


class TestPreforkPage:
    def test_scrape_configs(self, tmp_path):
        """Each scrape configuration on the page passes promtool."""
        configs = blocks("yaml")
        results = []
        for number, block in enumerate(configs):
            config = tmp_path / f"prometheus-{number}.yml"
            config.write_text(block + "\n")
            results.append(promtool("check", "config", str(config)))

        assert 2 == len(configs)
        assert [0, 0] == [result.returncode for result in results], [
            result.stdout + result.stderr for result in results
        ]

    def test_promql(self, tmp_path):
        """Each PromQL expression on the page is one promtool accepts."""
        expressions = blocks("promql")
        rules = tmp_path / "rules.yml"
        rules.write_text(
            json.dumps(
                {
                    "groups": [
                        {
                            "name": "prefork",
                            "rules": [
                                {"record": f"page:expression_{n}", "expr": e}
                                for n, e in enumerate(expressions)
                            ],
                        }
                    ]
                }
            )
        )

        result = promtool("check", "rules", str(rules))

        assert 5 == len(expressions)
        assert 0 == result.returncode, result.stdout + result.stderr
        assert f"SUCCESS: {len(expressions)} rules found" in result.stdout
