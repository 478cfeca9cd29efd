"""Audio/video files, faces, MediaPipe landmarks, image warps, the bundled demo; imports engine.common."""
