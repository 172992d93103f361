"""Redis key names of a channel (the braces are a Redis Cluster hash tag)."""

import functools
import re


def meta_key(channel: str) -> str:
    return f"sluice:meta:{{{channel}}}"


def history_key(channel: str) -> str:
    return f"sluice:history:{{{channel}}}"


def state_key(channel: str) -> str:
    return f"sluice:state:{{{channel}}}"


def channel_of_meta_key(key: str) -> str:
    """`sluice:meta:{crm:t:roles}` -> `crm:t:roles`."""
    prefix = "sluice:meta:{"
    if not key.startswith(prefix) or not key.endswith("}"):
        raise ValueError(f"not a meta key: {key!r}")
    return key[len(prefix) : -1]


def app_channels(app: str, tenants: list[str] | None = None, types: list[str] | None = None) -> list[str]:
    """Channels or patterns for an app: every tenant (`crm:*:*`), some tenants
    (`crm:tenant-1:*`), or named types (`crm:tenant-1:roles`)."""
    tenant_parts = tenants if tenants else ["*"]
    type_parts = types if types else ["*"]
    return [f"{app}:{t}:{d}" for t in tenant_parts for d in type_parts]


def is_pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def glob_match(pattern: str, name: str) -> bool:
    """Redis's glob (PSUBSCRIBE, SCAN MATCH): `*`, `?`, `[abc]`, `[^a-z]`, `\\x` for a literal x."""
    return _glob_regex(pattern).fullmatch(name) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i, cls = _glob_class(pattern, i + 1)
            out.append(cls)
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, i: int) -> tuple[int, str]:
    """`[...]` from just after the `[`: (index of the closing `]`, the regex class)."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    i += negate
    items: list[str] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            i += 1
            items.append(re.escape(pattern[i]))
        elif i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            lo, hi = sorted((pattern[i], pattern[i + 2]))
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            i += 2
        else:
            items.append(re.escape(pattern[i]))
        i += 1
    body = "".join(items)
    if not body:
        return i, "[^\\s\\S]" if not negate else "[\\s\\S]"
    return i, f"[{'^' if negate else ''}{body}]"
