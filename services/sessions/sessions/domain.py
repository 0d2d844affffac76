"""Sessions rules: no Flask, no database session, no pika."""
