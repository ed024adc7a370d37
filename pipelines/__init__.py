"""The `infu` CLI and the Ray jobs that wire stages together."""
