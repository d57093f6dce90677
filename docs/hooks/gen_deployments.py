"""Generated reference: deployments (filled in by the reference work)."""


def render() -> str:
    return "_(generated deployments reference goes here)_\n"
