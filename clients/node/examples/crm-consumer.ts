// The CRM consumer of the CRM-specific data sync design, on the SDK: credit configurations
// into a local map, roles kept only when they carry CRM permissions, users counted. Gaps,
// and reconnects are the SDK's business. The maps live in memory, so each start loads the state
// routes from their snapshot (`bootstrap`); an application whose local copy is durable keeps
// the positions next to it instead (a `PositionStore`, e.g. `JsonFileStore`) and skips that.
//
//   REDIS_URL=redis://127.0.0.1:6379 TENANT=tenant-123 npx tsx examples/crm-consumer.ts
import {
  SluiceConsumer,
  type EventContext,
  type SluiceEvent,
  type Snapshot,
} from "../src"; // in an application: from "@sluice/consumer"

interface CreditConfig {
  config_id: string;
  operation_code: string;
  credit_cost: number;
  is_active: boolean;
}

interface Role {
  role_id: string;
  role_name: string;
  permissions: string[];
  is_active: boolean;
}

const CRM_PERMISSIONS = (p: string) => p.startsWith("crm.") || p === "user-management" || p === "role-management";

export class CrmConsumer {
  /** operation_code -> credit cost, what lead creation reads. */
  readonly creditCosts = new Map<string, number>();
  /** config_id -> config: a DELETE names the row by id only. */
  private readonly configs = new Map<string, CreditConfig>();
  readonly roles = new Map<string, Role>();
  readonly users = new Set<string>();
  readonly consumer: SluiceConsumer;

  constructor(
    readonly tenantId: string,
    redisUrl: string,
  ) {
    this.consumer = new SluiceConsumer({
      redis: redisUrl,
      channels: ["credit-configs", "roles", "users"].map((type) => `crm:${tenantId}:${type}`),
      handler: (event, ctx) => this.apply(event, ctx),
      // History could not cover a gap: reload the routes that keep state from their snapshot.
      onResync: async (info) => {
        console.warn(`${info.channel}: resync needed (${info.reason})`);
        if (!info.channel.endsWith(":users")) this.load(await info.bootstrap());
      },
    });
  }

  async start(): Promise<void> {
    await this.consumer.start();
    // The current records of the state routes; the handler goes on from their seq.
    for (const type of ["credit-configs", "roles"]) {
      await this.consumer.bootstrap(`crm:${this.tenantId}:${type}`, (snapshot) => this.load(snapshot));
    }
    console.log(`CRM subscribed to tenant ${this.tenantId} channels`);
  }

  stop(): Promise<void> {
    return this.consumer.stop();
  }

  /** Lead creation reads its cost locally, as in the design. */
  creditCost(operationCode = "crm.leads.create"): number {
    const cost = this.creditCosts.get(operationCode);
    if (cost === undefined) throw new Error("Credit configuration not found");
    return cost;
  }

  // Idempotent: applying the same event twice leaves the same maps.
  private apply(event: SluiceEvent, _ctx: EventContext): void {
    const gone = event.operation === "DELETE" || event.operation === "MOVED_OUT";
    switch (event.dataType) {
      case "credit-configs":
        if (event.operation === "TRUNCATE") this.configs.clear();
        else if (gone) this.configs.delete(event.recordId as string);
        else this.configs.set(event.recordId as string, event.data as unknown as CreditConfig);
        this.reindexCosts();
        break;
      case "roles": {
        const role = event.data as unknown as Role;
        if (event.operation === "TRUNCATE") this.roles.clear();
        else if (gone || !role.permissions.some(CRM_PERMISSIONS)) this.roles.delete(event.recordId as string);
        else this.roles.set(event.recordId as string, role);
        break;
      }
      case "users":
        if (gone) this.users.delete(event.recordId as string);
        else if (event.operation !== "TRUNCATE") this.users.add(event.recordId as string);
        break;
    }
  }

  private load(snapshot: Snapshot): void {
    const rows = [...snapshot.records.values()];
    if (snapshot.channel.endsWith(":credit-configs")) {
      this.configs.clear();
      for (const e of rows) this.configs.set(e.recordId as string, e.data as unknown as CreditConfig);
      this.reindexCosts();
    } else {
      this.roles.clear();
      for (const e of rows) this.apply(e, { channel: snapshot.channel, delivery: "history", position: undefined });
    }
  }

  private reindexCosts(): void {
    this.creditCosts.clear();
    for (const c of this.configs.values()) {
      if (c.is_active) this.creditCosts.set(c.operation_code, Number(c.credit_cost));
    }
  }
}

if (require.main === module) {
  const crm = new CrmConsumer(process.env.TENANT ?? "tenant-123", process.env.REDIS_URL ?? "redis://127.0.0.1:6379");
  crm.start().catch((error) => {
    console.error(error);
    process.exit(1);
  });
  process.on("SIGINT", () => void crm.stop().then(() => process.exit(0)));
}
