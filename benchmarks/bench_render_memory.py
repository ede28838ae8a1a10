"""
What the render engine keeps between scrapes, and what a render costs.

For each size, a registry of that many samples (``_registries``: gauges,
counters and histograms labelled like a busy HTTP service's) is rendered in
the text format and in OpenMetrics through one ``LineEncoder``, as an
exporter does, twice each.  What is still allocated afterwards, the
engine's caches, is measured with ``tracemalloc`` and given per 100k
samples, next to the size of a body.  Then renders are timed (best of
``--repeat``, without ``tracemalloc``) against ``prometheus_client``'s own
encoders.

``--churn N`` then renders N more times, each time after a tenth of the
gauges' series were replaced by new ones, tracing from before the registry
was built so that what the removed series free counts too: the caches must
not grow with series that are gone.

Run from the repository; ``PYTHONPATH=DIR`` measures another copy of the
``src`` directory (e.g. the version before a change) the same way:

    python benchmarks/bench_render_memory.py
    python benchmarks/bench_render_memory.py --samples 100000 1000000
    python benchmarks/bench_render_memory.py --samples 100000 --churn 20
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from prom_async.aio._render_families import LazyRegistry, encode_by_family
from prom_async.aio._render_lines import LineEncoder


sys.path.insert(0, str(Path(__file__).parent))

from _registries import build_registry, sample_count


ENCODERS = {
    "text": generate_latest,
    "openmetrics": openmetrics.generate_latest,
}
MB = 1024 * 1024


def render_all(registry: CollectorRegistry, lines: LineEncoder) -> None:
    """
    Render *registry* in every format, twice, as scrapes would.
    """
    for _ in range(2):
        for encoder in ENCODERS.values():
            encode_by_family(encoder, LazyRegistry(registry), lines)


def checked(registry: CollectorRegistry) -> int:
    """
    The size of a text body, once the engine's bodies are checked to be
    the library's.
    """
    lines = LineEncoder()
    for encoder in ENCODERS.values():
        if encode_by_family(encoder, LazyRegistry(registry), lines) != (
            encoder(registry)
        ):
            raise AssertionError("the bodies differ from the library's")
    return len(generate_latest(registry))


def kept_texts(lines: LineEncoder) -> int:
    """
    How many label texts *lines* keeps, whatever its version calls them.
    """
    tables = [
        getattr(texts, name, None)
        for by_escaping in list(lines._texts.values())  # noqa: SLF001
        for texts in by_escaping.values()
        for name in ("plain", "merged", "splits")
    ]
    return sum(len(table) for table in tables if isinstance(table, dict))


def retained(registry: CollectorRegistry) -> tuple[int, int]:
    """
    Bytes still allocated after rendering *registry* through a new
    encoder, and the label texts it keeps.
    """
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    lines = LineEncoder()
    render_all(registry, lines)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept_texts(lines)


def churned(samples: int, renders: int) -> tuple[int, int, int, int]:
    """
    Bytes allocated and texts kept after one round of renders, then after
    *renders* more, each after a tenth of the gauges' series were replaced.
    """
    gc.collect()
    tracemalloc.start()
    registry = build_registry(samples)
    gauges = registry._names_to_collectors["app_queue_depth"]  # noqa: SLF001
    lines = LineEncoder()
    render_all(registry, lines)
    gc.collect()
    first = tracemalloc.get_traced_memory()[0], kept_texts(lines)
    series = sorted(gauges._metrics)  # noqa: SLF001
    step = max(1, len(series) // 10)
    for number in range(renders):
        for labelvalues in series[:step]:
            gauges.remove(*labelvalues)
        fresh = [(f"churn-{number}", str(index)) for index in range(step)]
        for labelvalues in fresh:
            gauges.labels(*labelvalues).set(1.5)
        series = series[step:] + fresh
        render_all(registry, lines)
    gc.collect()
    last = tracemalloc.get_traced_memory()[0], kept_texts(lines)
    tracemalloc.stop()
    return (*first, *last)


def timed(registry: CollectorRegistry, repeat: int) -> dict[str, float]:
    """
    Milliseconds per render: the library's encoders and the engine's.
    """
    lines = LineEncoder()
    render_all(registry, lines)  # The caches are warm, as between scrapes.
    results = {}
    for name, encoder in ENCODERS.items():
        for label in ("library", "engine"):
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                if label == "library":
                    encoder(registry)
                else:
                    encode_by_family(encoder, LazyRegistry(registry), lines)
                best = min(best, time.perf_counter() - start)
            results[f"{name} {label}"] = best * 1000
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--samples", type=int, nargs="+", default=[10_000, 100_000]
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--churn", type=int, default=0, metavar="RENDERS")
    args = parser.parse_args()
    LineEncoder().layout(generate_latest)  # The probes, made once.
    LineEncoder().layout(openmetrics.generate_latest)
    for samples in args.samples:
        registry = build_registry(samples)
        exposed = sample_count(registry)
        body = checked(registry)
        kept, texts = retained(registry)
        print(
            f"{exposed} samples: the caches keep {kept / MB:.2f} MB "
            f"({kept * 100_000 / exposed / MB:.2f} MB per 100k samples) "
            f"in {texts} label texts; a text body is {body / MB:.2f} MB"
        )
        for name, milliseconds in timed(registry, args.repeat).items():
            print(f"  {name:<20} {milliseconds:9.1f} ms per render")
        if args.churn:
            del registry
            first, first_texts, last, last_texts = churned(samples, args.churn)
            print(
                f"  churn: {first / MB:.2f} MB allocated ({first_texts} "
                f"texts) after the first renders, {last / MB:.2f} MB "
                f"({last_texts} texts) after {args.churn} more, each after "
                "a tenth of the gauges' series were replaced"
            )


if __name__ == "__main__":
    main()
