"""Training stages and their data, distillation, Whisper conversion, motion space; imports runtime, motion and below."""
