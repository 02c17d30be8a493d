"""Options every subcommand shares, and turning them into Settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from service.settings import Settings
from service.settings_loader import load_settings

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """--config and --data-dir, the two things that say which vault a command works on."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where the embedded Redis, development key and certificate live [env CARDVAULT_DATA_DIR; default ./var].",
    )(func)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML settings file [env CARDVAULT_CONFIG].",
    )(func)


def settings_from(config_file: Path | None, data_dir: Path | None, **overrides: Any) -> Settings:
    merged: dict[str, Any] = {}
    if data_dir is not None:
        merged["data_dir"] = str(data_dir)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = merged
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = str(value) if isinstance(value, Path) else value
    return load_settings(config_file, overrides=merged)
