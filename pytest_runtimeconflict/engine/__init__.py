"""The session engine: runs plan items through the sandbox and the diagnosis and records their entries (no pytest import)."""
