"""The default key setup: a local keyring file and a local key store, placed next to the main
SQLite database (or, for PostgreSQL, in a per-database directory under the user's data home)
unless the settings name them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from medmesh.crypto.envelope import Cipher
from medmesh.crypto.keyring import LocalKeyFile
from medmesh.crypto.keystore import LocalKeyStore


def default_key_paths(database_url: str) -> tuple[Path, Path]:
    """(master keyring file, key store file) for a database when the settings name neither."""
    url = make_url(database_url)
    if url.drivername.startswith("sqlite"):
        if not url.database or url.database == ":memory:":
            raise ValueError("an in-memory SQLite database needs explicit key file settings")
        main = Path(url.database).resolve()
        return (
            main.with_name(main.name + ".master-keys.json"),
            main.with_name(main.name + ".keys.db"),
        )
    where = f"{url.host or 'local'}-{url.port or 5432}-{url.database or 'postgres'}"
    home = Path.home() / ".local" / "share" / "medmesh" / "keys" / where
    return home / "master-keys.json", home / "patient-keys.db"


def local_cipher(
    database_url: str, master_key_file: Path | None = None, key_store_path: Path | None = None
) -> Cipher:
    """A Cipher over the local keyring and key store (created on first use)."""
    default_master, default_store = default_key_paths(database_url)
    return Cipher(
        LocalKeyFile(master_key_file or default_master),
        LocalKeyStore(key_store_path or default_store),
    )
