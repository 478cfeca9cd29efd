"""GET /metrics: the live server's figures in the Prometheus text format (version 0.0.4).

Per session (label session="<id>"): video fps over the last 2 s, frame-queue depth, buffered output
audio, mic queue depth (aiortc's incoming queue), first-frame delay (first mic audio → first generated
frame sent) and A/V offset (mean content delay of video − of audio: > 0 means the picture trails).
Server-wide: sessions, capacity, latency, worker batches and counters (closed sessions included).
"""

from __future__ import annotations

import asyncio
import os
import time


def _line(out: list[str], name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    for labels, value in samples:
        out.append(f"{name}{labels} {value:.6g}")


def resident_bytes(pid: int | str = "self") -> int:
    """A process's resident memory (this one by default; Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def render(server) -> str:
    now = time.monotonic()
    live = [(p.id, p.media, p) for p in list(server.peers.values()) if p.media is not None]
    out: list[str] = []

    def per(fn) -> list[tuple[str, float]]:
        rows = []
        for sid, media, peer in live:
            value = fn(media, peer)
            if value is not None:
                rows.append((f'{{session="{sid}"}}', float(value)))
        return rows

    def total(key: str, attr: str) -> float:
        return server.totals[key] + sum(getattr(m, attr) for _, m, _ in live)

    _line(out, "livehead_sessions", "gauge", "Live WebRTC sessions.", [("", len(live))])
    _line(out, "livehead_max_sessions", "gauge", "Session limit (--max-sessions).", [("", server.config.max_sessions)])
    _line(out, "livehead_sessions_total", "counter", "Offers accepted since start.", [("", server.sessions_total)])
    _line(out, "livehead_offers_rejected_total", "counter", "Offers or uploads refused, by reason.",
          [(f'{{reason="{k}"}}', v) for k, v in server.rejected.items()])
    _line(out, "livehead_capacity_sessions", "gauge", "Real-time sessions this machine holds (measured at start).",
          [("", server.capacity or 0)])
    _line(out, "livehead_latency_seconds", "gauge", "Input-to-output delay of a session on an idle server.",
          [("", server.latency or 0.0)])
    _line(out, "livehead_process_resident_bytes", "gauge", "Resident memory of the server process.",
          [("", resident_bytes())])
    pool = getattr(server.runners, "render_process", None)
    _line(out, "livehead_render_process_resident_bytes", "gauge",
          "Resident memory of the render process (motion tier; 0 without one).",
          [("", resident_bytes(pool.pid) if pool is not None and pool.pid else 0)])
    _line(out, "livehead_event_loop_tasks", "gauge", "Tasks alive on the server's event loop.",
          [("", len(asyncio.all_tasks()))])
    _line(out, "livehead_clip_compute_seconds", "gauge", "One clip's compute measured at start.",
          [("", server.compute_s or 0.0)])
    w = server.worker
    _line(out, "livehead_worker_batches_total", "counter", "Denoising batches run.", [("", w.batches)])
    _line(out, "livehead_worker_clips_total", "counter", "Clips generated.", [("", w.clips)])
    _line(out, "livehead_worker_errors_total", "counter", "Batches that failed.", [("", w.errors)])
    _line(out, "livehead_worker_last_batch_size", "gauge", "Clips in the latest batch.", [("", w.last_batch)])
    _line(out, "livehead_worker_last_batch_seconds", "gauge", "Duration of the latest batch.", [("", w.last_batch_s)])
    _line(out, "livehead_worker_busy_seconds_total", "counter", "Time spent denoising.", [("", w.busy_s)])
    _line(out, "livehead_worker_decode_seconds_total", "counter", "Time spent decoding (overlaps denoising).",
          [("", w.decode_busy_s)])
    _line(out, "livehead_frames_generated_total", "counter", "Video frames generated.",
          [("", total("frames_generated", "generated"))])
    _line(out, "livehead_video_frames_sent_total", "counter", "Video ticks sent (25 per second per session).",
          [("", total("video_ticks", "video_ticks"))])
    _line(out, "livehead_video_repeated_frames_total", "counter", "Ticks that repeated the last frame (underrun).",
          [("", total("repeat_ticks", "repeat_ticks"))])
    _line(out, "livehead_video_late_frames_total", "counter", "Generated frames skipped because they came late.",
          [("", total("skipped", "skipped"))])
    _line(out, "livehead_clips_skipped_total", "counter", "Clips skipped to stay in sync (generation too slow).",
          [("", total("skipped_clips", "skipped_clips"))])
    _line(out, "livehead_mic_chunks_dropped_total", "counter", "Mic chunks dropped (peer ahead of real time).",
          [("", total("mic_dropped", "mic_dropped"))])
    _line(out, "livehead_clears_total", "counter", "Barge-in clears.", [("", total("clears", "clears"))])
    _line(out, "livehead_session_latency_seconds", "gauge", "Input-to-output delay of each session.",
          per(lambda m, p: m.latency))
    _line(out, "livehead_video_fps", "gauge", "Video frames sent per second over the last 2 s.",
          per(lambda m, p: m.fps_now))
    _line(out, "livehead_frame_queue_depth", "gauge", "Generated frames waiting to be shown.",
          per(lambda m, p: len(m.session.pending)))
    _line(out, "livehead_audio_buffer_seconds", "gauge", "Timeline audio buffered ahead of playback.",
          per(lambda m, p: m.buffered_audio_s(now)))
    _line(out, "livehead_mic_queue_depth", "gauge", "Frames in aiortc's incoming mic queue (should stay ~0).",
          per(lambda m, p: m.mic_queue_depth()))
    _line(out, "livehead_first_frame_delay_seconds", "gauge", "First mic audio to first generated frame sent.",
          per(lambda m, p: m.first_frame_delay))
    recent = list(server.first_frame_delays)
    _line(out, "livehead_first_frame_delay_recent_seconds", "gauge",
          "Mean first-frame delay of the latest closed sessions.", [("", sum(recent) / len(recent))] if recent else [])
    _line(out, "livehead_av_offset_seconds", "gauge", "Video content delay minus audio content delay (last 2 s).",
          per(lambda m, p: m.av_offset))
    _line(out, "livehead_camera_frames_tracked", "gauge", "Camera frames tracked (sessions driven by a camera).",
          per(lambda m, p: p.camera.tracked if p.camera is not None else None))
    _line(out, "livehead_camera_frames_dropped", "gauge", "Camera frames dropped because tracking fell behind.",
          per(lambda m, p: p.camera.dropped if p.camera is not None else None))
    _line(out, "livehead_camera_frames_without_face", "gauge", "Tracked camera frames that showed no face.",
          per(lambda m, p: p.camera.without_face if p.camera is not None else None))
    _line(out, "livehead_camera_track_seconds", "gauge", "Median face-tracking time of a camera frame.",
          per(lambda m, p: p.camera.figures()["track_ms"] / 1000
              if p.camera is not None and p.camera.track_ms else None))
    return "\n".join(out) + "\n"
