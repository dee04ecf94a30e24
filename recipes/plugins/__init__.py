"""The plugin contract (``hookspecs``) and the registry that loads built-in and installed plugins."""
