"""The one function Apply Stand-In Identity (Raylight) sends to Raylight's actors.

Ray pickles a function from an importable module by its module name, and the actors cannot
import this pack under the name ComfyUI gave it (a custom node folder is not on their path).
The node pickles this module's function by value instead; it needs nothing but the standard
library, imports the pack from its folder under a fixed name, and calls the engine there.
"""

PACKAGE = "_standin_pack"
ENGINE = ".engine.identity.sequence_parallel"


def run(model, pack_dir, entry, kwargs):
    import importlib
    import os
    import sys
    import types

    pkg = sys.modules.get(PACKAGE)
    if pkg is None or list(getattr(pkg, "__path__", [])) != [pack_dir]:
        if not os.path.isfile(os.path.join(pack_dir, "engine", "identity", "sequence_parallel.py")):
            raise RuntimeError(
                f"The Stand-In pack is not at {pack_dir} on this Ray worker's machine. Install it "
                f"at the same path on every machine of the Ray cluster.")
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [pack_dir]
        pkg.__package__ = PACKAGE
        sys.modules[PACKAGE] = pkg
    engine = importlib.import_module(PACKAGE + ENGINE)
    return getattr(engine, entry)(model, **kwargs)
