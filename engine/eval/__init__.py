"""Metrics, `livehead eval`, EchoMimic parity, benchmark helpers; imports runtime, synth, motion and below."""
