"""Applications the real pods run (see :mod:`twin.model.apps` for what they answer)."""
