#!/usr/bin/env python3
"""Offline helpers for scripts/k8s-validate.sh (deploy/kubernetes/).

  render DIR                 print the kustomization in DIR as `kubectl kustomize`
                             would (a YAML stream on stdout)
  compare A B                exit 1 unless two YAML streams hold the same objects
                             in the same order
  check-fleet RENDERED --src SRC --secret SECRET_YAML
                             check that a rendered fleet hangs together: the
                             sluice.toml in its ConfigMap parses, uses only keys
                             the Rust config structs in SRC declare, gets every
                             ${VAR} from the container's env, and agrees with the
                             Deployment on ports, paths and shutdown timing

The renderer implements only the kustomize features the manifests use, and
refuses anything else rather than guess: `resources` (files and directories),
`namespace`, `images`, `labels` (without selectors), `patches` (strategic
merge, from a file or inline, aimed by the patch's own kind and name) and
`configMapGenerator` (files and literals, `disableNameSuffixHash: true`).
Transformers run in kustomize's order: patches, namespace, labels, images.
Needs PyYAML; the venv that k8s-validate.sh builds has it.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python < 3.11; k8s-validate.sh installs tomli then
    import tomli as tomllib  # type: ignore[no-redef]


class RenderError(Exception):
    pass


# --------------------------------------------------------------------------
# YAML in and out


def load_docs(text: str, origin: str) -> list[dict]:
    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise RenderError(f"{origin}: invalid YAML: {error}") from error
    for doc in docs:
        if not isinstance(doc, dict):
            raise RenderError(f"{origin}: a document is not a mapping")
    return docs


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str):
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def dump_docs(docs: list[dict]) -> str:
    return "---\n".join(
        yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False)
        for doc in docs
    )


# --------------------------------------------------------------------------
# Resource identity and kustomize's output order


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def version_of(api_version: str) -> str:
    return api_version.split("/")[-1]


def res_id(doc: dict) -> tuple[str, str, str, str]:
    meta = doc.get("metadata") or {}
    return (
        group_of(doc.get("apiVersion", "")),
        doc.get("kind", ""),
        meta.get("namespace") or "",
        meta.get("name") or "",
    )


def describe(doc: dict) -> str:
    group, kind, namespace, name = res_id(doc)
    where = f"{namespace}/" if namespace else ""
    return f"{kind}.{group or 'core'} {where}{name}"


# kustomize's "legacy" sort (its default): these kinds first, in this order,
# webhooks last, every other kind between them by group_version_kind, and
# objects of one kind by namespace and name.
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
    "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
    "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service",
    "LimitRange", "PriorityClass", "PersistentVolume", "PersistentVolumeClaim",
    "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def legacy_key(doc: dict):
    kind = doc.get("kind", "")
    if kind in ORDER_FIRST:
        rank = ORDER_FIRST.index(kind) - len(ORDER_FIRST)
    elif kind in ORDER_LAST:
        rank = 1 + ORDER_LAST.index(kind)
    else:
        rank = 0
    api = doc.get("apiVersion", "")
    gvk = "_".join([group_of(api) or "~G", version_of(api) or "~V", kind or "~K"])
    _, _, namespace, name = res_id(doc)
    return (rank, gvk, namespace, name)


# Kinds this renderer knows to be cluster-scoped; `namespace:` must not touch
# them, and they are refused rather than handled half-way.
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
    "APIService", "RuntimeClass", "CSIDriver", "VolumeAttachment",
}


# --------------------------------------------------------------------------
# Strategic merge patches


# Lists that a strategic merge patch merges item by item, by this key (from
# the Kubernetes API types' patchMergeKey); every other list is replaced whole.
# The key is the list's field name, or PARENT.FIELD where it depends on it.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "container.ports": "containerPort",
    "service.ports": "port",
}


def merge_key(path: tuple[str, ...], kind: str) -> str | None:
    field = path[-1]
    if field == "ports":
        if len(path) >= 2 and path[-2] in ("containers", "initContainers", "ephemeralContainers"):
            return MERGE_KEYS["container.ports"]
        if kind == "Service" and path == ("spec", "ports"):
            return MERGE_KEYS["service.ports"]
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(base, patch, path: tuple[str, ...], kind: str, origin: str):
    if isinstance(patch, dict):
        for key in patch:
            if isinstance(key, str) and key.startswith("$"):
                raise RenderError(
                    f"{origin}: patch directive {key} at {'.'.join(path) or '.'} is not supported"
                )
        if not isinstance(base, dict):
            return {k: v for k, v in copy.deepcopy(patch).items() if v is not None}
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, path + (key,), kind, origin)
            else:
                out[key] = strategic_merge(None, value, path + (key,), kind, origin)
        return out
    if isinstance(patch, list):
        key = merge_key(path, kind)
        if key is None or not isinstance(base, list):
            return [strategic_merge(None, item, path + ("[]",), kind, origin) for item in patch]
        # As kustomize orders them: the patch's items (merged into their
        # namesakes) in the patch's order, then the other items as they were.
        out = []
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(
                    f"{origin}: {'.'.join(path)}: each item needs its merge key `{key}`"
                )
            existing = next((x for x in base if isinstance(x, dict) and x.get(key) == item[key]), None)
            out.append(strategic_merge(existing, item, path, kind, origin))
        patched = {item[key] for item in patch}
        out.extend(x for x in base if not (isinstance(x, dict) and x.get(key) in patched))
        return out
    return copy.deepcopy(patch)


def apply_patch(resources: list[dict], patch: dict, origin: str) -> None:
    group, kind, namespace, name = res_id(patch)
    if not kind or not name:
        raise RenderError(f"{origin}: a patch needs kind and metadata.name")
    matches = [
        index
        for index, doc in enumerate(resources)
        if res_id(doc)[:2] == (group, kind)
        and res_id(doc)[3] == name
        and (not namespace or res_id(doc)[2] == namespace)
    ]
    if len(matches) != 1:
        raise RenderError(
            f"{origin}: patch for {kind} {name} matches {len(matches)} resources, not one"
        )
    index = matches[0]
    resources[index] = strategic_merge(resources[index], patch, (), kind, origin)


# --------------------------------------------------------------------------
# Transformers


def set_namespace(resources: list[dict], namespace: str) -> None:
    for doc in resources:
        if doc.get("kind") in CLUSTER_SCOPED:
            raise RenderError(f"{describe(doc)}: cluster-scoped kinds are not supported")
        doc.setdefault("metadata", {})["namespace"] = namespace


TEMPLATE_KINDS = {"Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job"}


def add_labels(resources: list[dict], entry: dict, origin: str) -> None:
    allowed = {"pairs", "includeSelectors", "includeTemplates"}
    unknown = set(entry) - allowed
    if unknown:
        raise RenderError(f"{origin}: labels: unsupported field(s) {sorted(unknown)}")
    if entry.get("includeSelectors"):
        raise RenderError(
            f"{origin}: labels.includeSelectors is not supported (selectors are immutable)"
        )
    pairs = {str(k): str(v) for k, v in (entry.get("pairs") or {}).items()}
    for doc in resources:
        meta = doc.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **pairs}
        if not entry.get("includeTemplates"):
            continue
        kind = doc.get("kind")
        if kind in TEMPLATE_KINDS:
            template = doc.setdefault("spec", {}).setdefault("template", {})
            tmeta = template.setdefault("metadata", {})
            tmeta["labels"] = {**(tmeta.get("labels") or {}), **pairs}
        elif kind == "CronJob" or "template" in (doc.get("spec") or {}):
            raise RenderError(f"{origin}: labels.includeTemplates on {kind} is not supported")


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference."""
    name, digest = (image.split("@", 1) + [""])[:2]
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def pod_specs(doc: dict):
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        yield spec
    template = spec.get("template")
    if isinstance(template, dict):
        yield template.get("spec") or {}
    job = spec.get("jobTemplate")
    if isinstance(job, dict):
        yield ((job.get("spec") or {}).get("template") or {}).get("spec") or {}


def set_images(resources: list[dict], images: list[dict], origin: str) -> None:
    allowed = {"name", "newName", "newTag", "digest"}
    for entry in images:
        unknown = set(entry) - allowed
        if unknown or "name" not in entry:
            raise RenderError(f"{origin}: images: need name; unsupported {sorted(unknown)}")
    for doc in resources:
        for spec in pod_specs(doc):
            for field in ("initContainers", "containers"):
                for container in spec.get(field) or []:
                    image = container.get("image")
                    if not isinstance(image, str):
                        continue
                    name, tag, digest = split_image(image)
                    for entry in images:
                        if entry["name"] != name:
                            continue
                        new_name = entry.get("newName") or name
                        if "digest" in entry:
                            container["image"] = f"{new_name}@{entry['digest']}"
                        elif "newTag" in entry:
                            container["image"] = f"{new_name}:{entry['newTag']}"
                        else:
                            suffix = f"@{digest}" if digest else (f":{tag}" if tag else "")
                            container["image"] = new_name + suffix
                        break


# --------------------------------------------------------------------------
# Generators


def inside(root: Path, path: Path, origin: str) -> Path:
    """`path` (relative to root), refused when it leaves root (kustomize's
    default load restriction)."""
    resolved = (root / path).resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise RenderError(f"{origin}: {path} is outside the kustomization's directory")
    return resolved


def config_map(root: Path, entry: dict, origin: str) -> dict:
    allowed = {"name", "files", "literals", "options", "behavior"}
    unknown = set(entry) - allowed
    if unknown:
        raise RenderError(f"{origin}: configMapGenerator: unsupported {sorted(unknown)}")
    options = entry.get("options") or {}
    unknown = set(options) - {"disableNameSuffixHash", "labels", "annotations"}
    if unknown:
        raise RenderError(f"{origin}: configMapGenerator.options: unsupported {sorted(unknown)}")
    if options.get("disableNameSuffixHash") is not True:
        raise RenderError(
            f"{origin}: configMapGenerator {entry.get('name')}: set "
            "options.disableNameSuffixHash: true (name hashes are not rendered here)"
        )
    data: dict[str, str] = {}
    for item in entry.get("files") or []:
        key, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        file = inside(root, Path(path), origin)
        data[key or Path(path).name] = file.read_text(encoding="utf-8")
    for item in entry.get("literals") or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise RenderError(f"{origin}: literal {item!r} is not KEY=VALUE")
        data[key] = value
    meta: dict = {"name": entry["name"]}
    if options.get("labels"):
        meta["labels"] = {str(k): str(v) for k, v in options["labels"].items()}
    if options.get("annotations"):
        meta["annotations"] = {str(k): str(v) for k, v in options["annotations"].items()}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def generate(resources: list[dict], root: Path, entries: list[dict], origin: str) -> None:
    for entry in entries:
        made = config_map(root, entry, origin)
        behavior = entry.get("behavior", "create")
        same = [i for i, doc in enumerate(resources) if res_id(doc)[:2] == ("", "ConfigMap")
                and res_id(doc)[3] == made["metadata"]["name"]]
        if behavior == "create":
            if same:
                raise RenderError(f"{origin}: ConfigMap {made['metadata']['name']} exists already")
            resources.append(made)
        elif behavior in ("replace", "merge"):
            if len(same) != 1:
                raise RenderError(
                    f"{origin}: configMapGenerator {behavior}: no ConfigMap "
                    f"{made['metadata']['name']} from the resources to {behavior}"
                )
            old = resources[same[0]]
            if behavior == "merge":
                made["data"] = {**(old.get("data") or {}), **made["data"]}
                for field in ("labels", "annotations"):
                    merged = {**(old["metadata"].get(field) or {}),
                              **(made["metadata"].get(field) or {})}
                    if merged:
                        made["metadata"][field] = merged
            if old["metadata"].get("namespace"):
                made["metadata"]["namespace"] = old["metadata"]["namespace"]
            resources[same[0]] = made
        else:
            raise RenderError(f"{origin}: configMapGenerator behavior {behavior!r} unsupported")


# --------------------------------------------------------------------------
# A kustomization


KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "resources", "namespace", "images", "labels",
    "patches", "configMapGenerator",
}


def render(directory: Path, seen: tuple[Path, ...] = ()) -> list[dict]:
    directory = directory.resolve()
    if directory in seen:
        raise RenderError(f"{directory}: kustomization cycle")
    names = [n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
             if (directory / n).is_file()]
    if len(names) != 1:
        raise RenderError(f"{directory}: needs exactly one kustomization.yaml")
    origin = str(directory / names[0])
    docs = load_docs((directory / names[0]).read_text(encoding="utf-8"), origin)
    if len(docs) != 1:
        raise RenderError(f"{origin}: one document expected")
    kust = docs[0]
    unknown = set(kust) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(f"{origin}: unsupported kustomize field(s) {sorted(unknown)}")
    if kust.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{origin}: kind must be Kustomization")

    resources: list[dict] = []
    for entry in kust.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            resources.extend(render(target, seen + (directory,)))
        elif target.is_file():
            inside(directory, Path(entry), origin)
            resources.extend(load_docs(target.read_text(encoding="utf-8"), str(target)))
        else:
            raise RenderError(f"{origin}: resource {entry} not found")
    for doc in resources:
        if doc.get("kind") in CLUSTER_SCOPED:
            raise RenderError(f"{describe(doc)}: cluster-scoped kinds are not supported")
    generate(resources, directory, kust.get("configMapGenerator") or [], origin)

    seen_ids: set = set()
    for doc in resources:
        if res_id(doc) in seen_ids:
            raise RenderError(f"{origin}: {describe(doc)} is defined twice")
        seen_ids.add(res_id(doc))

    for index, entry in enumerate(kust.get("patches") or []):
        where = f"{origin}: patches[{index}]"
        unknown = set(entry) - {"path", "patch"}
        if unknown or len(entry) != 1:
            raise RenderError(f"{where}: give exactly one of path or patch (no target, options)")
        if "path" in entry:
            file = inside(directory, Path(entry["path"]), where)
            patches = load_docs(file.read_text(encoding="utf-8"), str(file))
        else:
            patches = load_docs(entry["patch"], where)
        for patch in patches:
            apply_patch(resources, patch, where)
    if kust.get("namespace"):
        set_namespace(resources, kust["namespace"])
    for entry in kust.get("labels") or []:
        add_labels(resources, entry, origin)
    if kust.get("images"):
        set_images(resources, kust["images"], origin)
    return sorted(resources, key=legacy_key)


# --------------------------------------------------------------------------
# The fleet's consistency


# What the gateway does after `shutdown_grace` before it exits, at most
# (src/server/mod.rs): CUT_FLUSH twice (2 s), the ledger flush (10 s),
# TASKS_DRAIN (10 s).
SHUTDOWN_OVERHEAD_SECONDS = 22

def parse_duration(value) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


class RustSchema:
    """The config structs' fields, read off the Rust source (serde names,
    `flatten` and `skip` honoured); enough to tell a known key from a typo."""

    def __init__(self, src: Path):
        self.structs: dict[str, list[tuple[str, str, bool]]] = {}
        for file in sorted(src.rglob("*.rs")):
            self._read(file.read_text(encoding="utf-8"))
        if "Config" not in self.structs:
            raise RenderError(f"{src}: no `struct Config` found")

    def _read(self, text: str) -> None:
        for match in re.finditer(r"^pub(?:\([a-z]+\))? struct (\w+)\s*\{\n(.*?)^\}", text, re.M | re.S):
            name, body = match.group(1), match.group(2)
            fields = []
            attrs: list[str] = []
            pending = ""
            for raw in body.splitlines():
                line = raw.strip()
                if pending:
                    pending += " " + line
                elif line.startswith("#["):
                    attrs.append(line)
                    continue
                elif line.startswith("//") or not line:
                    continue
                else:
                    pending = line
                if pending.count("<") > pending.count(">") or not pending.endswith(","):
                    continue
                field = re.match(r"(?:pub(?:\([a-z]+\))?\s+)?(\w+)\s*:\s*(.+),$", pending)
                pending = ""
                if not field:
                    attrs = []
                    continue
                serde = " ".join(a for a in attrs if a.startswith("#[serde("))
                attrs = []
                if re.search(r"\bskip\b", serde) and "skip_serializing" not in serde:
                    continue
                rename = re.search(r'rename\s*=\s*"([^"]+)"', serde)
                key = rename.group(1) if rename else field.group(1)
                fields.append((key, field.group(2).strip(), "flatten" in serde))
            # A name defined twice (in two modules) keeps both field sets.
            self.structs.setdefault(name, []).extend(fields)

    @staticmethod
    def _unwrap(type_text: str) -> tuple[str, str]:
        """("struct"|"map"|"list"|"leaf", inner type) of a field type."""
        t = re.sub(r"\b(?:crate|super|self|std|[a-z_]+)::", "", type_text).strip()
        for wrapper in ("Option", "Box", "Arc"):
            if t.startswith(wrapper + "<") and t.endswith(">"):
                return RustSchema._unwrap(t[len(wrapper) + 1 : -1])
        if t.startswith("Vec<") and t.endswith(">"):
            return "list", t[4:-1]
        for mapping in ("HashMap", "BTreeMap", "IndexMap"):
            if t.startswith(mapping + "<") and t.endswith(">"):
                return "map", t[len(mapping) + 1 : -1].split(",", 1)[1].strip()
        return "struct", t

    def fields(self, struct: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, type_text, flatten in self.structs.get(struct, []):
            if flatten:
                kind, inner = self._unwrap(type_text)
                out.update(self.fields(inner))
            else:
                out[key] = type_text
        return out

    def check(self, value, type_text: str, path: str, problems: list[str]) -> None:
        kind, inner = self._unwrap(type_text)
        if kind == "list":
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.check(item, inner, f"{path}[{index}]", problems)
            return
        if kind == "map":
            if isinstance(value, dict):
                for key, item in value.items():
                    self.check(item, inner, f"{path}.{key}", problems)
            return
        if inner not in self.structs or not isinstance(value, dict):
            return  # a leaf: a number, string, enum or duration
        known = self.fields(inner)
        for key, item in value.items():
            at = f"{path}.{key}" if path else key
            if key in known:
                self.check(item, known[key], at, problems)
            else:
                problems.append(f"sluice.toml: {at}: unknown key (not a field of {inner})")


def find(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind and (d.get("metadata") or {}).get("name") == name]
    if len(found) != 1:
        raise RenderError(f"rendered manifests: expected one {kind} {name}, found {len(found)}")
    return found[0]


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def check_fleet(rendered: Path, src: Path, secret_path: Path) -> list[str]:
    docs = load_docs(rendered.read_text(encoding="utf-8"), str(rendered))
    problems: list[str] = []

    deployment = find(docs, "Deployment", "sluice")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    container = next((c for c in spec["containers"] if c["name"] == "sluice"), None)
    if container is None:
        raise RenderError("Deployment sluice: no container named sluice")
    env = {e["name"]: e for e in container.get("env") or []}
    ports = {p["name"]: p["containerPort"] for p in container.get("ports") or [] if "name" in p}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}

    # The config file: where the container reads it, and what it says.
    config_path = env.get("SLUICE_CONFIG", {}).get("value", "")
    mount = mounts.get(os.path.dirname(config_path))
    if not mount or mount.get("subPath"):
        problems.append(f"SLUICE_CONFIG={config_path}: its directory must be a whole-volume mount (no subPath)")
        return problems
    source = volumes[mount["name"]].get("configMap") or {}
    config_map_doc = find(docs, "ConfigMap", source.get("name", ""))
    text = (config_map_doc.get("data") or {}).get(os.path.basename(config_path))
    if text is None:
        problems.append(f"ConfigMap {source.get('name')}: no key {os.path.basename(config_path)}")
        return problems
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        problems.append(f"sluice.toml: invalid TOML: {error}")
        return problems

    schema = RustSchema(src)
    schema.check(config, "Config", "", problems)
    for name in env:
        if name.startswith("SLUICE__"):
            path = name[len("SLUICE__"):].lower().split("__")
            override = {}
            cursor = override
            for part in path[:-1]:
                cursor = cursor.setdefault(part, {})
            cursor[path[-1]] = "x"
            schema.check(override, "Config", "", problems)

    # Every ${VAR} without a default comes from the container's env; every
    # Secret key the env names is in the Secret template.
    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    for text_value in strings(config):
        for name, default in re.findall(r"(?<!\$)\$\{([^}:]+)(:-[^}]*)?\}", text_value):
            if not default and name not in env:
                problems.append(f"sluice.toml: ${{{name}}} is not in the sluice container's env")
    secret = load_docs(secret_path.read_text(encoding="utf-8"), str(secret_path))[0]
    secret_keys = set((secret.get("stringData") or {})) | set((secret.get("data") or {}))
    for name, entry in env.items():
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if not ref:
            continue
        if ref.get("name") != secret["metadata"]["name"]:
            problems.append(f"env {name}: Secret {ref.get('name')} is not {secret_path.name}'s")
        elif ref.get("key") not in secret_keys:
            problems.append(f"env {name}: key {ref.get('key')} is missing from {secret_path.name}")

    # Listeners and the container's named ports.
    for section, port_name in (("server", "api"), ("admin", "admin"), ("metrics", "metrics")):
        listen = (config.get(section) or {}).get("listen")
        if not listen or not listen.startswith("0.0.0.0:"):
            problems.append(f"sluice.toml: {section}.listen must be 0.0.0.0:PORT for the `{port_name}` port")
        elif port_of(listen) != ports.get(port_name):
            problems.append(f"sluice.toml: {section}.listen {listen} is not containerPort {port_name}={ports.get(port_name)}")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get("prometheus.io/port") != str(ports.get("metrics")):
        problems.append("pod annotation prometheus.io/port is not the metrics port")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (container.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in ("api", ports.get("api")):
            problems.append(f"{probe}: must GET {path} on the api port")

    # Data and files directories on the right volumes.
    def volume_at(path: str):
        mounted = mounts.get(path.rstrip("/"))
        return volumes.get(mounted["name"]) if mounted and not mounted.get("readOnly") else None

    data_volume = volume_at((config.get("usage") or {}).get("data_dir", ""))
    if not data_volume or "emptyDir" not in data_volume:
        problems.append("usage.data_dir must be a writable emptyDir mount")
    files_volume = volume_at((config.get("batch") or {}).get("files_dir", ""))
    claim_name = ((files_volume or {}).get("persistentVolumeClaim") or {}).get("claimName")
    if not claim_name:
        problems.append("batch.files_dir must be a writable mount of a PersistentVolumeClaim")
    elif "ReadWriteMany" not in find(docs, "PersistentVolumeClaim", claim_name)["spec"].get("accessModes", []):
        problems.append(f"PersistentVolumeClaim {claim_name} must be ReadWriteMany")
    for section in ("usage", "batch"):
        store = (config.get(section) or {}).get("store", "")
        if not store.startswith("postgres"):
            problems.append(f"sluice.toml: {section}.store must be a postgres:// URL for a fleet")
    if not (config.get("admin") or {}).get("keys_store", "").startswith("postgres"):
        problems.append("sluice.toml: admin.keys_store must be a postgres:// URL for a fleet")
    if not (config.get("redis") or {}).get("url"):
        problems.append("sluice.toml: [redis] url is needed for limits shared by the fleet")

    # Shutdown timing: SIGTERM comes after preStop; then drain_delay,
    # shutdown_grace and the gateway's own exit work must fit in the grace.
    server = config.get("server") or {}
    pre_stop = (((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
    needed = (pre_stop + parse_duration(server.get("drain_delay", "1s"))
              + parse_duration(server.get("shutdown_grace", "30s")) + SHUTDOWN_OVERHEAD_SECONDS)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace <= needed:
        problems.append(
            f"terminationGracePeriodSeconds {grace} must exceed preStop + drain_delay + "
            f"shutdown_grace + {SHUTDOWN_OVERHEAD_SECONDS} = {needed:g}"
        )
    if server.get("watch_config") is False:
        problems.append("sluice.toml: server.watch_config = false defeats ConfigMap hot reload")

    # Hardening the image relies on.
    csc = container.get("securityContext") or {}
    psc = spec.get("securityContext") or {}
    if not (csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False
            and "ALL" in ((csc.get("capabilities") or {}).get("drop") or [])):
        problems.append("sluice container: needs readOnlyRootFilesystem, no privilege escalation, drop ALL")
    if psc.get("runAsUser") != 65532 or not psc.get("runAsNonRoot"):
        problems.append("pod securityContext: run as the image's non-root uid 65532")

    # Selectors and ports that other objects aim at the pods.
    labels = (pod.get("metadata") or {}).get("labels") or {}

    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Service":
            if not selects(doc["spec"].get("selector") or {}):
                problems.append(f"Service {name}: selector does not match the pods")
            for port in doc["spec"].get("ports") or []:
                if port.get("targetPort") not in ports and port.get("targetPort") not in ports.values():
                    problems.append(f"Service {name}: targetPort {port.get('targetPort')} is not a container port")
        elif kind in ("PodDisruptionBudget",):
            if not selects((doc["spec"].get("selector") or {}).get("matchLabels") or {}):
                problems.append(f"{kind} {name}: selector does not match the pods")
        elif kind == "NetworkPolicy":
            if not selects((doc["spec"].get("podSelector") or {}).get("matchLabels") or {}):
                problems.append(f"NetworkPolicy {name}: podSelector does not match the pods")
            for rule in doc["spec"].get("ingress") or []:
                for port in rule.get("ports") or []:
                    if port.get("port") not in ports and port.get("port") not in ports.values():
                        problems.append(f"NetworkPolicy {name}: port {port.get('port')} is not a container port")
        elif kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            if (target.get("kind"), target.get("name")) != ("Deployment", "sluice"):
                problems.append(f"HorizontalPodAutoscaler {name}: does not scale Deployment sluice")
    for volume in volumes.values():
        ref = volume.get("configMap") or volume.get("persistentVolumeClaim")
        if volume.get("configMap"):
            find(docs, "ConfigMap", ref["name"])
        elif volume.get("persistentVolumeClaim"):
            find(docs, "PersistentVolumeClaim", ref["claimName"])
    service_account = spec.get("serviceAccountName")
    if service_account:
        find(docs, "ServiceAccount", service_account)
    return problems


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render")
    render_cmd.add_argument("directory", type=Path)
    compare_cmd = commands.add_parser("compare")
    compare_cmd.add_argument("a", type=Path)
    compare_cmd.add_argument("b", type=Path)
    fleet_cmd = commands.add_parser("check-fleet")
    fleet_cmd.add_argument("rendered", type=Path)
    fleet_cmd.add_argument("--src", type=Path, required=True)
    fleet_cmd.add_argument("--secret", type=Path, required=True)
    args = parser.parse_args()
    try:
        if args.command == "render":
            sys.stdout.write(dump_docs(render(args.directory)))
            return 0
        if args.command == "compare":
            a = load_docs(args.a.read_text(encoding="utf-8"), str(args.a))
            b = load_docs(args.b.read_text(encoding="utf-8"), str(args.b))
            if a == b:
                return 0
            print(f"{args.a} and {args.b} differ:", file=sys.stderr)
            print(f"  {[describe(d) for d in a]}\n  {[describe(d) for d in b]}", file=sys.stderr)
            for x, y in zip(a, b):
                if x != y:
                    print(f"  first difference in {describe(x)} / {describe(y)}", file=sys.stderr)
                    break
            return 1
        problems = check_fleet(args.rendered, args.src, args.secret)
        for problem in problems:
            print(f"{args.rendered.name}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    except (RenderError, OSError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
