"""Benchmarks of the clinic platform; run the scripts in this directory directly (see README.md)."""
