"""Client side: producer, consumer and admin logic that the CLI and Python users call."""
