"""What scheduling does with the events it consumes: one function per event type."""

HANDLERS = {}
