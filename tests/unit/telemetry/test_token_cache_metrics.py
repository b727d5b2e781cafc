"""The verified-token cache's size and counters on /metrics, read from the cache at scrape
time."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.identity.token_cache import CacheStats
from app.telemetry.metrics import Metrics


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_token_cache_figures_are_read_at_every_scrape() -> None:
    metrics = Metrics()
    stats = [CacheStats(entries=0, capacity=100, hits=0, misses=0, evictions=0)]
    metrics.watch_token_cache(lambda: stats[-1])
    first = scraped(metrics)
    assert first[("ztauthz_token_cache_entries", ())] == 0
    assert first[("ztauthz_token_cache_capacity", ())] == 100
    stats.append(CacheStats(entries=7, capacity=100, hits=40, misses=9, evictions=2))
    later = scraped(metrics)
    assert later[("ztauthz_token_cache_entries", ())] == 7
    assert later[("ztauthz_token_cache_lookups_total", (("result", "hit"),))] == 40
    assert later[("ztauthz_token_cache_lookups_total", (("result", "miss"),))] == 9
    assert later[("ztauthz_token_cache_evictions_total", ())] == 2
