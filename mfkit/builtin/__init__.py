"""mfkit's own plugins, registered through the same entry points as any third party's (see pyproject.toml)."""
