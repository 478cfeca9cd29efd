"""`livehead live`: the local microphone/file app with its Tk window; imports server.backends, engine."""
