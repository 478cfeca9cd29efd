"""A Python WebRTC client of `livehead serve` (audio in, frames out); imports server.webrtc's pacing, engine."""
