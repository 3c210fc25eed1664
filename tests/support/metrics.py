"""Scraping GET /metrics the way Prometheus does, parsed by prometheus_client's own parser."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    """One scrape: every metric family by name (a counter's without `_total`), and its samples."""

    families: dict[str, list[Sample]]

    def value(self, sample: str, **labels: str) -> float:
        """The value of the sample `sample` (`…_total`, `…_count`, …) with these labels; 0 when absent."""
        found = [s.value for s in self.samples(sample) if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, f"{sample}{labels} matches {len(found)} samples: name every label"
        return found[0] if found else 0.0

    def samples(self, sample: str) -> list[Sample]:
        return [s for samples in self.families.values() for s in samples if s.name == sample]

    def labelled(self, sample: str, label: str) -> dict[str, float]:
        """{value of `label`: sample value} for a sample with that one label."""
        return {s.labels[label]: s.value for s in self.samples(sample)}


def parse(text: str) -> Scrape:
    return Scrape({family.name: list(family.samples) for family in text_string_to_metric_families(text)})


def scrape(base_url: str, timeout: float = 15) -> Scrape:
    response = httpx.get(f"{base_url}/metrics", timeout=timeout)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return parse(response.text)
