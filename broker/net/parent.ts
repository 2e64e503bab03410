// The IPC pipe to the editor that spawned the broker, outbound: messages in order, audit records only while the
// editor follows them (its audit panel is open), and otherwise a coalesced cue that records were written.
import { AUDIT_RECORDS_PER_MESSAGE, COUNTS_ACTIVITY_MS } from '../protocol';
import type { AuditEvent, AuditRecord, BrokerToParent } from '../protocol';

/** How long a durable audit record (or the news of one) may wait to go to the editor with the ones after it. */
export const RECORDS_TO_PARENT_MS = 5;

/** Records that change only counts the editor shows: a minting agent's steady stream. */
const COUNT_EVENTS: ReadonlySet<AuditEvent> = new Set(['token.minted', 'token.exchanged', 'token.used', 'token.use.ended', 'proxy.call', 'proxy.ended']);
/** Records that change nothing the editor shows outside the panel. */
const QUIET_EVENTS: ReadonlySet<AuditEvent> = new Set(['checkpoint', 'token.introspected']);

export interface ParentChannel {
  /** Any message; audit records still waiting go first, so the editor sees everything in the order it happened. */
  post(msg: BrokerToParent): void;
  /**
   * A durable audit record: sent with others within RECORDS_TO_PARENT_MS (or sooner, AUDIT_RECORDS_PER_MESSAGE at
   * once) while the editor follows; counted for `audit.activity` either way.
   */
  record(r: AuditRecord): void;
  /** `audit.follow`: records written from now on are sent (on), or none are, including those still waiting (off). */
  follow(on: boolean): void;
  /** Sends what is waiting now (the broker is stopping). */
  flush(): void;
}

/**
 * Records go in batches: each message wakes the editor's process and costs a write here (~10 µs on this machine's
 * pipes), and a flush of the audit log is only 4-6 records at 5,000 a second, so records wait up to a few
 * milliseconds for the ones after them. The editor with its panel closed pays for none of them: it hears about
 * writes from `audit.activity`, about one message a second under a minting agent. Nothing else waits.
 */
export function parentChannel(send: (msg: BrokerToParent) => void): ParentChannel {
  let following = false;
  let batch: AuditRecord[] = [];
  let timer: NodeJS.Timeout | undefined;
  const flushRecords = (): void => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (batch.length === 0) return;
    const records = batch;
    batch = [];
    send({ type: 'audit.records', records });
  };

  // audit.activity: records since the last message, whether any was more than token activity, and when the first
  // of them came; the last message's time, and the last that was token activity alone (the once-a-second limit).
  let pending = 0;
  let changes = false;
  let since = 0;
  let lastSent = -Infinity;
  let lastCountsOnly = -Infinity;
  let activityTimer: NodeJS.Timeout | undefined;
  let activityDue = 0;
  const flushActivity = (): void => {
    if (activityTimer !== undefined) {
      clearTimeout(activityTimer);
      activityTimer = undefined;
    }
    if (pending === 0) return;
    send({ type: 'audit.activity', records: pending, changes });
    lastSent = performance.now();
    if (!changes) lastCountsOnly = lastSent;
    pending = 0;
    changes = false;
  };
  const noteActivity = (event: AuditEvent): void => {
    if (QUIET_EVENTS.has(event)) return;
    const now = performance.now();
    if (pending === 0) since = now;
    pending++;
    if (!COUNT_EVENTS.has(event)) changes = true;
    // One message per window, after the rest of the burst; token activity alone waits out its second.
    let due = Math.max(since, lastSent) + RECORDS_TO_PARENT_MS;
    if (!changes) due = Math.max(due, lastCountsOnly + COUNTS_ACTIVITY_MS);
    if (activityTimer !== undefined) {
      if (activityDue <= due) return;
      clearTimeout(activityTimer);
    }
    activityDue = due;
    activityTimer = setTimeout(flushActivity, Math.max(0, due - now));
  };

  return {
    post(msg) {
      flushRecords();
      send(msg);
    },
    record(r) {
      noteActivity(r.event);
      if (!following) return;
      batch.push(r);
      if (batch.length >= AUDIT_RECORDS_PER_MESSAGE) flushRecords();
      else if (timer === undefined) timer = setTimeout(flushRecords, RECORDS_TO_PARENT_MS);
    },
    follow(on) {
      following = on;
      if (on) return;
      batch = [];
      clearTimeout(timer);
      timer = undefined;
    },
    flush() {
      flushRecords();
      flushActivity();
    },
  };
}
