"""The ``initwise`` command line: thin subcommands over the public API (one module per subcommand)."""
