"""meshsolve: proofs and synthesis for service-mesh traffic capture."""

from meshsolve.errors import MeshsolveError, ParseError, SpecError, UnsupportedError, WorldError

__version__ = "0.1.0"

__all__ = ["MeshsolveError", "ParseError", "SpecError", "UnsupportedError", "WorldError", "__version__"]
