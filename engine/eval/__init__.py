"""Metrics, `livehead eval`, EchoMimic parity, benchmark helpers; imports runtime, synth and below."""
