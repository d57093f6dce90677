"""NodeExec: a command's output cut by the engine is told apart from an empty success."""

from __future__ import annotations

from typing import Any

from tasks.node_exec import EXIT_LOST, EXIT_MARK, NodeExec, split_mark


def test_the_mark_is_taken_off_stderr_with_its_code() -> None:
    assert split_mark(f"boom\n\n{EXIT_MARK}3\n") == ("boom\n", 3)
    assert split_mark(f"\n{EXIT_MARK}0\n") == ("", 0)
    assert split_mark("warning only") == ("warning only", None)  # cut before the mark


class _Api:
    """An engine API whose streams come back as scripted (the first ones cut short)."""

    def __init__(self, streams: list[tuple[bytes | None, bytes | None]]) -> None:
        self.streams = streams
        self.created: list[list[str]] = []
        self.inspected = 0

    def exec_create(self, _cid: str, cmd: list[str], user: str = "") -> dict[str, str]:
        self.created.append(cmd)
        return {"Id": str(len(self.created))}

    def exec_start(self, _eid: str, demux: bool = True) -> tuple[bytes | None, bytes | None]:
        return self.streams[len(self.created) - 1]

    def exec_inspect(self, _eid: str) -> dict[str, Any]:
        self.inspected += 1
        return {"Running": False, "ExitCode": 0}


class _Engine:
    name = "fake"

    def __init__(self, api: _Api) -> None:
        self.ct = type("Ct", (), {"id": "c1", "client": type("Cl", (), {"api": api})()})()

    def find_container(self, _name: str) -> object:
        return self.ct


def test_a_cut_output_is_a_failure_and_a_read_asks_again() -> None:
    ok = (b"[]\n", f"\n{EXIT_MARK}0\n".encode())
    api = _Api([(None, None), (None, None), ok])
    n = NodeExec(_Engine(api), "x")  # type: ignore[arg-type]
    r = n.run(["pgbackrest", "info"], retries_if_lost=2)
    assert r.ok and r.out == "[]\n" and r.err == "" and len(api.created) == 3
    # The wrapper runs the command itself under `timeout`, arguments untouched.
    assert api.created[0][:2] == ["sh", "-c"] and api.created[0][3:] == ["pgha-exec", "10", "pgbackrest", "info"]


def test_a_command_with_effects_is_not_run_again() -> None:
    api = _Api([(None, b"partial"), (b"never", None)])
    r = NodeExec(_Engine(api), "x").run(["curl", "-X", "POST", "x"])  # type: ignore[arg-type]
    assert not r.ok and r.lost and r.code == EXIT_LOST and "cut this command's output short" in r.err
    assert len(api.created) == 1


def test_the_marks_code_is_the_exit_code_and_the_engine_is_not_asked() -> None:
    api = _Api([(b"", f"bad\n\n{EXIT_MARK}3\n".encode())])
    r = NodeExec(_Engine(api), "x").run(["false"])  # type: ignore[arg-type]
    assert (r.code, r.err, r.lost) == (3, "bad\n", False) and api.inspected == 0
