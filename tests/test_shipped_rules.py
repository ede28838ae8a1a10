"""
The Prometheus configuration and rules shipped for the example service,
examples/prometheus/: promtool accepts them and their unit tests pass.
"""

from __future__ import annotations

import shutil
import subprocess

from pathlib import Path

import pytest

from fixtures_servers import PROMTOOL
from victoria_metrics import VICTORIA_METRICS_BINARY


pytestmark = pytest.mark.prometheus

SHIPPED = Path(__file__).parent.parent / "examples" / "prometheus"
RULE_FILES = sorted((SHIPPED / "rules").glob("*.yml"))


def run(*command: str | Path, cwd: Path = SHIPPED) -> tuple[int, str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    return result.returncode, result.stdout + result.stderr


class TestRules:
    def test_rule_files_pass_promtool_check(self):
        """`promtool check rules` accepts every rule file."""
        assert 3 == len(RULE_FILES)

        code, output = run(PROMTOOL, "check", "rules", *RULE_FILES)

        assert 0 == code, output
        assert len(RULE_FILES) == output.count("SUCCESS")

    def test_unit_tests_pass(self):
        """`promtool test rules rules_test.yml` passes."""
        code, output = run(PROMTOOL, "test", "rules", "rules_test.yml")

        assert 0 == code, output
        assert "SUCCESS" in output

    def test_every_alert_has_a_unit_test(self):
        """Each alert of the rule files is named in the unit tests."""
        alerts = {
            line.split(":", 1)[1].strip()
            for path in RULE_FILES
            for line in path.read_text().splitlines()
            if line.strip().startswith("- alert:")
        }
        tested = (SHIPPED / "rules_test.yml").read_text()

        assert {
            "CatOrNotInstanceDown",
            "CatOrNotErrorRatioHigh",
            "CatOrNotLatencySLOBreach",
            "EventLoopBlocked",
            "DiskWillFillIn4Hours",
        } == alerts
        assert set() == {
            alert for alert in alerts if f"alertname: {alert}\n" not in tested
        }

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("for: 5m", "for: 4m"),
            ("for: 5m", "for: 6m"),
            ("4 * 3600", "3600"),
        ],
    )
    def test_unit_tests_catch_a_changed_disk_alert(
        self, tmp_path: Path, old: str, new: str
    ):
        """The disk alert's boundary tests fail when its FOR or horizon
        changes: firing at 5 minutes and not at 4 is what they check."""
        copy = tmp_path / "prometheus"
        shutil.copytree(SHIPPED, copy)
        node = copy / "rules" / "node.yml"
        assert old in node.read_text()
        node.write_text(node.read_text().replace(old, new))

        code, output = run(
            PROMTOOL, "test", "rules", "rules_test.yml", cwd=copy
        )

        assert 1 == code, output
        assert "DiskWillFillIn4Hours" in output


class TestPrometheusConfig:
    def test_static_config_passes_debian_promtool(self):
        """prometheus.yml, with its rule files, passes Debian's promtool."""
        code, output = run(PROMTOOL, "check", "config", "prometheus.yml")

        assert 0 == code, output
        assert "SUCCESS: 3 rule files found" in output

    def test_debian_promtool_refuses_consul_variant(self):
        """As its comment says, Debian's Prometheus has no consul_sd."""
        code, output = run(
            PROMTOOL, "check", "config", "prometheus-consul.yml"
        )

        assert 1 == code, output
        assert "field consul_sd_configs not found" in output

    @pytest.mark.victoria_metrics
    def test_victoria_metrics_accepts_consul_variant(self):
        """VictoriaMetrics accepts the consul_sd variant with the flag its
        comment gives, and refuses it without."""
        dry_run = (
            VICTORIA_METRICS_BINARY,
            "-promscrape.config=prometheus-consul.yml",
            "-promscrape.config.dryRun",
            "-loggerLevel=ERROR",
        )

        lenient = run(*dry_run, "-promscrape.config.strictParse=false")
        strict = run(*dry_run)

        assert 0 == lenient[0], lenient[1]
        assert 0 != strict[0]
        assert "rule_files" in strict[1]
