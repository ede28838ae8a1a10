"""
What a registry holds at one moment, and how to show it in a message.

A snapshot keeps every sample a registry's collection yields, by family;
samples are looked up by name and by a subset of their labels, as PromQL's
``sum`` would add them up.
"""

from __future__ import annotations

import math

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry


__all__ = [
    "Family",
    "LabelSet",
    "Snapshot",
    "check_summable",
    "equal",
    "format_sample",
    "is_created",
    "label_set",
    "moves_by_itself",
    "take",
]

#: A sample's labels, sorted by name: hashable, and printed in one order.
LabelSet = tuple[tuple[str, str], ...]

#: The sample names each family type yields, as suffixes of the family
#: name: a family with no samples yet still knows them.
_SUFFIXES: Final[Mapping[str, tuple[str, ...]]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}
#: The families of prometheus_client's default collectors (process, GC,
#: platform), in the global registry: they change by themselves.
_BY_ITSELF_PREFIXES: Final = ("process_", "python_gc_")
_BY_ITSELF: Final = frozenset({"python_info"})
#: Labels that tell apart samples no sum should add up.
_SERIES_LABELS: Final = ("le", "quantile")


def label_set(labels: Mapping[str, str]) -> LabelSet:
    return tuple(sorted(labels.items()))


def equal(first: float, second: float) -> bool:
    """
    The same value, up to float rounding; NaN equals NaN.
    """
    if math.isnan(first) or math.isnan(second):
        return math.isnan(first) and math.isnan(second)
    return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)


def format_sample(name: str, labels: LabelSet, value: float | None) -> str:
    """
    One sample as an exposition line; ``(absent)`` for no value.
    """
    shown = "(absent)" if value is None else repr(float(value))
    if not labels:
        return f"{name} {shown}"
    pairs = ",".join(
        f'{label}="{_escape(label_value)}"' for label, label_value in labels
    )
    return f"{name}{{{pairs}}} {shown}"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    samples: dict[tuple[str, LabelSet], float] = field(default_factory=dict)

    def sample_names(self) -> set[str]:
        derived = {
            self.name + suffix for suffix in _SUFFIXES.get(self.type, ("",))
        }
        return derived | {name for name, _ in self.samples}

    def lines(self) -> list[str]:
        """
        Its samples (but ``_created``) as exposition lines, in the order
        collected.
        """
        shown = [
            format_sample(name, labels, value)
            for (name, labels), value in self.samples.items()
            if not is_created(self, name)
        ]
        return shown or ["(no samples)"]


def is_created(family: Family, sample_name: str) -> bool:
    """
    Whether *sample_name* is a ``_created`` timestamp of *family*.
    """
    return (
        sample_name == f"{family.name}_created"
        and "_created" in _SUFFIXES.get(family.type, ())
    )


def moves_by_itself(family: Family) -> bool:
    """
    Whether *family* is one of prometheus_client's default collectors'.
    """
    return family.name in _BY_ITSELF or family.name.startswith(
        _BY_ITSELF_PREFIXES
    )


@dataclass(frozen=True)
class Snapshot:
    families: dict[str, Family]

    def family_of(self, sample_name: str) -> Family | None:
        for family in self.families.values():
            if sample_name in family.sample_names():
                return family
        return None

    def sample_names(self) -> set[str]:
        return {
            name
            for family in self.families.values()
            for name in family.sample_names()
        }

    def matching(
        self, sample_name: str, labels: Mapping[str, str]
    ) -> dict[LabelSet, float]:
        """
        The values of the samples named *sample_name* whose labels include
        *labels*, by their full label sets.
        """
        family = self.family_of(sample_name)
        if family is None:
            return {}
        wanted = labels.items()
        return {
            sample_labels: value
            for (name, sample_labels), value in family.samples.items()
            if name == sample_name and wanted <= dict(sample_labels).items()
        }


def take(registry: CollectorRegistry) -> Snapshot:
    """
    Collect *registry* once.
    """
    families: dict[str, Family] = {}
    for metric in registry.collect():
        family = families.setdefault(
            metric.name, Family(metric.name, metric.type)
        )
        for sample in metric.samples:
            key = (sample.name, label_set(sample.labels))
            family.samples[key] = float(sample.value)
    return Snapshot(families)


def check_summable(
    sample_name: str, labels: Mapping[str, str], found: Iterable[LabelSet]
) -> None:
    """
    Refuse to add up buckets or quantiles: name the one label that picks
    one.

    Raises:
        ValueError: The samples found differ in ``le`` or ``quantile``.
    """
    found = list(found)
    for series_label in _SERIES_LABELS:
        values = {dict(labels_).get(series_label) for labels_ in found}
        if len(values) > 1:
            raise ValueError(
                f"{sample_name} has a sample per {series_label!r}: name one "
                f"({series_label}=...) rather than add them up; labels "
                f"given: {dict(labels)}"
            )
