"""Generated reference: spec (filled in by the reference work)."""


def render() -> str:
    return "_(generated spec reference goes here)_\n"
