from __future__ import annotations

import subprocess
import sys

import pytest

from include.mlops.domain.routing import bucket, goes_to_challenger

pytestmark = pytest.mark.unit

IDS = [f"20130301-AA{i:04d}-JFK-{i % 2400:04d}" for i in range(20_000)]


@pytest.mark.parametrize("share", [0.05, 0.2, 0.5, 0.9])
def test_share_of_entities_sent_to_the_challenger_is_within_tolerance(share):
    picked = sum(goes_to_challenger(bucket(e, "m"), share) for e in IDS) / len(IDS)
    assert abs(picked - share) < 0.015  # binomial sd at n=20000 is at most 0.0035


def test_edge_shares_send_nobody_or_everybody():
    assert not any(goes_to_challenger(bucket(e, "m"), 0.0) for e in IDS)
    assert all(goes_to_challenger(bucket(e, "m"), 1.0) for e in IDS)
    assert all(0.0 <= bucket(e) < 1.0 for e in IDS[:1000])


def test_routing_is_sticky_and_raising_the_share_only_adds_entities():
    at_10 = {e for e in IDS if goes_to_challenger(bucket(e, "m"), 0.1)}
    again = {e for e in IDS if goes_to_challenger(bucket(e, "m"), 0.1)}
    at_20 = {e for e in IDS if goes_to_challenger(bucket(e, "m"), 0.2)}
    assert at_10 == again
    assert at_10 < at_20


def test_bucket_is_stable_across_processes_not_pythons_randomized_hash():
    code = "from include.mlops.domain.routing import bucket; print(repr([bucket(e, 'm') for e in ('a', 'flight-1', 'é')]))"
    outs = set()
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PYTHONPATH": "."}
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip())
    assert outs == {repr([bucket(e, "m") for e in ("a", "flight-1", "é")])}


def test_the_salt_gives_each_model_its_own_canary():
    a = {e for e in IDS if goes_to_challenger(bucket(e, "model_a"), 0.2)}
    b = {e for e in IDS if goes_to_challenger(bucket(e, "model_b"), 0.2)}
    overlap = len(a & b) / len(a)
    assert abs(overlap - 0.2) < 0.05  # independent: about share of a is also in b


def test_serving_routes_with_the_domain_split_the_backtest_uses():
    from include.mlops.domain import routing
    from include.mlops.serving import models
    from include.mlops.serving import routing as serving_routing

    assert serving_routing.bucket is routing.bucket and serving_routing.goes_to_challenger is routing.goes_to_challenger
    assert models.bucket is routing.bucket and models.goes_to_challenger is routing.goes_to_challenger
