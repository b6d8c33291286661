"""What a vector-index backend declares about itself, for everything that reads it.

A backend is a class that implements `VectorIndex` (see `cbir.index.base`), inherits
`Backend` and registers with `@register_backend("name")` (`cbir.index`). Its class attributes
say, once, what settings resolution, `create_index`, the CLI's help, `cbir dev`, the
benchmark's backend runs and the contract tests need to know:

    declared_settings  its typed settings (`Setting`): the constructor's keyword arguments
    keeps_data       True for a server: it holds the vectors between runs, so a collection
                     syncs it instead of rebuilding it from its database at every open
    connection       the setting naming where the server is (its `env` points a deployment's
                     collections at their cluster); None for an in-process index
    name_setting     the setting naming its index / collection on that server
    index_kinds      the index-spec kinds its `index` setting takes (`cbir.index.spec`); its
                     `search` setting then takes that kind's search spec
    dev_server       the module under `cbir.servers` that `cbir dev NAME` runs, if any

and two class methods: `locate` (where a stored connection points, relative to the
collection folder) and `upgrade` (stored settings written by an older cbir, in today's
vocabulary).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from cbir.errors import CbirError

# Keys that name a credential: refused as settings (they would be stored in a manifest, and
# flags end up in shell histories); also hidden in the lock file's command line.
SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")
_TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


@dataclass(frozen=True)
class Setting:
    """One keyword argument of a backend's constructor."""

    name: str
    type: type  # str, int, float or bool
    default: Any  # None: the backend decides (e.g. a batch size that depends on the server)
    help: str
    secret: bool = False  # a credential: read from `env` only, never stored or given as an option
    env: str | None = None  # the environment variable that sets it

    def checked(self, value: Any, backend: str) -> Any:
        """`value` as this setting's type (an int for a float); a one-line CbirError
        naming the setting and what it takes otherwise."""
        if value is None and self.default is None:
            return None
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, self.type) and (self.type is bool or not isinstance(value, bool)):
            return value
        raise CbirError(
            f"backend {backend!r}: setting {self.name} must be {_TYPE_WORDS[self.type]} "
            f"({self.help}), got {value!r}"
        )

    def from_environment(self, backend: str) -> Any:
        """The value `env` gives, None when unset or empty."""
        text = os.environ.get(self.env or "")
        if not text:
            return None
        if self.type is str:
            return text
        try:
            return self.type(text)
        except ValueError:
            raise CbirError(f"${self.env} must be {_TYPE_WORDS[self.type]}, got {text!r}") from None


class Backend:
    """The declaration every registered backend inherits and overrides (see the module)."""

    name: ClassVar[str] = ""  # set by @register_backend
    declared_settings: ClassVar[tuple[Setting, ...]] = ()
    keeps_data: ClassVar[bool] = False
    connection: ClassVar[str | None] = None
    name_setting: ClassVar[str | None] = None
    index_kinds: ClassVar[tuple[str, ...]] = ()
    dev_server: ClassVar[str | None] = None

    @classmethod
    def setting(cls, name: str) -> Setting:
        return next(s for s in cls.declared_settings if s.name == name)

    @classmethod
    def options(cls) -> list[Setting]:
        """The settings a user may give (everything but credentials)."""
        return [s for s in cls.declared_settings if not s.secret]

    @classmethod
    def default_connection(cls) -> str:
        """Where a new collection's server is: the environment's, else the declared default."""
        assert cls.connection is not None
        setting = cls.setting(cls.connection)
        return setting.from_environment(cls.name) or setting.default

    @classmethod
    def locate(cls, settings: dict[str, Any], folder: Path) -> dict[str, Any]:
        """Constructor settings for an index whose stored connection is relative to `folder`
        (a collection's folder, a benchmark's scratch folder). Servers: unchanged."""
        return settings

    def copy(self) -> Any:
        """An independent copy of an index held in this process, for a server's second
        snapshot to start from instead of reading every vector from the database again. This
        default deep-copies; a backend holding what deepcopy cannot copy (faiss) overrides it,
        and one holding large arrays copies them without the memo's bookkeeping."""
        return copy.deepcopy(self)

    @classmethod
    def upgrade(cls, stored: dict[str, Any]) -> dict[str, Any]:
        """Stored settings in the vocabulary of this cbir (older manifests used others)."""
        return stored


def refuse_secrets(backend: type[Backend] | None, settings: dict[str, Any]) -> None:
    """A CbirError when `settings` hold a credential (a declared secret, or a key that looks
    like one): credentials come from the environment only."""
    for key in settings:
        declared = backend is not None and key in {
            s.name for s in backend.declared_settings if s.secret
        }
        if declared or any(word in key.lower().replace("-", "_") for word in SECRET_WORDS):
            variables = [s.env for s in backend.declared_settings if s.secret] if backend else []
            where = f" ({', '.join(v for v in variables if v)})" if variables else ""
            raise CbirError(
                f"backend setting {key!r} looks like a secret, and settings are stored in the "
                f"collection's manifest: pass credentials through the environment instead{where}"
            )


def lazy_import(name: str) -> ModuleType:
    """Module `name`, executed on first attribute access (importlib's LazyLoader), so that a
    backend module can be imported for its declaration (the CLI's help) without loading its
    engine: faiss alone takes ~0.3 s to import."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
