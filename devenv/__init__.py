"""Development and test tooling (local PostgreSQL clusters); never imported by the daemon."""
