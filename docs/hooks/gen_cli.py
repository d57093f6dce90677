"""Generated reference: cli (filled in by the reference work)."""


def render() -> str:
    return "_(generated cli reference goes here)_\n"
