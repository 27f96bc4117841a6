"""Cartwise platform core: settings, database, Redis, storage, auth, protection, errors, logging."""
