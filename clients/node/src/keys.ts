// Key names of the recoverable-channel contract. The braces are a Redis Cluster hash tag,
// so a channel's keys share one slot.
export const metaKey = (channel: string): string => `sluice:meta:{${channel}}`;
export const historyKey = (channel: string): string => `sluice:history:{${channel}}`;
export const stateKey = (channel: string): string => `sluice:state:{${channel}}`;
