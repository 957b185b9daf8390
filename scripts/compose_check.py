#!/usr/bin/env python3
"""Offline checks of the compose stack: docker/compose.yml and every file it
mounts. Run through scripts/compose-validate.sh, which provides jsonschema
and PyYAML in a cached venv. No Docker engine and no network are needed.

The compose file is read as `docker compose` would read it on a host with
none of its variables set (every `${VAR}` must have a default), then checked:

- against the Compose Specification schema (docker/compose-spec.schema.json);
- for what the schema cannot see: bind-mounted files and the build context
  exist, named volumes are declared, `service_healthy` dependencies have
  healthchecks, restart policies, Sluice's read-only root with a writable
  data volume, its healthcheck, stop_grace_period against drain_delay + shutdown_grace;
- against config/examples/compose.toml (parsed with tomllib): its keys are
  fields of src/config, every `${VAR}` it needs is in Sluice's environment,
  published ports match its listeners (admin on 127.0.0.1 only), its Redis
  and PostgreSQL URLs name services of the stack with the right user,
  database and password;
- docker/prometheus.yml scrapes Sluice on the metrics listener's port;
- Grafana's provisioning YAML parses, the data source is the stack's
  Prometheus with a fixed uid, the dashboard provider's folder is where the
  dashboard JSON is mounted, and every data-source reference in the dashboard
  is that uid or its `datasource` variable of the same type.

With SLUICE_BIN set to a built binary, `$SLUICE_BIN check` also loads the
config with the environment compose gives the container.

Problems go to stderr; the last line on stdout is a one-line summary. The
exit status is 1 when any check failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
SCHEMA = DOCKER / "compose-spec.schema.json"
SLUICE_TOML = ROOT / "config" / "examples" / "compose.toml"
SERVICES = ("sluice", "redis", "postgres", "prometheus", "grafana")
SLUICE_HEALTHCHECK = ["CMD", "/usr/local/bin/sluice", "healthcheck"]
SLUICE_DATA = "/var/lib/sluice"
# After [server] shutdown_grace Sluice takes up to 2 s to cut streams and
# 10 s to flush the usage ledger and 10 s for background work; compose must
# wait longer than that.
SHUTDOWN_AFTER_GRACE = 22.0


class Checks:
    """Named checks; each collects its problems."""

    def __init__(self) -> None:
        self.results: list[tuple[str, list[str]]] = []

    def run(self, name: str, fn, *args):
        problems: list[str] = []
        try:
            value = fn(problems, *args)
        except Exception as error:  # a crash in one check is its failure
            problems.append(f"{type(error).__name__}: {error}")
            value = None
        self.results.append((name, problems))
        return value

    def failed(self) -> list[tuple[str, list[str]]]:
        return [(name, problems) for name, problems in self.results if problems]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- interpolation -----------------------------------------------------------

COMPOSE_VAR = re.compile(r"\$\$|\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def compose_interpolate(value, problems: list[str], where: str = ""):
    """Compose's `${VAR}` rules, resolved with no variable set: defaults apply,
    a variable without one is a problem (the stack must start as shipped)."""
    if isinstance(value, dict):
        return {
            k: compose_interpolate(v, problems, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [compose_interpolate(v, problems, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        spec = match.group(1) if match.group(1) is not None else match.group(2)
        for sep in (":-", "-", ":?", "?", ":+", "+"):
            name, found, rest = spec.partition(sep)
            if found and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                if sep in (":-", "-"):
                    return rest
                if sep in (":+", "+"):
                    return ""
                problems.append(f"{where}: `${{{spec}}}` requires {name} to be set")
                return ""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec):
            problems.append(f"{where}: `${{{spec}}}` is not a variable reference")
            return ""
        problems.append(f"{where}: `${{{spec}}}` has no default; the stack must start with it unset")
        return ""

    return COMPOSE_VAR.sub(replace, value)


SLUICE_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")


def sluice_vars(text: str) -> list[tuple[str, str | None]]:
    """The `${VAR}` / `${VAR:-default}` references in a string, as Sluice reads them."""
    refs = []
    for match in SLUICE_VAR.finditer(text):
        if match.group(0) == "$$":
            continue
        name, found, default = match.group(1).partition(":-")
        refs.append((name, default if found else None))
    return refs


def sluice_expand(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, found, default = match.group(1).partition(":-")
        if name in env:
            return env[name]
        if found:
            return default
        raise KeyError(name)

    return SLUICE_VAR.sub(replace, text)


def walk_strings(value, path: str = ""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk_strings(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(value, str):
        yield path, value


# --- small parsers -----------------------------------------------------------

DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    text = str(text).strip()
    if not text or DURATION_PART.sub("", text):
        raise ValueError(f"`{text}` is not a duration like 30s or 1m30s")
    return sum(float(n) * UNIT_SECONDS[u] for n, u in DURATION_PART.findall(text))


def listen_port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def published_ports(service: dict) -> list[tuple[str, str, int]]:
    """(host_ip, host_port, container_port) of each published port."""
    out = []
    for entry in service.get("ports", []) or []:
        if isinstance(entry, dict):
            target = int(entry["target"])
            out.append((str(entry.get("host_ip", "")), str(entry.get("published", "")), target))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            host_ip, host, container = parts
        elif len(parts) == 2:
            host_ip, (host, container) = "", parts
        else:
            host_ip, host, container = "", "", parts[0]
        out.append((host_ip.strip("[]"), host, int(container.split("-")[0])))
    return out


def mounts(service: dict) -> list[dict]:
    """Volumes in long form: {type, source, target, read_only}."""
    out = []
    for entry in service.get("volumes", []) or []:
        if isinstance(entry, dict):
            out.append(
                {
                    "type": entry.get("type", "volume"),
                    "source": entry.get("source"),
                    "target": entry.get("target"),
                    "read_only": bool(entry.get("read_only", False)),
                }
            )
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            out.append({"type": "volume", "source": None, "target": parts[0], "read_only": False})
            continue
        source, target = parts[0], parts[1]
        options = parts[2].split(",") if len(parts) > 2 else []
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        out.append({"type": kind, "source": source, "target": target, "read_only": "ro" in options})
    return out


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def healthcheck_test(service: dict) -> list[str] | None:
    health = service.get("healthcheck")
    if not health or health.get("disable"):
        return None
    test = health.get("test")
    if isinstance(test, str):
        return ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return None
    return [str(t) for t in test]


# --- the checks --------------------------------------------------------------


def load_compose(problems):
    raw = yaml.safe_load(COMPOSE.read_text())
    if not isinstance(raw, dict):
        problems.append(f"{rel(COMPOSE)}: not a YAML mapping")
        return None
    return compose_interpolate(raw, problems)


def check_schema(problems, compose):
    schema = json.loads(SCHEMA.read_text())
    # The schema says draft-07 in a spelling (https, no `#`) that
    # jsonschema does not look up by itself.
    if "draft-07" in str(schema.get("$schema", "")):
        validator_class = jsonschema.Draft7Validator
    else:
        validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    for error in sorted(validator.iter_errors(compose), key=lambda e: list(map(str, e.path))):
        at = "/".join(str(p) for p in error.path) or "(top)"
        problems.append(f"{rel(COMPOSE)}: {at}: {error.message}")


def check_services(problems, compose):
    services = compose.get("services") or {}
    for name in SERVICES:
        if name not in services:
            problems.append(f"services.{name}: missing")
    declared = set((compose.get("volumes") or {}).keys())
    for name, service in services.items():
        if service.get("restart") != "unless-stopped":
            problems.append(f"services.{name}.restart: `unless-stopped` expected")
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {d: {"condition": "service_started"} for d in depends}
        for target, spec in depends.items():
            if target not in services:
                problems.append(f"services.{name}.depends_on: no service `{target}`")
            elif (spec or {}).get("condition") == "service_healthy" and not healthcheck_test(services[target]):
                problems.append(f"services.{name}.depends_on.{target}: service_healthy, but {target} has no healthcheck")
        for mount in mounts(service):
            if mount["type"] == "volume" and mount["source"] and mount["source"] not in declared:
                problems.append(f"services.{name}.volumes: named volume `{mount['source']}` is not declared under volumes:")
    for name, needle in (("redis", ["redis-cli", "ping"]), ("postgres", ["pg_isready"])):
        test = healthcheck_test(services.get(name, {})) or []
        if not all(word in " ".join(test).split() for word in needle):
            problems.append(f"services.{name}.healthcheck: should run `{' '.join(needle)}` (got {test})")


def check_files(problems, compose):
    """Every file or folder the compose file names exists in the repository."""
    count = 0
    for name, service in (compose.get("services") or {}).items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            context_dir = (DOCKER / context).resolve()
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            count += 2
            if not context_dir.is_dir():
                problems.append(f"services.{name}.build.context: {rel(context_dir)} is not a folder")
            elif not (context_dir / dockerfile).is_file():
                problems.append(f"services.{name}.build.dockerfile: {rel(context_dir / dockerfile)} is missing")
        for mount in mounts(service):
            if mount["type"] != "bind":
                continue
            count += 1
            source = (DOCKER / Path(mount["source"]).expanduser()).resolve()
            if not source.exists():
                problems.append(f"services.{name}.volumes: {mount['source']} ({rel(source)}) does not exist")
            elif source.is_dir() and not any(source.iterdir()):
                problems.append(f"services.{name}.volumes: {mount['source']} is an empty folder")
        for env_file in service.get("env_file", []) or []:
            path = env_file if isinstance(env_file, str) else env_file.get("path")
            required = isinstance(env_file, str) or env_file.get("required", True)
            if required and not (DOCKER / path).is_file():
                problems.append(f"services.{name}.env_file: {path} does not exist")
    if count == 0:
        problems.append("no bind mounts or build context found; nothing was checked")


def load_sluice_toml(problems):
    return tomllib.loads(SLUICE_TOML.read_text())


# Tables whose keys are names (models, orgs...) rather than settings.
FREE_KEYED = {"tiers", "orgs", "models", "pricing", "org_budgets", "model_map", "max_wait_by_class", "by_priority"}


def check_toml_keys(problems, config):
    """Each key is a field of the config structs: unknown keys stop Sluice at start-up."""
    sources = list((ROOT / "src" / "config").glob("*.rs")) + list((ROOT / "src" / "degrade").glob("*.rs"))
    if not sources:
        return  # the config layer is not in this checkout; nothing to compare with
    fields = set()
    for source in sources:
        text = source.read_text()
        fields.update(re.findall(r"\bpub(?:\([a-z]+\))?\s+(r#)?([a-z_][a-z0-9_]*)\s*:", text))
        fields.update(re.findall(r"#\[serde\([^)]*rename\s*=\s*\"([a-z_]+)\"", text))
    fields = {f[1] if isinstance(f, tuple) else f for f in fields}

    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                here = f"{path}.{key}" if path else key
                if key not in fields:
                    problems.append(f"{rel(SLUICE_TOML)}: `{here}` is not a config field in src/config")
                if key not in FREE_KEYED:
                    walk(item, here)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")

    walk(config, "")


def check_sluice_service(problems, compose, config):
    service = (compose.get("services") or {}).get("sluice") or {}
    env = environment(service)
    # The variables the config needs are all given to the container.
    for path, text in walk_strings(config):
        for name, default in sluice_vars(text):
            if default is None and name not in env:
                problems.append(f"{rel(SLUICE_TOML)}: {path} needs ${{{name}}}, which services.sluice.environment does not set")
    if "token" in config.get("admin", {}):
        try:
            token = sluice_expand(config["admin"]["token"], env)
        except KeyError:
            token = None  # reported above
        if token is not None and len(token) < 16:
            problems.append("admin.token: the value compose gives is shorter than 16 characters")
    # Config mounted read-only where SLUICE_CONFIG points; data volume writable.
    config_path = env.get("SLUICE_CONFIG", "/etc/sluice/sluice.toml")
    binds = {m["target"]: m for m in mounts(service)}
    config_mount = binds.get(config_path)
    if not config_mount or config_mount["type"] != "bind" or not config_mount["read_only"]:
        problems.append(f"services.sluice.volumes: mount the config read-only at {config_path}")
    elif (DOCKER / config_mount["source"]).resolve() != SLUICE_TOML:
        problems.append(f"services.sluice.volumes: {config_path} should come from {rel(SLUICE_TOML)}")
    data = binds.get(SLUICE_DATA)
    if not data or data["type"] != "volume" or data["read_only"]:
        problems.append(f"services.sluice.volumes: a writable named volume at {SLUICE_DATA} is needed")
    data_dir = config.get("usage", {}).get("data_dir", "data")
    data_dir_abs = data_dir if data_dir.startswith("/") else f"{SLUICE_DATA}/{data_dir}"
    if not (data_dir_abs + "/").startswith(SLUICE_DATA + "/"):
        problems.append(f"usage.data_dir: `{data_dir}` is outside the data volume {SLUICE_DATA}")
    if service.get("read_only") is not True:
        problems.append("services.sluice.read_only: should be true")
    if healthcheck_test(service) != SLUICE_HEALTHCHECK:
        problems.append(f"services.sluice.healthcheck.test: should be {SLUICE_HEALTHCHECK}")
    # Time to drain and flush before SIGKILL.
    grace = seconds(config.get("server", {}).get("shutdown_grace", "30s"))
    drain = seconds(config.get("server", {}).get("drain_delay", "1s"))
    stop = seconds(service.get("stop_grace_period", "10s"))
    if stop <= drain + grace + SHUTDOWN_AFTER_GRACE:
        problems.append(
            f"services.sluice.stop_grace_period: {stop:g}s is not above drain_delay ({drain:g}s) + "
            f"shutdown_grace ({grace:g}s) + {SHUTDOWN_AFTER_GRACE:g}s"
        )
    # Published ports against the listeners.
    ports = published_ports(service)
    api = listen_port(config.get("server", {}).get("listen", "127.0.0.1:8080"))
    if not config.get("server", {}).get("listen", "").startswith("0.0.0.0:"):
        problems.append("server.listen: listen on 0.0.0.0 in a container, or nothing outside it can connect")
    if not any(target == api for _, _, target in ports):
        problems.append(f"services.sluice.ports: the API port {api} ([server] listen) is not published")
    admin = config.get("admin", {}).get("listen")
    if admin:
        admin_port = listen_port(admin)
        for host_ip, _, target in ports:
            if target == admin_port and host_ip not in ("127.0.0.1", "::1"):
                problems.append(f"services.sluice.ports: the admin port {admin_port} is published beyond 127.0.0.1")
        if not any(target == admin_port for _, _, target in ports):
            problems.append(f"services.sluice.ports: the admin port {admin_port} ([admin] listen) is not published")
    return env


def check_store_urls(problems, compose, config, env):
    """Redis and PostgreSQL URLs point at the stack's services, with its credentials."""
    services = compose.get("services") or {}
    redis_url = config.get("redis", {}).get("url")
    if not redis_url:
        problems.append("redis.url: missing")
    else:
        host = urlsplit(sluice_expand(redis_url, env)).hostname
        if host not in services or "redis" not in str(services[host].get("image", "")):
            problems.append(f"redis.url: host `{host}` is not the stack's Redis service")
    if config.get("cache", {}).get("store") != "redis":
        problems.append('cache.store: "redis" expected in the stack')
    pg_env = environment(services.get("postgres", {}))
    for path in ("usage.store", "admin.keys_store", "batch.store"):
        section, key = path.split(".")
        text = config.get(section, {}).get(key)
        if not text or not text.startswith(("postgres://", "postgresql://")):
            problems.append(f"{path}: a postgres:// URL of the stack's database expected")
            continue
        try:
            url = urlsplit(sluice_expand(text, env))
        except KeyError as missing:
            problems.append(f"{path}: ${{{missing.args[0]}}} is not in services.sluice.environment")
            continue
        if url.hostname not in services or "postgres" not in str(services[url.hostname].get("image", "")):
            problems.append(f"{path}: host `{url.hostname}` is not the stack's PostgreSQL service")
        if url.port not in (None, 5432):
            problems.append(f"{path}: port {url.port}; PostgreSQL listens on 5432")
        if url.username != pg_env.get("POSTGRES_USER", "postgres"):
            problems.append(f"{path}: user `{url.username}` is not POSTGRES_USER")
        if url.path.lstrip("/") != pg_env.get("POSTGRES_DB", pg_env.get("POSTGRES_USER", "postgres")):
            problems.append(f"{path}: database `{url.path.lstrip('/')}` is not POSTGRES_DB")
        if url.password != pg_env.get("POSTGRES_PASSWORD"):
            problems.append(f"{path}: the password Sluice gets differs from the postgres service's POSTGRES_PASSWORD")


def check_prometheus(problems, compose, config):
    services = compose.get("services") or {}
    prometheus = services.get("prometheus") or {}
    config_mount = next(
        (m for m in mounts(prometheus) if m["target"] == "/etc/prometheus/prometheus.yml"), None
    )
    if not config_mount:
        problems.append("services.prometheus.volumes: nothing mounted at /etc/prometheus/prometheus.yml")
        return
    scrape = yaml.safe_load((DOCKER / config_mount["source"]).read_text())
    metrics = config.get("metrics", {}).get("listen")
    if not metrics:
        problems.append("metrics.listen: missing; the stack scrapes a dedicated metrics listener")
        return
    port = listen_port(metrics)
    found = False
    for job in scrape.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, target_port = str(target).rpartition(":")
                if host != "sluice":
                    continue
                found = True
                if int(target_port) != port:
                    problems.append(f"prometheus.yml: job {job.get('job_name')} scrapes sluice:{target_port}, [metrics] listen is port {port}")
                if job.get("metrics_path", "/metrics") != "/metrics":
                    problems.append(f"prometheus.yml: job {job.get('job_name')} metrics_path should be /metrics")
                if job.get("scheme", "http") != "http":
                    problems.append(f"prometheus.yml: job {job.get('job_name')} should scrape over http")
    if not found:
        problems.append("prometheus.yml: no scrape target on the sluice service")
    return scrape


def grafana_mount(service: dict, target_prefix: str) -> list[dict]:
    return [m for m in mounts(service) if m["target"].startswith(target_prefix)]


def check_grafana(problems, compose):
    services = compose.get("services") or {}
    grafana = services.get("grafana") or {}
    provisioning = grafana_mount(grafana, "/etc/grafana/provisioning")
    if not provisioning:
        problems.append("services.grafana.volumes: no provisioning mounted under /etc/grafana/provisioning")
        return
    datasources, providers = [], []
    for mount in provisioning:
        source = DOCKER / mount["source"]
        files = sorted(source.rglob("*.y*ml")) if source.is_dir() else [source]
        for path in files:
            doc = yaml.safe_load(path.read_text()) or {}
            if doc.get("apiVersion") != 1:
                problems.append(f"{rel(path)}: apiVersion: 1 expected")
            # Where Grafana sees this file decides what it is.
            inside = mount["target"] + ("/" + str(path.relative_to(source)) if source.is_dir() else "")
            if "/datasources/" in inside + "/":
                datasources += doc.get("datasources", [])
            elif "/dashboards/" in inside + "/":
                providers += doc.get("providers", [])
    prom = [d for d in datasources if d.get("type") == "prometheus"]
    if len(prom) != 1:
        problems.append(f"grafana datasources: exactly one Prometheus data source expected, found {len(prom)}")
        return
    source = prom[0]
    uid = source.get("uid")
    if not uid:
        problems.append("grafana datasources: the Prometheus data source needs a fixed uid")
    if not source.get("isDefault"):
        problems.append("grafana datasources: make Prometheus the default (isDefault), the dashboard's variable picks it")
    url = urlsplit(str(source.get("url", "")))
    prometheus = services.get("prometheus") or {}
    if url.hostname != "prometheus" or url.port != 9090:
        problems.append(f"grafana datasources: url {source.get('url')} is not http://prometheus:9090")
    elif not prometheus:
        problems.append("grafana datasources: no prometheus service")
    # The dashboard provider reads the folder the dashboard JSON is mounted in.
    dashboards = [m for m in mounts(grafana) if str(m["source"]).endswith(".json")]
    if not dashboards:
        problems.append("services.grafana.volumes: no dashboard JSON mounted")
        return
    paths = [p.get("options", {}).get("path", "") for p in providers if p.get("type", "file") == "file"]
    if not paths:
        problems.append("grafana dashboards: no file provider")
    for mount in dashboards:
        folder = mount["target"].rsplit("/", 1)[0]
        if not any(folder == p.rstrip("/") or mount["target"] == p for p in paths):
            problems.append(f"grafana dashboards: no provider reads {folder} (providers read {paths})")
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and home not in [m["target"] for m in dashboards]:
        problems.append(f"services.grafana.environment: home dashboard {home} is not a mounted dashboard")
    for mount in dashboards:
        check_dashboard(problems, DOCKER / mount["source"], source)


def check_dashboard(problems, path: Path, datasource: dict):
    dashboard = json.loads(path.read_text())
    where = rel(path)
    uid, kind = datasource.get("uid"), datasource.get("type")
    variables = {
        v.get("name"): v
        for v in (dashboard.get("templating") or {}).get("list", [])
        if v.get("type") == "datasource"
    }
    refs = 0

    def resolves(ref_uid: str, ref_type: str | None) -> str | None:
        if ref_type not in (None, kind):
            return f"type `{ref_type}`, the provisioned data source is `{kind}`"
        match = re.fullmatch(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", ref_uid)
        if match:
            name = match.group(1) or match.group(2)
            variable = variables.get(name)
            if not variable:
                return f"`{ref_uid}` names no datasource variable"
            if variable.get("query") != kind:
                return f"variable `{name}` lists `{variable.get('query')}` data sources, not `{kind}`"
            current = (variable.get("current") or {}).get("value")
            if current and current not in (uid, datasource.get("name")) and not current.startswith("$"):
                return f"variable `{name}` is saved pointing at `{current}`, not `{uid}`"
            return None
        if ref_uid != uid:
            return f"uid `{ref_uid}` is not the provisioned `{uid}`"
        return None

    def walk(node, at):
        nonlocal refs
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{at}.{key}"
                if key == "datasource" and value is not None:
                    refs += 1
                    if isinstance(value, str):
                        problem = resolves(value, None) if value.startswith("$") else (
                            None if value in (uid, datasource.get("name")) else f"`{value}` is not the provisioned data source"
                        )
                    elif isinstance(value, dict):
                        problem = resolves(str(value.get("uid", "")), value.get("type"))
                    else:
                        problem = f"unexpected {value!r}"
                    if problem:
                        problems.append(f"{where}: {here}: {problem}")
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{at}[{index}]")

    walk(dashboard, "$")
    if not dashboard.get("uid"):
        problems.append(f"{where}: give the dashboard a uid so provisioning keeps it stable")
    if refs == 0:
        problems.append(f"{where}: no data-source references found")
    if dashboard.get("__inputs"):
        problems.append(f"{where}: has __inputs (an export for sharing); provisioning does not fill them")


def check_with_binary(problems, env):
    binary = os.environ.get("SLUICE_BIN")
    if not binary:
        return
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE__")}
    run_env.update(env)
    result = subprocess.run(
        [binary, "check", "--config", str(SLUICE_TOML)],
        env=run_env, capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        problems.append(f"{binary} check: {result.stderr.strip() or result.stdout.strip()}")


def main() -> int:
    checks = Checks()
    compose = checks.run("compose.yml loads (variables at their defaults)", load_compose)
    if compose is not None:
        checks.run("compose spec schema", check_schema, compose)
        checks.run("services, volumes, healthchecks", check_services, compose)
        checks.run("mounted files and build context exist", check_files, compose)
    config = checks.run("compose.toml parses", load_sluice_toml)
    if config is not None:
        checks.run("compose.toml keys are config fields", check_toml_keys, config)
    if compose is not None and config is not None:
        env = checks.run("sluice service vs compose.toml", check_sluice_service, compose, config) or {}
        checks.run("Redis and PostgreSQL URLs", check_store_urls, compose, config, environment(compose["services"].get("sluice", {})))
        checks.run("Prometheus scrapes the metrics port", check_prometheus, compose, config)
        if os.environ.get("SLUICE_BIN"):
            checks.run("sluice check", check_with_binary, env)
    if compose is not None:
        checks.run("Grafana provisioning and dashboard", check_grafana, compose)

    failed = checks.failed()
    for name, problems in failed:
        for problem in problems:
            print(f"compose-validate: {name}: {problem}", file=sys.stderr)
    total = len(checks.results)
    if failed:
        print(f"compose-validate: FAILED {len(failed)} of {total} checks ({', '.join(n for n, _ in failed)})")
        return 1
    print(f"compose-validate: OK, {total} checks passed (schema, mounts, Sluice config, Prometheus, Grafana)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
