"""Token scopes, as the distribution token spec spells them.

Kept apart from :mod:`.auth` so that talking to a registry that never challenges
(a loopback one, say) does not load the challenge and token machinery.
"""

from __future__ import annotations

Scope = tuple[str, ...]


def repository_scope(name: str, *actions: str) -> str:
    """``repository:NAME:pull,push`` as the token spec spells a scope."""
    return f"repository:{name}:{','.join(actions)}"
