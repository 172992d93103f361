// Key names of the recoverable-channel contract. The braces are a Redis Cluster hash tag,
// so a channel's keys share one slot.
export const metaKey = (channel: string): string => `sluice:meta:{${channel}}`;
export const historyKey = (channel: string): string => `sluice:history:{${channel}}`;
export const stateKey = (channel: string): string => `sluice:state:{${channel}}`;

/** `<app>:<tenant>:<type>`, the channel Sluice publishes a route's events on. */
export const channelName = (app: string, tenant: string, type: string): string => `${app}:${tenant}:${type}`;

/**
 * The patterns that cover an app's channels for a list of tenants: `crm:tenant-1:*`, ...
 * (`*` in a tenant is escaped: tenants are names, not patterns).
 */
export const tenantPatterns = (app: string, tenants: string[]): string[] =>
  tenants.map((tenant) => `${app}:${tenant.replace(/[*?[\]\\]/g, "\\$&")}:*`);
