"""A shortened soak (benchmarks/soak.py): `livehead serve` in its own process, one call with A/V offset, memory
and event-loop tasks sampled, then connect/disconnect cycles. The full run is 60 minutes and 100 cycles
(`benchmarks/results/soak.json`); here 40 s and 10 cycles, with the same flatness rules."""

from __future__ import annotations

import pytest

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_short_soak_keeps_sync_memory_and_tasks_flat():
    from benchmarks.soak import run

    result = run(minutes=40 / 60, every=10.0, cycles=10, size=128, rss_slack_mb=30.0)
    verdict = result["pass"]
    print(verdict)
    assert len(result["samples"]) >= 3
    assert verdict["av_offset_within_40ms"], result["samples"]
    assert verdict["call_rss_flat"], result["samples"]
    assert verdict["video_fps_ok"], result["samples"]
    assert verdict["cycles_rss_flat"] and verdict["cycles_tasks_flat"] and verdict["cycles_sessions_closed"], \
        (result["cycles_before"], result["cycles_after"])
