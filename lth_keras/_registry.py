"""Registries of named, serializable policy classes (scores, resets, arms ...).

A policy is a small object with `get_config()`/`from_config()`; a registry
maps its short name (the string shorthand users pass) to its class, so option
lists, validation and serialization all read one table.
"""

__all__ = ["Policy", "Registry"]


class Policy:
    """Base of serializable policies: `name` is the registered shorthand.

    Subclasses store their constructor arguments as attributes of the same
    names and list them in `get_config`.
    """

    name = None

    def get_config(self):
        """The constructor arguments, JSON-ready. Defaults to none."""
        return {}

    @classmethod
    def from_config(cls, config):
        """The inverse of `get_config`."""
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), repr(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Registry:
    """Named policy classes of one kind.

    Args:
        kind: What the policies are, for messages (`"score"`, `"reset"`).
        base: The base class every registered class derives from.
    """

    def __init__(self, kind, base):
        self.kind = kind
        self.base = base
        self._classes = {}

    def register(self, name):
        """A class decorator registering the class under `name`."""

        def decorate(cls):
            if not issubclass(cls, self.base):
                raise TypeError(
                    f"A {self.kind} must subclass {self.base.__name__}. Received: {cls!r}"
                )
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"A {self.kind} named {name!r} is already registered.")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def names(self):
        """The registered names, in registration order."""
        return tuple(self._classes)

    def get(self, identifier, argument=None):
        """A policy from a name, an instance, or `{"name": ..., "config": ...}`.

        Raises:
            ValueError: If the name is not registered, or the identifier is of
                another type.
        """
        argument = argument or self.kind
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, dict) and set(identifier) == {"name", "config"}:
            return self.get(identifier["name"], argument).from_config(identifier["config"])
        if isinstance(identifier, str) and identifier in self._classes:
            return self._classes[identifier]()
        raise ValueError(
            f"Received an invalid value for `{argument}`, expected one of "
            f"{list(self._classes)} or a {self.base.__name__} instance. "
            f"Received: {argument}={identifier!r}"
        )

    def serialize(self, policy):
        """`{"name": ..., "config": ...}` for `get` to rebuild the policy."""
        return {"name": policy.name, "config": policy.get_config()}
