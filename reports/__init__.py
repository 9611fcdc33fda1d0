"""Renderers of run results; pure functions of a result dict, never re-running anything."""
