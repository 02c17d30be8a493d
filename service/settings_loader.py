"""Loading settings: the YAML file, CARDVAULT_* variables and flags, merged and validated once.

Precedence, lowest first: the schema defaults (mirrored in
``config/default.yaml``), the file given by ``--config`` or
``CARDVAULT_CONFIG``, ``CARDVAULT_*`` environment variables, command-line
flags.  Any mistake becomes one ConfigError line naming the key and where it
came from.  The shapes themselves live in ``service.settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from marshmallow import EXCLUDE, ValidationError

from service.errors import ConfigError
from service.settings import ENV_ALIASES, ENV_NOT_SETTINGS, ENV_PREFIX, Settings
from service.settings_schema import SettingsSchema


def _first_error(messages: Any, path: tuple[str, ...] = ()) -> tuple[str, str]:
    """The first (dotted key, message) in marshmallow's nested error dict."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            return _first_error(value, path if key == "_schema" else (*path, str(key)))
    if isinstance(messages, list) and messages:
        return _first_error(messages[0], path)
    return ".".join(path) or "(top level)", str(messages)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a mapping of settings")
    keys = data.get("keys")
    if isinstance(keys, dict) and "master_key" in keys:
        raise ConfigError(
            f"config file {path}: keys.master_key: a master key never goes in a config file; "
            "use keys.master_key_file or the CARDVAULT_MASTER_KEY variable"
        )
    return data


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested overrides from CARDVAULT_* variables, and which key came from which variable."""
    overrides: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        suffix = name[len(ENV_PREFIX) :]
        path = ENV_ALIASES.get(suffix) or tuple(part.lower() for part in suffix.split("__"))
        _set_path(overrides, path, _env_value(path, value))
        sources[".".join(path)] = name
    return overrides, sources


def _env_value(path: tuple[str, ...], value: str) -> Any:
    if path in (("keys", "previous_master_key_files"), ("proxy", "trusted"), ("proxy", "proxy_protocol_trusted")):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if value == "" or value.lower() in ("null", "none"):
        return None
    return value


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the one Settings object from file, environment and flags, or raise ConfigError."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get("CARDVAULT_CONFIG"):
        config_file = Path(env["CARDVAULT_CONFIG"])
    raw: dict[str, Any] = _read_yaml(config_file) if config_file else {}
    env_data, sources = _env_overrides(env)
    raw = _merge(raw, env_data)
    raw = _merge(raw, overrides or {})
    try:
        settings: Settings = SettingsSchema().load(raw)
    except ValidationError as exc:
        key, message = _first_error(exc.messages)
        env_name = next((name for k, name in sources.items() if k == key or k.startswith(key + ".")), None)
        origin = f" (from {env_name})" if env_name else (f" (in {config_file})" if config_file else "")
        raise ConfigError(f"{key}: {message}{origin}") from None
    return settings


def defaults_as_dict() -> dict[str, Any]:
    """The schema defaults as plain data, for comparing with config/default.yaml."""
    plain: dict[str, Any] = _plain(SettingsSchema(unknown=EXCLUDE).load({}))
    return plain


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
