"""The `livehead` command, one module per subcommand; may import every other room of server, export and engine."""
