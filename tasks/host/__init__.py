"""The host pgha runs on: its state directory (passwords, rendered configs, specs), the
per-cluster lock, and files it writes there (drill charts). The only code that touches them."""
