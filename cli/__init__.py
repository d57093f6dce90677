"""The `pgha` command line: one module per area, the app and its decorator in `cli.app`."""
