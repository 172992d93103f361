"""The CRM consumer of the CRM-specific data sync design, on sluice_consumer.

It keeps, for one tenant, the credit configurations in a local dict (operation code -> cost, as
`create_lead` needs them), the CRM-relevant roles (filtered by permission), and the users.
Every change arrives once and in order per channel; what the process missed while it was down
or disconnected is read from Sluice's history; when history cannot cover a gap, the two routes
that keep state (credit configs, roles) are rebuilt from `sluice:state`.

    python examples/crm_consumer.py --redis redis://localhost:6379 --tenant tenant-123
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from decimal import Decimal
from typing import Any

from sluice_consumer import Consumer, Event, JsonFilePositionStore, ResyncNeeded, app_channels

log = logging.getLogger("crm")

CRM_PERMISSIONS = ("user-management", "role-management")


def is_crm_relevant_role(role: dict[str, Any]) -> bool:
    return any(p.startswith("crm.") or p in CRM_PERMISSIONS for p in role.get("permissions") or [])


class CRMSyncConsumer:
    def __init__(self, redis_url: str, tenant_id: str, positions: str) -> None:
        self.tenant_id = tenant_id
        self.credit_configs: dict[str, dict[str, Any]] = {}  # config_id -> row
        self.roles: dict[str, dict[str, Any]] = {}  # role_id -> row (CRM-relevant only)
        self.users: dict[str, dict[str, Any]] = {}  # user_id -> row
        self.consumer = Consumer(
            redis_url,
            app_channels("crm", [tenant_id]),  # crm:<tenant>:*
            self.handle,
            # Keep positions next to your data: here a file, in a real service your database.
            store=JsonFilePositionStore(positions),
            on_resync=self.resync,
        )

    # -- the handler: idempotent (an upsert or a delete by id), so a redelivery is harmless --

    def handle(self, event: Event) -> None:
        table = {"credit-configs": self.credit_configs, "roles": self.roles, "users": self.users}.get(event.data_type)
        if table is None:
            return
        self.apply(table, event)

    def apply(self, table: dict[str, dict[str, Any]], event: Event) -> None:
        if event.operation == "TRUNCATE":
            table.clear()
            return
        if event.record_id is None:
            return
        row = event.data or {}
        if event.removes_record or (event.data_type == "roles" and not is_crm_relevant_role(row)):
            table.pop(event.record_id, None)  # deleted, moved to another tenant/app, or no longer CRM's
            return
        table[event.record_id] = row
        log.info("%s %s %s", event.operation, event.data_type, event.record_id)

    # -- history could not cover a gap --

    async def resync(self, notice: ResyncNeeded) -> None:
        log.warning("resync needed on %s (%s)", notice.channel, notice.reason)
        dtype = notice.channel.rsplit(":", 1)[-1]
        table = {"credit-configs": self.credit_configs, "roles": self.roles}.get(dtype)
        if table is None:
            log.warning("%s keeps no state in Redis: reload users from the source of truth", notice.channel)
            return
        snapshot = await self.consumer.bootstrap(notice.channel)
        table.clear()
        for event in snapshot.records.values():
            self.apply(table, event)
        log.info("rebuilt %s from state at %s: %d records", notice.channel, snapshot.position, len(table))

    # -- what the CRM uses it for --

    def credit_cost(self, operation_code: str) -> Decimal:
        for row in self.credit_configs.values():
            if row.get("operation_code") == operation_code and row.get("is_active", True):
                return Decimal(str(row["credit_cost"]))
        raise LookupError(f"credit configuration not found: {operation_code}")

    def create_lead(self, lead: dict[str, Any], available_credits: Decimal) -> dict[str, Any]:
        cost = self.credit_cost("crm.leads.create")
        if available_credits < cost:
            raise ValueError("insufficient credits")
        return {**lead, "charged": str(cost)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://localhost:6379")
    parser.add_argument("--tenant", default="tenant-123")
    parser.add_argument("--positions", default="crm-positions.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    crm = CRMSyncConsumer(args.redis, args.tenant, args.positions)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(crm.consumer.stop()))
    await crm.consumer.run()


if __name__ == "__main__":
    asyncio.run(main())
