"""
The Prometheus configuration the docs show is one promtool accepts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from docs_pages import code_blocks
from fixtures_servers import TLSContexts, promtool


pytestmark = pytest.mark.prometheus


class TestExporterPage:
    def test_tls_and_auth_scrape_config(
        self, tmp_path: Path, tls: TLSContexts
    ):
        """The TLS and basic-auth job of exporter.rst passes promtool."""
        (block,) = code_blocks("exporter.rst", "yaml")
        (tmp_path / "ca.pem").write_bytes(tls.ca_path.read_bytes())
        config = tmp_path / "prometheus.yml"
        config.write_text(block)

        result = promtool("check", "config", str(config), cwd=tmp_path)

        assert 0 == result.returncode, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


class TestServiceDiscoveryPage:
    def test_debian_prometheus_lacks_consul_discovery(self, tmp_path: Path):
        """As the page says: Debian's promtool rejects consul_sd_configs."""
        (block,) = code_blocks("service-discovery.rst", "yaml")
        config = tmp_path / "prometheus.yml"
        config.write_text(block)

        result = promtool("check", "config", str(config))

        assert 1 == result.returncode
        assert "field consul_sd_configs not found" in result.stderr


class TestShortLivedJobsPage:
    def test_honor_labels_scrape_config(self, tmp_path: Path):
        """The Pushgateway job of short-lived-jobs.rst passes promtool."""
        (block,) = code_blocks("short-lived-jobs.rst", "yaml")
        config = tmp_path / "prometheus.yml"
        config.write_text(block)

        result = promtool("check", "config", str(config))

        assert 0 == result.returncode, result.stdout + result.stderr
        assert "honor_labels: true" in block
