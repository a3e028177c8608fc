"""Who may do what: device and API credentials, roles, and the one place requests are checked."""
