/**
 * Defaults of the control plane that its flags (`skein control`, `skein up`) and the control plane
 * itself share: written here once. The DNS server's are in dns.ts.
 */
export const CONTROL_DEFAULTS = Object.freeze({
  /** Extra time TTL instances get to heartbeat after a restart, ms. */
  ttlGraceMs: 15_000,
  /** Events kept for resuming watches with `since=`. */
  historySize: 10_000,
  /** Messages a watch subscriber may fall behind before its stream is closed. */
  maxQueue: 1000,
  /** How often the proxies' /stats are scraped for the golden signals, ms. */
  scrapeIntervalMs: 2000,
});

/** The blocking queries of the API (`?index=N&wait=D`): how long they wait without `wait`, and at most. */
export const BLOCKING_QUERY = Object.freeze({ defaultWaitMs: 5 * 60_000, maxWaitMs: 10 * 60_000 });
