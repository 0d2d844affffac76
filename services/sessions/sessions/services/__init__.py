"""Sessions' use cases: one function per command, each given a unit of work."""
