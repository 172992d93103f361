"""Redis key names of a channel (the braces are a Redis Cluster hash tag)."""


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
