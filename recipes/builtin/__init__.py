"""The built-in plugins: registered like any third-party plugin (see recipes.plugins.registry)."""
