/**
 * Live request taps (`skein tap`): a tap names a service and gets every request the proxy
 * finishes to or from it, as it finishes. Off the request path while nobody taps: the forwarder
 * asks `wants()` once per request, which is a size check.
 */
import { TAP_BODIES, TAP_HEADERS, TAP_ON, type TapRecord, type TapSink } from './http1/types.js';

export interface TapFilter {
  /** Requests to or from this service. */
  readonly service: string;
  readonly headers: boolean;
  readonly bodies: boolean;
}

interface Subscriber {
  readonly filter: TapFilter;
  readonly send: (r: TapRecord) => void;
}

export class TapHub implements TapSink {
  private readonly subs = new Set<Subscriber>();

  get size(): number {
    return this.subs.size;
  }

  wants(source: string | null, service: string | null): number {
    if (this.subs.size === 0) return 0;
    let bits = 0;
    for (const s of this.subs) {
      const f = s.filter;
      if (f.service !== service && f.service !== source) continue;
      bits |= TAP_ON | (f.headers ? TAP_HEADERS : 0) | (f.bodies ? TAP_BODIES : 0);
    }
    return bits;
  }

  publish(r: TapRecord): void {
    for (const s of this.subs) {
      const f = s.filter;
      if (f.service !== r.destination && f.service !== r.source) continue;
      // Each tap gets only what it asked for, whatever another tap of the request wanted.
      let out = r;
      if ((!f.headers && r.requestHeaders !== undefined) || (!f.bodies && r.requestBody !== undefined)) {
        const { requestHeaders, responseHeaders, requestBody, responseBody, ...rest } = r;
        out = { ...rest, ...(f.headers ? { requestHeaders, responseHeaders } : {}), ...(f.bodies ? { requestBody, responseBody } : {}) } as TapRecord;
      }
      s.send(out);
    }
  }

  /** Starts a tap; call the returned function to stop it. */
  subscribe(filter: TapFilter, send: (r: TapRecord) => void): () => void {
    const s: Subscriber = { filter, send };
    this.subs.add(s);
    return () => this.subs.delete(s);
  }
}
