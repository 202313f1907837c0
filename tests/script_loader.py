"""Import a script (tools/*.py, tests helpers) by path, once per test session."""
import importlib.util
import sys
from pathlib import Path


def load_script(path: Path, name: str):
    """sys.modules keeps the module so worker processes can unpickle its functions."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
