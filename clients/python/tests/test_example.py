"""examples/crm_consumer.py against the real servers."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

from support import caught_up, until
from test_end_to_end import psql

spec = importlib.util.spec_from_file_location("crm_consumer", Path(__file__).parents[1] / "examples" / "crm_consumer.py")
assert spec and spec.loader
crm_consumer = importlib.util.module_from_spec(spec)
sys.modules["crm_consumer"] = crm_consumer
spec.loader.exec_module(crm_consumer)


async def test_crm_consumer_example(redis_server, make_servers, tmp_path):
    servers = make_servers(redis_server)
    crm = crm_consumer.CRMSyncConsumer(redis_server.url, "tenant-123", str(tmp_path / "pos.json"))
    async with crm.consumer:
        await psql(servers, """
            INSERT INTO credit_configurations (config_id, tenant_id, operation_code, credit_cost) VALUES
              ('c1', 'tenant-123', 'crm.leads.create', 2.00), ('c2', 'tenant-123', 'crm.contacts.create', 1.00),
              ('c3', 'tenant-456', 'crm.leads.create', 9.00), ('c4', 'tenant-123', 'hrms.payroll.process', 5.00);
            INSERT INTO roles (role_id, tenant_id, role_name, permissions) VALUES
              ('r1', 'tenant-123', 'sales', '{crm.leads.create}'),
              ('r2', 'tenant-123', 'admins', '{user-management}'),
              ('r3', 'tenant-123', 'both', '{crm.leads.update,hrms.leave.approve}');
            UPDATE credit_configurations SET credit_cost = 3.00 WHERE config_id = 'c1';
            DELETE FROM credit_configurations WHERE config_id = 'c2';
            UPDATE roles SET permissions = '{hrms.leave.approve}' WHERE role_id = 'r3';
        """)
        await until(lambda: set(crm.credit_configs) == {"c1"} and set(crm.roles) == {"r1", "r2"}
                    and crm.credit_configs["c1"]["credit_cost"] == 3, 60, "the changes applied")
        await until(lambda: caught_up(crm.consumer, redis_server.url, "crm:tenant-123:*"), 60, "caught up")
    assert set(crm.credit_configs) == {"c1"}
    assert crm.credit_cost("crm.leads.create") == Decimal("3.00")
    assert crm.create_lead({"name": "ACME"}, Decimal("10"))["charged"] == "3.0"
    # r3 lost its CRM permission: Sluice sends MOVED_OUT on the crm channel, the example drops it.
    assert set(crm.roles) == {"r1", "r2"}
