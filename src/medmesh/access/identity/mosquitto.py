"""Broker credentials for devices, in Mosquitto's password-file format.

Each device logs in to the broker with its device id as user name and a password of its own;
the shipped ACL (deploy/mosquitto/acl) lets user X publish only under medmesh/v1/devices/X/.
Mosquitto 2 stores PBKDF2-SHA512 hashes as `user:$7$iterations$salt$hash` (base64), which is
what `mosquitto_passwd` writes; writing it here means provisioning needs no broker tools.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$
SALT_BYTES = 12


def password_hash(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    encode = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def set_password(password_file: Path, username: str, password: str) -> None:
    """Add or replace `username` in the password file, atomically. A new file gets mode 0600
    (give it to the broker's user); an existing one keeps its owner, group and mode.

    Mosquitto reads the file at start-up and on SIGHUP.
    """
    if ":" in username or "\n" in username:
        raise ValueError("a broker user name cannot contain ':' or a newline")
    lines = password_file.read_text().splitlines() if password_file.exists() else []
    kept = [line for line in lines if line.split(":", 1)[0] != username]
    kept.append(f"{username}:{password_hash(password)}")
    password_file.parent.mkdir(parents=True, exist_ok=True)
    # Keep the file's owner, group and mode: the broker (often user mosquitto) must still be
    # able to read it after the rewrite.
    previous = password_file.stat() if password_file.exists() else None
    fd, tmp = tempfile.mkstemp(dir=password_file.parent, prefix=".pw-")
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(kept) + "\n")
    if previous is not None:
        os.chmod(tmp, previous.st_mode & 0o777)
        os.chown(tmp, previous.st_uid, previous.st_gid)
    else:
        os.chmod(tmp, 0o600)
    os.replace(tmp, password_file)
