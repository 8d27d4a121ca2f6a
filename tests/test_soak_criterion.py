"""The soak's RSS criterion (tests/soak.py) on RSS series: noise without a trend passes, a leak
fails. The simulated series are seeded; the measured ones come from two soak runs on this
project's 2-core CPU under load (December 2026)."""

import random

import soak

# tests/soak.py 40 (no leak): rss after each prompt, MB.
MEASURED_CLEAN = [1035, 1035, 1036, 1036, 1036, 1036, 1036, 1036, 1036, 1036, 1038, 1038, 1038, 1038, 1038, 1038,
                  1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038, 1038,
                  1038, 1038, 1038, 1039, 1039, 1039, 1039, 1039]
# tests/soak.py 24 --window 6 --inject-leak-mb 8 --no-replay.
MEASURED_LEAK = [1036, 1037, 1052, 1056, 1091, 1110, 1103, 1103, 1130, 1111, 1119, 1137, 1154, 1162, 1150, 1176,
                 1177, 1194, 1182, 1202, 1209, 1227, 1214, 1222]
BOUND = 2.0


def noisy(seed, leak, kind, n=40):
    r = random.Random(seed)
    if kind == "spikes":  # transient allocations: up to +90 MB on half the prompts
        return [1000 + leak * i + (r.uniform(0, 90) if r.random() < 0.5 else 0) for i in range(n)]
    if kind == "steps":  # pools grown and returned: -90, 0 or +90 MB
        return [1000 + leak * i + r.choice([-90, 0, 90]) for i in range(n)]
    return [1000 + leak * i + r.uniform(-90, 90) for i in range(n)]  # the worst case: anywhere in +-90


def test_measured_series():
    assert not soak.rss_grows(MEASURED_CLEAN, soak.ROTATION, soak.ROTATION, BOUND)
    assert soak.rss_grows(MEASURED_LEAK, soak.ROTATION, 6, BOUND)


def test_noise_of_90_mb_without_a_trend_passes_and_a_leak_fails():
    for kind, worst_false_alarms in (("spikes", 0), ("steps", 2), ("uniform", 8)):
        alarms = sum(soak.rss_grows(noisy(s, 0, kind), soak.ROTATION, soak.ROTATION, BOUND) for s in range(400))
        caught = sum(soak.rss_grows(noisy(s, 8, kind), soak.ROTATION, soak.ROTATION, BOUND) for s in range(400))
        assert alarms <= worst_false_alarms, (kind, alarms)
        assert caught >= 396, (kind, caught)
    # The criterion it replaces (two single samples, 64 MB) alarms on the same noise.
    old = sum(noisy(s, 0, "uniform")[36] - noisy(s, 0, "uniform")[12] > 64 for s in range(400))
    assert old > 40
