"""models.toml → frozen dataclasses: named model sources and named model sets (per-role settings).

Precedence, lowest first: field defaults < the bundled models.toml < a user models.toml (``--models`` /
``$UMI_EDGE_MODELS``) < environment (``UMI_EDGE_<KEY>``) < flags (``overrides``).

A user file *overlays* the bundled one: each ``[models.NAME]`` / ``[sets.NAME]`` it defines replaces the
bundled entry of that name whole (no deep merge, so a set never silently mixes two files); entries it
does not name stay available. Relative paths in a file resolve against that file's folder.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .engine.base import Sampling
from .engine.context import MIN_N_CTX
from .engine.remote import REMOTE_KEYS, check_sampling, remote_spec
from .errors import ConfigError
from .loop.limits import TRUNCATIONS, Limits

ROLES = ("planner", "caller", "summarizer")   # the team protocol's roles
ALL_ROLES = ROLES + ("backbone",)              # every role a set table may configure (per its protocol)
SOURCES = ("pypi", "hf", "path")
DEFAULT_SET = "default"


@dataclass(frozen=True)
class ModelSpec:
    """Where one GGUF comes from: a file inside a PyPI wheel, an HF repo converted on pull, or a local path."""

    name: str
    kind: str                     # "pypi" | "hf" | "path"
    ref: str                      # requirement ("pkg==1.0"), repo id, or absolute path
    file: str | None = None       # pypi: the wheel member holding the GGUF
    sha256: str | None = None     # required for pypi; optional check for the others
    outtype: str = "q4_k_m"       # hf: llama.cpp quantization applied at pull time
    revision: str | None = None   # hf: branch, tag or commit
    role: str | None = None       # hf: written into the GGUF's umi.role metadata

    def describe(self) -> str:
        if self.kind == "pypi":
            return f"pypi:{self.ref} ({self.file})"
        if self.kind == "hf":
            return f"hf:{self.ref}{'@' + self.revision if self.revision else ''} → {self.outtype}"
        return self.ref


@dataclass(frozen=True)
class RoleSpec:
    """One role's engine settings. Defaults suit a 135M model on a laptop CPU."""

    role: str
    model: str
    adapter: str | tuple[str, ...] | None = None   # GGUF LoRA adapter path(s), set on this role's context only
    adapter_sha256: str | tuple[str, ...] | None = None   # checked at load, one per adapter, when given
    n_ctx: int = 2048             # per role: KV cache dominates memory on small models
    threads: int | None = None    # None: llama.cpp's choice (physical cores)
    n_batch: int = 512
    n_gpu_layers: int = 0         # a model setting: roles sharing a model must agree
    max_tokens: int = 256
    sampling: Sampling = Sampling()
    type_k: str = "f16"           # KV cache key type: "f16" (the reference numerics) or "q8_0" (half the K memory)
    share_context: str | None = None   # run on that role's llama context (same model): one KV cache for both
    # the adapter this role's context evaluates the prompts' shared trunk (tool docs + history) under, so the
    # roles on it reuse one trunk KV whatever their own adapters; only each role's tail runs under its adapter
    trunk_adapter: str | None = None
    trunk_adapter_sha256: str | None = None
    # engine = "openai-completions": the role runs on an inference server (engine.remote.RemoteSpec); `model` is
    # still the model it runs, whose vocab encodes its prompts here
    remote: Any = None

    @property
    def adapters(self) -> tuple[str, ...]:
        """The adapter paths, stacked in this order (empty when none)."""
        return () if self.adapter is None else (self.adapter,) if isinstance(self.adapter, str) else self.adapter

    @property
    def adapter_sums(self) -> tuple[str | None, ...]:
        """The expected sha256 of each adapter, in `adapters` order (None: not checked)."""
        sums = self.adapter_sha256
        if sums is None:
            return (None,) * len(self.adapters)
        return (sums,) if isinstance(sums, str) else sums


@dataclass(frozen=True)
class SetSpec:
    """A named team: one RoleSpec per role plus loop-wide settings."""

    name: str
    roles: Mapping[str, RoleSpec]
    description: str = ""
    protocol: str = "alpha-umi/toolbench-v1"
    # "module:ATTR", "mcp:COMMAND", "mcp+http://URL" or a [toolsources] name, or a tuple of those; None = no tools
    tools: str | tuple[str, ...] | None = "umi_edge.tools.demo:TOOLS"
    # the loop's limits: defaults (and their reasons) in loop/limits.py
    max_steps: int = Limits.max_steps
    budget_seconds: float | None = Limits.budget_seconds
    tool_timeout: float = Limits.tool_timeout
    tool_isolation: str = Limits.tool_isolation
    truncation: str = Limits.truncation   # an overflowing prompt: "head" drops old steps, "left" the reference's cut
    constrained: bool = True      # grammar-constrained caller and route completion
    grounded_answers: bool = Limits.grounded_answers   # constrained answers state only numbers from query/tools
    tool_order: str = Limits.tool_order   # "relevance": the best match for the query listed last; "given": as is
    tool_top_k: int = 0           # a larger tool set offers only its top k per step (tools/retrieval.py); 0 = all
    prefix_cache: bool = True     # save / load the KV of the first prompt's fixed head (tool docs) on disk (warm.py)
    kv_layout: str = "contexts"   # "pool": roles on one model share one context, a sequence each (layout.py)


@dataclass(frozen=True)
class Registry:
    """All models and sets known after reading the bundled file and an optional user file."""

    models: Mapping[str, ModelSpec]
    sets: Mapping[str, Mapping[str, Any]]   # raw set tables; resolved per call by `resolve_set`
    files: tuple[Path, ...]
    # [toolsources.NAME] -> umi_edge.tools.mcp.McpServer; a set's `tools` list names them
    toolsources: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise ConfigError(f"unknown model {name!r}; known models: {_names(self.models)} ({_where(self)})")
        return self.models[name]

    def set_names(self) -> list[str]:
        return sorted(self.sets)


_SAMPLING_KEYS = tuple(f.name for f in fields(Sampling))
_ROLE_KEYS = tuple(f.name for f in fields(RoleSpec) if f.name not in ("role", "remote")) + ("engine",) + REMOTE_KEYS
_SET_KEYS = ("description", "protocol", "tools", "max_steps", "budget_seconds", "tool_timeout", "constrained",
             "tool_top_k", "tool_isolation", "prefix_cache", "kv_layout", "truncation", "grounded_answers",
             "tool_order")
_MODEL_KEYS = ("source", "path", "file", "sha256", "outtype", "revision", "role")
# keys a flag or env var may set; sampling fields are flattened (temperature=… rather than sampling.temperature)
_FILE_KEYS = ("model", "adapter", "adapter_sha256", "trunk_adapter", "trunk_adapter_sha256")
OVERRIDE_KEYS = tuple(k for k in _ROLE_KEYS
                      if k not in (*_FILE_KEYS, "sampling", "engine", *REMOTE_KEYS)) + _SAMPLING_KEYS
_ENV_KEYS = OVERRIDE_KEYS + ("max_steps", "budget_seconds", "tool_timeout", "tool_top_k", "tool_order")

_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "adapter": (str, list), "adapter_sha256": (str, list), "type_k": (str,),
    "share_context": (str,), "trunk_adapter": (str,), "trunk_adapter_sha256": (str,), "n_ctx": (int,),
    "threads": (int,), "n_batch": (int,),
    "n_gpu_layers": (int,), "max_tokens": (int,), "temperature": (int, float), "top_p": (int, float),
    "top_k": (int,), "min_p": (int, float), "seed": (int,), "description": (str,), "protocol": (str,),
    "tools": (str, list), "max_steps": (int,), "budget_seconds": (int, float), "tool_timeout": (int, float),
    "constrained": (bool,), "tool_top_k": (int,), "tool_isolation": (str,), "prefix_cache": (bool,),
    "kv_layout": (str,), "truncation": (str,), "grounded_answers": (bool,), "tool_order": (str,),
}


def bundled_path() -> Path:
    """The models.toml shipped inside the package (a plain folder: its adapters are opened by path too)."""
    return Path(__file__).with_name("models.toml")


def load_registry(path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None) -> Registry:
    """The bundled models.toml, overlaid by `path` (or $UMI_EDGE_MODELS when path is None)."""
    env = os.environ if env is None else env
    files = [bundled_path()]
    user = path if path is not None else env.get("UMI_EDGE_MODELS") or None
    if user is not None:
        p = Path(user).expanduser()
        if not p.is_file():
            raise ConfigError(f"models file {p} does not exist; pass an existing models.toml to --models")
        files.append(p.resolve())
    models: dict[str, ModelSpec] = {}
    sets: dict[str, Mapping[str, Any]] = {}
    toolsources: dict[str, Any] = {}
    for f in files:
        doc = _read_toml(f)
        _check_keys(doc, ("models", "sets", "toolsources"), f"{f}")
        for name, table in _table(doc, "toolsources", f).items():
            toolsources[name] = _parse_toolsource(name, table, f)
        for name, table in _table(doc, "models", f).items():
            models[name] = _parse_model(name, table, f)
        for name, table in _table(doc, "sets", f).items():
            if not isinstance(table, dict):
                raise ConfigError(f"{f}: [sets.{name}] must be a table")
            sets[name] = MappingProxyType({**table, "__file__": f})
    return Registry(MappingProxyType(models), MappingProxyType(sets), tuple(files), MappingProxyType(toolsources))


def resolve_set(
    name: str | None = None,
    *,
    registry: Registry | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> SetSpec:
    """Build the SetSpec for `name` ($UMI_EDGE_SET, else "default") with env and flag overrides applied.

    `overrides` takes loop keys (max_steps, tools, …), role keys applied to every role (n_ctx, threads,
    temperature, …), and per-role dicts (``{"caller": {"temperature": 0}}``). None values are ignored.
    """
    env = os.environ if env is None else env
    registry = registry or load_registry(env=env)
    name = name or env.get("UMI_EDGE_SET") or DEFAULT_SET
    if name not in registry.sets:
        raise ConfigError(f"unknown set {name!r}; known sets: {_names(registry.sets)} ({_where(registry)})")
    raw = dict(registry.sets[name])
    src: Path = raw.pop("__file__")
    where = f"{src} [sets.{name}]"

    set_vals: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    per_role: dict[str, dict[str, Any]] = {r: {} for r in ALL_ROLES}
    for key, value in raw.items():
        if key in ALL_ROLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a table of role settings")
            _check_keys(value, _ROLE_KEYS, f"{where}.{key}")
            per_role[key].update(value)
        elif key in _SET_KEYS:
            set_vals[key] = value
        elif key in _ROLE_KEYS:
            shared[key] = value
        else:
            valid = ", ".join(sorted(_SET_KEYS + _ROLE_KEYS + ALL_ROLES))
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {valid}")

    # toml layer: role table over set-wide values; sampling tables merge field by field
    layers = {r: _merge(shared, per_role[r]) for r in ALL_ROLES}
    for r in ALL_ROLES:   # a checksum belongs to its adapter: a role that names its own drops the inherited one
        for k in ("adapter", "trunk_adapter"):
            if k in per_role[r] and f"{k}_sha256" not in per_role[r]:
                layers[r].pop(f"{k}_sha256", None)
    for r in ALL_ROLES:
        layers[r] = _relative_paths(layers[r], src)
    # env layer, then flags
    env_vals = _env_overrides(env)
    for source, vals in (("environment", env_vals), ("flags", dict(overrides or {}))):
        for key, value in vals.items():
            if value is None:
                continue
            if key in ALL_ROLES:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"override {key!r} must map role settings, got {value!r}")
                for k, v in value.items():
                    if v is not None:
                        _apply(layers[key], k, v, f"{source}: {key}.{k}")
            elif key in _SET_KEYS:
                set_vals[key] = value
            elif key in OVERRIDE_KEYS or key in ("model", "adapter"):
                for r in ALL_ROLES:
                    _apply(layers[r], key, value, f"{source}: {key}")
            else:
                valid = ", ".join(sorted(set(OVERRIDE_KEYS + _SET_KEYS + ALL_ROLES + ("model", "adapter"))))
                raise ConfigError(f"{source}: unknown setting {key!r}; valid: {valid}")

    try:
        return _build_set(name, set_vals, per_role, layers, where, registry)
    except ConfigError as e:   # a value from the environment is named as such, not only by the file it overrides
        used = [f"UMI_EDGE_{k.upper()}={v}" for k, v in env_vals.items() if re.search(rf"\b{k}\b", str(e))]
        if not used:
            raise
        raise ConfigError(f"{e} (set by {', '.join(used)} in the environment)") from None


def _build_set(name: str, set_vals: dict[str, Any], per_role: dict[str, dict[str, Any]],
               layers: dict[str, dict[str, Any]], where: str, registry: Registry) -> SetSpec:
    """The checked SetSpec from the merged layers (resolve_set)."""
    for key, value in set_vals.items():
        _check_type(key, value, where)
    if isinstance(set_vals.get("tools"), list):
        if not set_vals["tools"] or not all(isinstance(t, str) and t for t in set_vals["tools"]):
            raise ConfigError(f"{where}: tools must be a source string or a non-empty list of them")
        set_vals["tools"] = tuple(set_vals["tools"])
    if "tool_top_k" in set_vals:
        from .tools.retrieval import check_top_k

        check_top_k(set_vals["tool_top_k"], f"{where}: tool_top_k")
    if "tool_order" in set_vals:
        from .tools.retrieval import check_order

        check_order(set_vals["tool_order"], f"{where}: tool_order")
    if "tool_isolation" in set_vals:
        from .tools.isolation import ISOLATIONS

        if set_vals["tool_isolation"] not in ISOLATIONS:
            raise ConfigError(f"{where}: tool_isolation must be one of {', '.join(ISOLATIONS)}, "
                              f"not {set_vals['tool_isolation']!r}")
    if set_vals.get("truncation", Limits.truncation) not in TRUNCATIONS:
        raise ConfigError(f"{where}: truncation must be one of {', '.join(TRUNCATIONS)}, "
                          f"not {set_vals['truncation']!r}")
    wanted = protocol_roles(set_vals.get("protocol", SetSpec.protocol), where)
    stray = [r for r in ALL_ROLES if per_role[r] and r not in wanted]
    if stray:
        raise ConfigError(f"{where}: [{stray[0]}] is not a role of protocol "
                          f"{set_vals.get('protocol', SetSpec.protocol)!r}; its roles: {', '.join(wanted)}")
    roles = {r: _role_spec(r, layers[r], where, registry) for r in wanted}
    _check_shared_contexts(roles, where)
    _check_gpu_layers(roles, where)
    from .layout import check_layout

    check_layout(roles, set_vals.get("kv_layout", SetSpec.kv_layout), where)
    return SetSpec(name=name, roles=MappingProxyType(roles), **set_vals)


def protocol_roles(protocol: str, where: str = "") -> tuple[str, ...]:
    """The roles a protocol runs: ("planner", "caller", "summarizer") for the team, ("backbone",) for one model."""
    from .protocol import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where + ': ' if where else ''}unknown protocol {protocol!r}; "
                          f"valid: {', '.join(sorted(PROTOCOLS))}")
    return tuple(PROTOCOLS[protocol].roles)


def role_override(spec: SetSpec, role: str, **changes: Any) -> SetSpec:
    """A copy of `spec` with one role's fields replaced (unknown role → ConfigError)."""
    if role not in spec.roles:
        raise ConfigError(f"unknown role {role!r}; valid roles: {', '.join(spec.roles)}")
    roles = dict(spec.roles)
    roles[role] = replace(roles[role], **changes)
    return replace(spec, roles=MappingProxyType(roles))


# --- parsing helpers -------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    except OSError as e:
        raise ConfigError(f"cannot read models file {path}: {e.strerror}") from None


def _table(doc: dict, key: str, path: Path) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def _parse_model(name: str, table: Any, path: Path) -> ModelSpec:
    where = f"{path} [models.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    _check_keys(table, _MODEL_KEYS, where)
    for k, v in table.items():
        if not isinstance(v, str):
            raise ConfigError(f"{where}: {k} must be a string, got {v!r}")
    if ("source" in table) == ("path" in table):
        raise ConfigError(f"{where}: give exactly one of source = \"pypi:…\" / \"hf:…\" or path = \"file.gguf\"")
    if "path" in table:
        p = Path(table["path"]).expanduser()
        ref, kind = str(p if p.is_absolute() else (path.parent / p).resolve()), "path"
    else:
        kind, _, ref = table["source"].partition(":")
        if kind not in ("pypi", "hf") or not ref:
            raise ConfigError(f"{where}: source {table['source']!r} must start with pypi: or hf:")
    if kind == "pypi" and not ("==" in ref and table.get("file") and table.get("sha256")):
        raise ConfigError(f"{where}: a pypi source needs a pinned requirement (pkg==version), file and sha256")
    sha = table.get("sha256")
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha.lower())):
        raise ConfigError(f"{where}: sha256 must be 64 hex digits")
    role = table.get("role")
    if role is not None and role not in ALL_ROLES:
        raise ConfigError(f"{where}: unknown role {role!r}; valid roles: {', '.join(ALL_ROLES)}")
    return ModelSpec(
        name=name, kind=kind, ref=ref, file=table.get("file"), sha256=sha and sha.lower(),
        outtype=table.get("outtype", "q4_k_m"), revision=table.get("revision"), role=role,
    )


def _parse_toolsource(name: str, table: Any, path: Path) -> Any:
    where = f"{path} [toolsources.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    if ":" in name:
        raise ConfigError(f"{where}: a tool source name cannot contain ':' (it would read as module:ATTR)")
    _check_keys(table, ("mcp",), where)
    if "mcp" not in table:
        raise ConfigError(f'{where}: give mcp = {{ command = "python", args = ["-m", "mcp_server_time"] }} '
                          f'or mcp = {{ url = "http://127.0.0.1:8931/mcp" }}')
    from .tools.mcp import McpServer

    return McpServer.from_table(table["mcp"], where, path.parent)


def _check_keys(table: Mapping, valid: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(valid))}")


def _check_type(key: str, value: Any, where: str) -> None:
    want = _TYPES.get(key)
    if want is None:
        return
    # bool is an int in Python; reject it where a number is expected
    if not isinstance(value, want) or (bool not in want and isinstance(value, bool)):
        names = " or ".join(t.__name__ for t in want)
        raise ConfigError(f"{where}: {key} must be {names}, got {value!r}")
    # TOML, env and flags all accept nan / inf; llama.cpp aborts the process on a NaN temperature
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if k == "sampling" and isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _relative_paths(layer: dict[str, Any], src: Path) -> dict[str, Any]:
    adapter = layer.get("adapter")
    resolve = lambda a: a if Path(a).expanduser().is_absolute() else str((src.parent / a).resolve())  # noqa: E731
    if isinstance(adapter, str):
        layer = {**layer, "adapter": resolve(adapter)}
    elif isinstance(adapter, list) and all(isinstance(a, str) for a in adapter):
        layer = {**layer, "adapter": [resolve(a) for a in adapter]}
    if isinstance(layer.get("trunk_adapter"), str):
        layer = {**layer, "trunk_adapter": resolve(layer["trunk_adapter"])}
    return layer


def _apply(layer: dict[str, Any], key: str, value: Any, where: str) -> None:
    if key in _SAMPLING_KEYS:
        _check_type(key, value, where)
        layer["sampling"] = {**(layer.get("sampling") or {}), key: value}
    elif key in _ROLE_KEYS and key != "sampling":
        if key in ("adapter", "trunk_adapter"):
            layer.pop(f"{key}_sha256", None)
        layer[key] = value
    else:
        valid = ", ".join(sorted(OVERRIDE_KEYS + ("model", "adapter")))
        raise ConfigError(f"{where}: unknown role setting {key!r}; valid: {valid}")


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _ENV_KEYS:
        var = f"UMI_EDGE_{key.upper()}"
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        want = _TYPES[key]
        if str in want:         # e.g. UMI_EDGE_TYPE_K=q8_0: taken as written
            out[key] = raw
            continue
        try:
            out[key] = int(raw) if want == (int,) else float(raw)
        except ValueError:
            kind = "an integer" if want == (int,) else "a number"
            raise ConfigError(f"environment: {var}={raw!r} is not {kind}") from None
    return out


def _role_spec(role: str, layer: dict[str, Any], where: str, registry: Registry) -> RoleSpec:
    w = f"{where} {role}"
    if "model" not in layer:
        raise ConfigError(f"{w}: no model; set model = \"NAME\" (known models: {_names(registry.models)})")
    registry.model(layer["model"])
    remote = remote_spec(layer, w)   # pops engine and the server keys; None for a local role
    sampling = layer.pop("sampling", None) or {}
    if not isinstance(sampling, dict):
        raise ConfigError(f"{w}: sampling must be a table like {{ temperature = 0.5, top_p = 1.0 }}")
    _check_keys(sampling, _SAMPLING_KEYS, f"{w} sampling")
    for k, v in sampling.items():
        _check_type(k, v, f"{w} sampling")
    for k, v in layer.items():
        _check_type(k, v, w)
    for k in ("n_ctx", "n_batch", "max_tokens"):
        if k in layer and layer[k] <= 0:
            raise ConfigError(f"{w}: {k} must be positive, got {layer[k]}")
    if layer.get("n_ctx", MIN_N_CTX) < MIN_N_CTX:
        raise ConfigError(f"{w}: n_ctx must be at least {MIN_N_CTX}, got {layer['n_ctx']}")
    for k in ("adapter", "adapter_sha256"):
        if isinstance(layer.get(k), list):
            if not layer[k] or not all(isinstance(a, str) for a in layer[k]):
                raise ConfigError(f"{w}: {k} must be a string or a non-empty list of strings")
            layer[k] = tuple(layer[k])
    if "adapter_sha256" in layer:
        n_sha = 1 if isinstance(layer["adapter_sha256"], str) else len(layer["adapter_sha256"])
        n_ad = 0 if layer.get("adapter") is None else 1 if isinstance(layer["adapter"], str) else len(layer["adapter"])
        if n_sha != n_ad:
            raise ConfigError(f"{w}: adapter_sha256 needs one checksum per adapter ({n_ad}), got {n_sha}")
    if "trunk_adapter_sha256" in layer and "trunk_adapter" not in layer:
        raise ConfigError(f"{w}: trunk_adapter_sha256 without a trunk_adapter")
    if layer.get("type_k", "f16") not in ("f16", "q8_0"):
        raise ConfigError(f"{w}: type_k must be \"f16\" or \"q8_0\", got {layer['type_k']!r}")
    if layer.get("max_tokens", RoleSpec.max_tokens) >= layer.get("n_ctx", RoleSpec.n_ctx):
        raise ConfigError(f"{w}: max_tokens must be smaller than n_ctx")
    samp = Sampling(**{k: (float(v) if isinstance(getattr(Sampling, k), float) else v) for k, v in sampling.items()})
    if samp.temperature < 0 or not 0 < samp.top_p <= 1:
        raise ConfigError(f"{w}: temperature must be ≥ 0 and top_p in (0, 1]")
    if remote is not None:
        check_sampling(remote, samp, w)
    return RoleSpec(role=role, sampling=samp, remote=remote, **layer)


def _check_shared_contexts(roles: Mapping[str, RoleSpec], where: str) -> None:
    for r in roles.values():
        host = roles.get(r.share_context) if r.share_context else None
        if r.share_context is None:
            continue
        if host is None or host is r:
            raise ConfigError(f"{where} {r.role}: share_context = {r.share_context!r} must name another role "
                              f"({', '.join(x for x in roles if x != r.role)})")
        if host.remote is not None:
            raise ConfigError(f"{where} {r.role}: share_context = {r.share_context!r} names a remote role, which "
                              f"has no local context")
        if host.share_context is not None:
            raise ConfigError(f"{where} {r.role}: share_context = {r.share_context!r} names a role that itself "
                              f"shares {host.share_context!r}; name {host.share_context!r} instead")
        if (host.model, host.n_ctx, host.n_batch, host.type_k, host.threads) != (r.model, r.n_ctx, r.n_batch,
                                                                                  r.type_k, r.threads):
            raise ConfigError(f"{where} {r.role}: share_context = {r.share_context!r} needs the same model, n_ctx, "
                              f"n_batch, type_k and threads as that role")
        if r.trunk_adapter is not None and r.trunk_adapter != host.trunk_adapter:
            raise ConfigError(f"{where} {r.role}: trunk_adapter belongs to the context; set it on "
                              f"{r.share_context!r} (the host), not on a role that shares it")


def _check_gpu_layers(roles: Mapping[str, RoleSpec], where: str) -> None:
    seen: dict[str, int] = {}
    for r in roles.values():
        if r.remote is not None:    # its layers live on the server
            continue
        if seen.setdefault(r.model, r.n_gpu_layers) != r.n_gpu_layers:
            raise ConfigError(f"{where}: roles sharing model {r.model!r} ask for different n_gpu_layers; use one value")


def _names(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(mapping)) or "(none)"


def _where(registry: Registry) -> str:
    return "from " + " + ".join(str(f) for f in registry.files)
