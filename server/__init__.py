"""The front ends: the `livehead` command, the WebRTC server, the desktop app, the client; may import
export and engine, and nothing imports it."""
