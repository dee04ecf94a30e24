"""Importers: other tools' training configs written out as one recipe (``recipes import ...``)."""
