/** Base class of the errors this package raises. */
export class SluiceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A message on a channel that is not a Sluice event (not JSON, or missing its keys). */
export class EventParseError extends SluiceError {
  constructor(
    readonly channel: string,
    readonly raw: string,
    cause?: unknown,
  ) {
    super(`channel ${channel}: not a Sluice event: ${raw.slice(0, 120)}`, { cause });
  }
}

/** The application's handler threw; the event is retried (the channel waits). */
export class HandlerError extends SluiceError {
  constructor(
    readonly channel: string,
    readonly eventId: string,
    cause: unknown,
  ) {
    super(`channel ${channel}: handler failed on event ${eventId}`, { cause });
  }
}

/** Reading history, meta or state from Redis failed; the channel retries. */
export class RecoveryError extends SluiceError {
  constructor(
    readonly channel: string,
    cause: unknown,
  ) {
    super(`channel ${channel}: catching up from Redis failed`, { cause });
  }
}
