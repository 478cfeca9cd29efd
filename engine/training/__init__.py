"""Training stages, their data and options, distillation, Whisper conversion; imports runtime and below."""
