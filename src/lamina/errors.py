"""The exceptions lamina raises, as one small tree.

Every error the library raises on purpose is a :class:`LaminaError`; the CLI
turns it into a single line on stderr and a non-zero exit, never a traceback.
Errors carry where they happened (file and line, digest, reference) so that
the line is useful on its own::

    LaminaError
    ├── DockerfileError        file + line: parse errors, bad flags, bad values
    │   └── ExpansionError     ${VAR:?message} and malformed substitutions
    ├── BuildError             a step failed (RUN exit code, COPY source missing)
    │   └── ContextError       a path escapes or is missing from the build context
    ├── StoreError             the local store: missing blob, digest mismatch, lock
    │   ├── ImageNotFound      a reference or id that names no image
    │   └── DigestMismatch     content did not hash to the digest it claimed
    ├── ReferenceError_        an image reference that does not parse
    ├── LayerError             a layer archive that is malformed or hostile
    ├── RuntimeError_          the OCI runtime (runc) or snapshotter failed
    └── RegistryError          the distribution API: HTTP status + registry code
        └── AuthError          401/403, bad or missing credentials

Names ending in ``_`` avoid shadowing Python built-ins.
"""

from __future__ import annotations


class LaminaError(Exception):
    """Base of every error lamina raises deliberately."""

    def __str__(self) -> str:
        return " ".join(str(a) for a in self.args) if self.args else type(self).__name__


class DockerfileError(LaminaError):
    """A Dockerfile problem, located at ``file:line``."""

    def __init__(self, message: str, *, file: str = "Dockerfile", line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def located(self, file: str, line: int | None) -> DockerfileError:
        """Return a copy of this error placed at ``file:line`` (keeps a known line)."""
        err = type(self)(self.message, file=file, line=self.line or line)
        err.__cause__ = self.__cause__
        return err


class ExpansionError(DockerfileError):
    """A word expansion failed (``${X:?msg}``, bad substitution)."""


class BuildError(LaminaError):
    """A build step failed; the message already names file, line and step."""


class ContextError(BuildError):
    """A source is missing from, or escapes, the build context."""


class StoreError(LaminaError):
    """The local store could not do what was asked."""


class ImageNotFound(StoreError):
    """No image in the store (or registry) answers to that name."""


class DigestMismatch(StoreError):
    """Content did not hash to the digest it was announced with."""


class ReferenceError_(LaminaError):
    """An image reference that does not parse."""


class LayerError(LaminaError):
    """A layer archive that is malformed, too large, or tries to escape its root."""


class RuntimeError_(LaminaError):
    """The OCI runtime or the snapshotter failed."""


class RegistryError(LaminaError):
    """A registry answered with an error (status and registry error code kept)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AuthError(RegistryError):
    """The registry refused our credentials, or we had none."""


__all__ = [
    "AuthError",
    "BuildError",
    "ContextError",
    "DigestMismatch",
    "DockerfileError",
    "ExpansionError",
    "ImageNotFound",
    "LaminaError",
    "LayerError",
    "ReferenceError_",
    "RegistryError",
    "RuntimeError_",
    "StoreError",
]
