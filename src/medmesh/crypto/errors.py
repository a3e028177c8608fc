"""Errors of the crypto package. Messages name what failed, never a value or a key."""

from __future__ import annotations

from medmesh.domain.errors import MedmeshError


class KeyringError(MedmeshError):
    """The master keyring is missing, unreadable, too widely readable, or lacks a key."""


class DataKeyDestroyed(MedmeshError):
    """The patient's data key was destroyed (the patient was erased): their data is gone."""


class Undecryptable(MedmeshError):
    """Ciphertext that fails authentication: tampered, moved to another row, or wrong key."""
