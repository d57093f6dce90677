"""Test and benchmark helpers that are not shipped with pgha (the packages are flows, tasks, stack)."""
