export { SluiceConsumer, type ConsumerOptions, type ConsumerEvents } from "./consumer";
export type { ClusterConfig, RedisTarget } from "./connection";
export type { UnsubscribedInfo, UnsubscribeReason } from "./cluster/subscriber";
export { MemoryStore, JsonFileStore, type PositionStore, type JsonFileStoreOptions } from "./store";
export { SluiceError, EventParseError, HandlerError, RecoveryError } from "./errors";
export { metaKey, historyKey, stateKey, channelName, tenantPatterns } from "./keys";
export type {
  SluiceEvent,
  Position,
  Delivery,
  EventContext,
  Handler,
  ResyncReason,
  ResyncInfo,
  ResyncHandler,
  Snapshot,
} from "./types";
