"""What records does with the events it consumes: one function per event type."""

HANDLERS = {}
