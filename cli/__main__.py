"""`python -m cli`: the same as the `pgha` console script."""

from cli.app import main

main()
