"""The allowlist of `pgha config set`: decided by pg_settings context and category, values that load code."""

from __future__ import annotations

import pytest

from flows.config import reset_values
from stack.parameters import category_refusal, custom_refusal, library_list, library_refusal
from stack.rolling import Setting, check_parameter
from stack.spec import ClusterSpec

LIBS = {"pg_stat_statements", "auto_explain", "sepgsql", "llvmjit"}


def s(name: str, category: str, context: str = "sighup", vartype: str = "string") -> Setting:
    return Setting(name, context, vartype, category=category)


@pytest.mark.parametrize(("name", "category", "context"), [
    ("work_mem", "Resource Usage / Memory", "user"),
    ("autovacuum_naptime", "Autovacuum", "sighup"),
    ("log_min_duration_statement", "Reporting and Logging / When to Log", "superuser"),
    ("log_connections", "Reporting and Logging / What to Log", "superuser-backend"),
    ("random_page_cost", "Query Tuning / Planner Cost Constants", "user"),
    ("hot_standby_feedback", "Replication / Standby Servers", "sighup"),
    ("max_connections", "Connections and Authentication / Connection Settings", "postmaster"),
    ("checkpoint_timeout", "Write-Ahead Log / Checkpoints", "sighup"),
    ("statement_timeout", "Client Connection Defaults / Statement Behavior", "user"),
])
def test_tuning_categories_are_allowed(name: str, category: str, context: str) -> None:
    assert category_refusal(name, context, category) is None


@pytest.mark.parametrize(("name", "category", "needle"), [
    ("log_directory", "Reporting and Logging / Where to Log", "wherever the postgres user can write"),
    ("logging_collector", "Reporting and Logging / Where to Log", "where the server log goes"),
    ("zero_damaged_pages", "Developer Options", "developer options"),
    ("pre_auth_delay", "Developer Options", "developer options"),
    ("krb_server_keyfile", "Connections and Authentication / Authentication", "authentication is pgha's"),
    ("external_pid_file", "File Locations", "file locations"),
    ("recovery_end_command", "Write-Ahead Log / Archive Recovery", "shell command"),
    ("recovery_target_time", "Write-Ahead Log / Recovery Target", "pgha restore"),
    ("dynamic_library_path", "Client Connection Defaults / Other Defaults", "any directory"),
    ("something_new", "Brand New Group", "category 'Brand New Group'"),
])
def test_other_categories_are_refused_with_the_reason(name: str, category: str, needle: str) -> None:
    assert needle in (category_refusal(name, "sighup", category) or "")


def test_internal_context_is_refused() -> None:
    assert "compiled" in (category_refusal("block_size", "internal", "Preset Options") or "")


def test_library_lists() -> None:
    assert library_list(' pg_stat_statements, "auto_explain" ,') == ["pg_stat_statements", "auto_explain"]
    assert library_list("") == []
    assert library_refusal("shared_preload_libraries", "pg_stat_statements,auto_explain", LIBS) is None
    assert library_refusal("shared_preload_libraries", "pg_stat_statements.so", LIBS) is None
    assert "no library 'x' in $libdir" in (library_refusal("session_preload_libraries", "x", LIBS) or "")
    # local_preload_libraries loads from $libdir/plugins only
    assert "$libdir/plugins" in (library_refusal("local_preload_libraries", "auto_explain", LIBS) or "")
    assert library_refusal("local_preload_libraries", "auto_explain", LIBS | {"plugins/auto_explain"}) is None
    for path in ("/tmp/evil", "$libdir/x", "../x", "a b"):
        assert "not a bare library name" in (library_refusal("shared_preload_libraries", path, LIBS) or "")
    assert library_refusal("jit_provider", "llvmjit", LIBS) is None
    assert library_refusal("jit_provider", "mine", LIBS)


def test_check_parameter_judges_what_the_value_loads() -> None:
    sess = s("session_preload_libraries", "Client Connection Defaults / Shared Library Preloading", "superuser")
    local = s("local_preload_libraries", "Client Connection Defaults / Shared Library Preloading", "user")
    err = check_parameter("local_preload_libraries", "x", local, libraries=LIBS)
    assert err and err.startswith("local_preload_libraries=x refused") and "$libdir/plugins" in err
    assert check_parameter("session_preload_libraries", "auto_explain", sess, libraries=LIBS) is None
    assert "cannot be changed" in (check_parameter("dynamic_library_path", "/tmp", None) or "")
    log = s("log_directory", "Reporting and Logging / Where to Log")
    assert "cannot be changed" in (check_parameter("log_directory", "/tmp", log) or "")


def test_dotted_parameters_need_a_preloaded_library() -> None:
    assert custom_refusal("pg_stat_statements.max", ["pg_stat_statements"]) is None
    assert custom_refusal("auto_explain.log_min_duration", ["auto_explain.so"]) is None
    assert "no library the server preloads defines 'myapp.'" in (custom_refusal("myapp.x", []) or "")
    known = Setting("pg_stat_statements.max", "postmaster", "integer", "100", "1073741823",
                    category="Customized Options")
    assert check_parameter("pg_stat_statements.max", "500", known, preloaded=["pg_stat_statements"]) is None
    assert check_parameter("pg_stat_statements.max", "500", known, preloaded=[])


def test_a_reset_goes_back_to_pgha_s_value_or_out_of_the_configuration() -> None:
    spec = ClusterSpec(postgres_parameters={"max_connections": "300", "work_mem": "8MB"})
    got = reset_values(spec, {"max_connections": "", "work_mem": "", "local_preload_libraries": "",
                              "statement_timeout": "5s"})
    assert got["max_connections"] == 100  # pgha's own value without the user's
    assert got["work_mem"] != "8MB"  # derived from the node's memory limit
    assert got["local_preload_libraries"] is None  # removed: PostgreSQL's default
    assert got["statement_timeout"] == "5s"
