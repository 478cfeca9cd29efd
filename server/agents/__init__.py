"""Adapters for voice-agent frameworks (Pipecat, LiveKit Agents) around one `Session`; imports the engine only."""
