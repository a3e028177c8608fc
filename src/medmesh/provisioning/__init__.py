"""Setting up and taking down what the platform serves: patients and their care teams, devices,
people's accounts, API tokens, partners' OAuth clients. Used by the
command line, the demo and the tests; each step is one transaction through the store."""

from __future__ import annotations

from medmesh.provisioning.accounts import (
    UserAccount,
    activate_totp,
    create_organization,
    create_user,
    reset_password,
    reset_totp,
    set_disabled,
    unlock,
)
from medmesh.provisioning.clients import (
    register_app_client,
    register_client,
    set_client_disabled,
)
from medmesh.provisioning.device_signing import require_signatures, set_signing_key
from medmesh.provisioning.devices import (
    DeviceCredential,
    assign_device,
    register_device,
    rotate_device_secret,
    set_shared_monitor,
)
from medmesh.provisioning.patients import (
    CARE_TEAM_ROLES,
    DEFAULT_IDENTIFIER_SYSTEM,
    add_to_care_team,
    create_patient,
    undo_merge,
)
from medmesh.provisioning.tokens import issue_service_token, issue_user_token

__all__ = [
    "CARE_TEAM_ROLES",
    "DEFAULT_IDENTIFIER_SYSTEM",
    "DeviceCredential",
    "UserAccount",
    "activate_totp",
    "add_to_care_team",
    "assign_device",
    "create_organization",
    "create_patient",
    "create_user",
    "issue_service_token",
    "issue_user_token",
    "register_app_client",
    "register_client",
    "register_device",
    "require_signatures",
    "reset_password",
    "reset_totp",
    "rotate_device_secret",
    "set_client_disabled",
    "set_disabled",
    "set_shared_monitor",
    "set_signing_key",
    "undo_merge",
    "unlock",
]
