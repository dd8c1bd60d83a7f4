"""Request validation: is an action, resource and context well formed?

Requests repeat, so what was found valid is remembered, in sets bounded in
entries and bytes (a resource can be 1 KiB, and the sender chooses it).
"""

from __future__ import annotations

from capgate._caveats import Request
from capgate._grants import resource_problem
from capgate._text import ACTION_RE, CTX_KEY_RE

__all__ = ["request_problem"]

_MAX_CTX_ITEMS = 32
_MAX_CTX_VALUE = 1024
_VALID_ACTIONS: set[str] = set()
_VALID_RESOURCES: set[str] = set()
_VALID_CTX_KEYS: set[str] = set()
_MEMO_LIMIT = 100_000
_ACTIONS_LIMIT = 10_000
_VALID_RESOURCE_BYTES = 8 << 20
_valid_resource_bytes = 0


def request_problem(request: Request) -> str | None:
    """Why ``request`` is not a valid request, or None when it is."""
    action, resource, ctx = request.action, request.resource, request.ctx
    # Requests repeat: remember what was already found valid (bounded). Only an exact
    # str is looked up and remembered: anything else may be unhashable, or a subclass
    # that claims to equal a valid value; it is checked in full every time.
    if type(action) is not str or action not in _VALID_ACTIONS:
        if not isinstance(action, str) or ACTION_RE.fullmatch(action) is None:
            return f"action {action!r} is not a valid action name"
        _remember(_VALID_ACTIONS, action)
    if type(resource) is not str or resource not in _VALID_RESOURCES:
        problem = resource_problem(resource)
        if problem is not None:
            return f"resource {resource!r} {problem}"
        if type(resource) is str:
            global _valid_resource_bytes
            _valid_resource_bytes += 100 + len(resource)
            if len(_VALID_RESOURCES) > _MEMO_LIMIT or _valid_resource_bytes > _VALID_RESOURCE_BYTES:
                _VALID_RESOURCES.clear()
                _valid_resource_bytes = 0
            _VALID_RESOURCES.add(resource)
    if ctx:
        if len(ctx) > _MAX_CTX_ITEMS:
            return f"more than {_MAX_CTX_ITEMS} context entries"
        for k, v in ctx.items():
            if type(k) is not str or k not in _VALID_CTX_KEYS:
                if not isinstance(k, str) or CTX_KEY_RE.fullmatch(k) is None:
                    return f"context key {k!r} is not valid"
                _remember(_VALID_CTX_KEYS, k)
            if not isinstance(v, str) or len(v) > _MAX_CTX_VALUE:
                return f"context value for {k!r} is not text of at most {_MAX_CTX_VALUE} chars"
    return None


def _remember(valid: set[str], name: str) -> None:
    """Remember a valid action or context key (small vocabularies), if exactly a str."""
    if type(name) is str:
        if len(valid) > _ACTIONS_LIMIT:
            valid.clear()
        valid.add(name)
