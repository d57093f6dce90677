"""Generated reference: the Prefect deployments (`prefect.yaml`) and the alerts (`deployments/alerts.yaml`).

Each deployment with its full name (`flow/deployment`, as `prefect deployment run` takes it),
entrypoint, schedules (cron and in words), tags, parameters, concurrency limit and description;
the flow's own parameters are read from its source (no Prefect import). The alerts are read
with `stack.alerts`, the same code `pgha alerts apply` uses.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml
from mdtext import md

ROOT = Path(__file__).resolve().parent.parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"
PLACEHOLDER_SCOPE = "SCOPE"
_NAMES: dict[str, dict[str, ast.expr]] = {}  # per flow file: its module-level names (filled by flow_def)
DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def deployments() -> list[dict[str, Any]]:
    data = yaml.safe_load(PREFECT_YAML.read_text()) or {}
    return list(data.get("deployments") or [])


def module_names(tree: ast.Module) -> dict[str, ast.expr]:
    """The module's plain `NAME = value` assignments (type aliases, constants), to show a
    parameter's type and default as a reader needs them rather than by their alias."""
    return {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def shown(expr: ast.expr, names: dict[str, ast.expr]) -> str:
    """`Annotated[T, ...]` as T (an alias resolved first); a constant's name as its literal value."""
    if isinstance(expr, ast.Name) and isinstance(names.get(expr.id), (ast.Constant, ast.Subscript)):
        expr = names[expr.id]
    if isinstance(expr, ast.Subscript) and getattr(expr.value, "id", "") == "Annotated" \
            and isinstance(expr.slice, ast.Tuple):
        return shown(expr.slice.elts[0], names)
    if isinstance(expr, ast.BinOp):  # `Annotated[...] | None`
        return f"{shown(expr.left, names)} | {shown(expr.right, names)}"
    return ast.unparse(expr)


def flow_def(entrypoint: str) -> tuple[str, ast.FunctionDef | None]:
    """(the flow's name, its function) for `path.py:function`: `@flow(name=...)`, else Prefect's default."""
    path, _, func = entrypoint.partition(":")
    tree = ast.parse((ROOT / path).read_text())
    _NAMES[entrypoint.partition(":")[0]] = module_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == func:
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "flow":
                    for kw in deco.keywords:
                        if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                            return str(kw.value.value), node
            return func.replace("_", "-"), node
    return func.replace("_", "-"), None


def full_name(dep: dict[str, Any]) -> str:
    return f"{flow_def(dep['entrypoint'])[0]}/{dep['name']}"


def flow_parameters(fn: ast.FunctionDef | None, names: dict[str, ast.expr] | None = None) -> list[tuple[str, str, str]]:
    """(name, annotation, default) of each parameter of the flow function (`names`: its module's, see `shown`)."""
    if fn is None:
        return []
    names = names or {}
    args = fn.args.args + fn.args.kwonlyargs
    defaults: list[ast.expr | None] = [None] * (len(fn.args.args) - len(fn.args.defaults))
    defaults += list(fn.args.defaults) + list(fn.args.kw_defaults)
    return [(a.arg, shown(a.annotation, names) if a.annotation else "", shown(d, names) if d is not None else "")
            for a, d in zip(args, defaults, strict=True)]


def _at(minute: str, hour: str) -> str | None:
    if minute.isdigit() and hour.isdigit():
        return f"at {int(hour):02d}:{int(minute):02d}"
    return None


def _days(dow: str) -> str | None:
    if dow == "*":
        return "every day"
    if dow.isdigit():
        return f"every {DAYS[int(dow) % 7]}"
    if "-" in dow and all(p.isdigit() for p in dow.split("-")):
        a, b = (int(p) % 7 for p in dow.split("-"))
        return f"{DAYS[a]} to {DAYS[b]}"
    if all(p.isdigit() for p in dow.split(",")):
        return "on " + ", ".join(DAYS[int(p) % 7] for p in dow.split(","))
    return None


def cron_words(cron: str) -> str:
    """The common cron shapes in words ("every Sunday at 04:00"); "" for anything else."""
    fields = cron.split()
    if len(fields) != 5:
        return ""
    minute, hour, dom, month, dow = fields
    if dom != "*" or month != "*":
        return ""
    if minute.startswith("*/") and hour == "*" and dow == "*":
        return f"every {minute[2:]} minutes"
    at, days = _at(minute, hour), _days(dow)
    return f"{days} {at}" if at and days else ""


def schedule_text(s: dict[str, Any]) -> str:
    tz = s.get("timezone", "UTC")
    if "cron" in s:
        words = cron_words(str(s["cron"]))
        return f"`{s['cron']}` ({tz})" + (f": {words}" if words else "")
    if "interval" in s:
        return f"every {s['interval']} s"
    if "rrule" in s:
        return f"`{s['rrule']}`"
    return "`" + yaml.safe_dump(s, default_flow_style=True).strip() + "`"


def schedules(dep: dict[str, Any]) -> list[str]:
    out = [schedule_text(s) for s in dep.get("schedules") or [] if s.get("active", True)]
    if "schedule" in dep and dep["schedule"]:
        out.append(schedule_text(dep["schedule"]))
    return out


def concurrency(dep: dict[str, Any]) -> str:
    limit = dep.get("concurrency_limit")
    if isinstance(limit, dict):
        strategy = limit.get("collision_strategy")
        return f"{limit.get('limit')}" + (f" ({strategy})" if strategy else "")
    return str(limit) if limit is not None else "none"


def slug(name: str) -> str:
    """The anchor of a deployment's heading: `health-audit/default` -> `health-audit-default`."""
    return name.replace("/", "-").lower()


def summary(deps: list[dict[str, Any]]) -> list[str]:
    out = ["| Deployment | Schedule | Tags |", "| --- | --- | --- |"]
    for d in deps:
        name = full_name(d)
        when = "; ".join(s.split(": ", 1)[-1] if ": " in s else s for s in schedules(d)) or "on demand"
        out.append(f"| [`{name}`](#{slug(name)}) | {when} | {', '.join(f'`{t}`' for t in d.get('tags') or [])} |")
    return [*out, ""]


def section(dep: dict[str, Any]) -> list[str]:
    name = full_name(dep)
    _, fn = flow_def(dep["entrypoint"])
    out = [f"### {name} {{#{slug(name)}}}", "", md(str(dep.get("description", ""))), ""]
    facts = [("Flow", f"`{dep['entrypoint']}`"),
             ("Schedule", "<br>".join(schedules(dep)) or "none (run on demand)"),
             ("Tags", ", ".join(f"`{t}`" for t in dep.get("tags") or []) or "none"),
             ("Work pool", f"`{(dep.get('work_pool') or {}).get('name', '')}`"),
             ("Concurrency limit", concurrency(dep)),
             ("Parameters set", ", ".join(f"`{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}`"
                                          for k, v in (dep.get("parameters") or {}).items()) or "none")]
    out += ["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in facts), ""]
    params = flow_parameters(fn, _NAMES.get(dep["entrypoint"].partition(":")[0]))
    if params:
        out += ["The flow's parameters (a run may set these and no others; `scope` names a cluster `pgha up` "
                "brought up on the worker's host):", ""]
        out += ["| Parameter | Type | Default |", "| --- | --- | --- |"]
        out += [f"| `{n}` | `{a}` | {f'`{d}`' if d else 'required'} |" for n, a, d in params]
        out.append("")
    return out


def alerts() -> list[str]:
    from stack.alerts import ALERTS_FILE, load_alerts, silence_alerts, unhealthy_alert

    cfg = load_alerts(ALERTS_FILE)
    n = cfg.notification
    out = ["## Alerts", "",
           f"Defined in `deployments/alerts.yaml` and applied by `pgha server start` and `pgha alerts apply`. "
           f"They notify through the notification block `{n.block}` (kind `{n.kind}`); the "
           "[alerts guide](../howto/alerts.md) says how to point it at Slack, e-mail or a webhook.", "",
           "| Alert | Fires when | Meaning |", "| --- | --- | --- |"]
    for a in cfg.alerts:
        when = f"a flow run tagged {', '.join(f'`{t}`' for t in a.tags)} ends {' or '.join(a.states)}"
        out.append(f"| `{a.name}`{'' if a.enabled else ' (disabled)'} | {when} | {md(a.description)} |")
    for e in silence_alerts(cfg, [PLACEHOLDER_SCOPE]) + unhealthy_alert(cfg):
        events = " or ".join(f"`{x}`" for x in e.trigger.get("expect", []))
        resource = e.trigger.get("match", {}).get("prefect.resource.id", "")
        if e.trigger.get("posture") == "Proactive":
            when = f"no event {events} for `{resource}` within {e.trigger.get('within')} s"
        else:
            when = f"an event {events} for `{resource}`"
        out.append(f"| `{e.name}` | {when} | {md(e.description)} |")
    out += ["", f"`{PLACEHOLDER_SCOPE}` stands for each cluster brought up from this state directory (or each "
            "`pgha alerts apply --scope`): the silence alerts are made once per cluster.", ""]
    return out


def render() -> str:
    deps = deployments()
    out = ["## Summary", "", *summary(deps), "## Deployments", ""]
    for d in deps:
        out += section(d)
    return "\n".join(out + alerts())
