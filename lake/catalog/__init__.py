"""The catalog: what is stored (model), the protocol every catalog implements (base), SQLite (sqlite)."""
