"""The master key of sealed events: from the environment or a key file, never from a flag's
value, never printed (README "Erasure that reaches the log")."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from profile_engine.crypto import KeyMaterialError, KeyRing, master_key_from_text

F = TypeVar("F", bound=Callable[..., Any])

MASTER_KEY_ENV = "PROFILE_ENGINE_MASTER_KEY"
KEY_FILE_ENV = "PROFILE_ENGINE_KEY_FILE"


def key_file_option(func: F) -> F:
    return click.option(
        "--key-file",
        "key_file",
        envvar=KEY_FILE_ENV,
        show_envvar=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"File holding the master key (base64 of 32 bytes), readable by its owner only "
        f"(mode 0600). Without it, {MASTER_KEY_ENV} is used; with neither, events are "
        "published and folded in clear.",
    )(func)


def load_master_key(key_file: Path | None) -> bytes | None:
    """The master key, or None when none is configured (events stay in clear)."""
    if key_file is not None:
        return _from_file(key_file)
    text = os.environ.get(MASTER_KEY_ENV)
    if text is None or not text.strip():
        return None
    return master_key_from_text(text, MASTER_KEY_ENV)


def _from_file(path: Path) -> bytes:
    try:
        info = path.stat()
    except OSError as error:
        raise KeyMaterialError(f"key file {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyMaterialError(f"key file {path}: not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyMaterialError(
            f"key file {path} is readable by others (mode {mode:04o}); it must be readable "
            f"by its owner only: chmod 600 {path}"
        )
    if info.st_uid != os.getuid():
        raise KeyMaterialError(f"key file {path} belongs to another user")
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyMaterialError(f"key file {path}: cannot read it ({error})") from None
    return master_key_from_text(text, f"key file {path}")


def sealing_config(key_file: Path | None, bootstrap_servers: str, topic: str) -> Any:
    """consumers.key_store.SealingConfig for the topic, or None without a master key."""
    master = load_master_key(key_file)
    if master is None:
        return None
    from consumers.key_store import SealingConfig, key_topic_for

    return SealingConfig(master, bootstrap_servers, key_topic_for(topic))


def key_ring(key_file: Path | None) -> KeyRing | None:
    master = load_master_key(key_file)
    return None if master is None else KeyRing.from_master(master)
