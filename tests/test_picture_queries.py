"""
The queries of the picture script, scripts/plot_example.py, against a real
Prometheus that scraped the example under the script's demo traffic: the
picture in the docs cannot rot silently.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse

import pytest

from fixtures_servers import poll
from test_web_example import plot_example, running


def filled(series: dict[str, list[tuple[float, float]]]) -> bool:
    return all(len(points) >= 2 for points in series.values())


class TestPictureQueries:
    async def test_queries_answer_the_demo_traffic(self, registry, prometheus):
        """After a few seconds of demo traffic, query_range answers every
        query with points: a positive rate, and p50 <= p90."""
        async with running(registry) as (analyze, metrics_url):
            target = urllib.parse.urlsplit(metrics_url).netloc
            scraper = await asyncio.to_thread(prometheus, [target])
            await asyncio.to_thread(scraper.wait_for_target_up, target)
            start = time.time()
            sent = await plot_example.demo_traffic(analyze, seconds=4)
            await asyncio.to_thread(
                poll,
                lambda: plot_example.scraped(scraper.url) == sent,
                what=f"{sent} requests scraped",
            )
            series = await asyncio.to_thread(
                poll,
                lambda: (
                    (
                        found := plot_example.fetch(
                            scraper.url,
                            start=start,
                            end=time.time(),
                            step=1,
                        )
                    )
                    and filled(found)
                    and found
                ),
                what="points for every query",
            )

        assert set(plot_example.QUERIES) == set(series)
        assert all(
            math.isfinite(value) and value >= 0
            for points in series.values()
            for _, value in points
        )
        assert max(value for _, value in series["rate"]) > 0
        p50 = dict(series["p50"])
        assert all(
            p50[at] <= value for at, value in series["p90"] if at in p50
        )

    def test_prometheus_config_points_at_the_target(self):
        """The script's Prometheus configuration is the shipped one with
        the target, scrape interval and rule paths replaced."""
        config = plot_example.prometheus_config(
            "127.0.0.1:1234", scrape_interval="2s"
        )

        assert '- targets: ["127.0.0.1:1234"]' in config
        assert "scrape_interval: 2s" in config
        assert f"- {plot_example.PROMETHEUS_CONFIG.parent}/rules/node.yml" in (
            config
        )
        assert '"127.0.0.1:8081"' not in config

    @pytest.mark.parametrize("megapixels", [2.0, 6.0])
    def test_picture_sizes_spread(self, megapixels):
        """The demo's sizes centre on the median asked for and spread a
        tenth to four times beyond it, more lying than standing."""
        sizes = plot_example.picture_sizes(2000, seed=3, megapixels=megapixels)
        pixels = sorted(width * height for width, height in sizes)
        median = pixels[len(pixels) // 2] / 1e6
        lying = sum(width > height for width, height in sizes)

        assert median == pytest.approx(megapixels, rel=0.15)
        assert pixels[int(0.9 * len(pixels))] / 1e6 > 3 * megapixels
        assert 1000 < lying < 1400
