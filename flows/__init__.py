"""pgha's Prefect flows, one module per operation, and the `pgha` CLI that runs them."""
