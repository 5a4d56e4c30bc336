/**
 * The SDK's view of the mesh: the control plane's watch stream (the proxy's WatchClient: snapshot,
 * diffs, resume by revision, the last state kept while the control plane is away) and one
 * ServiceClient per destination service in use (its balancer, routes, retry budget, breakers,
 * outlier detection, limits), created on the first request as the proxy's outbound listener does.
 * Which service an origin names, and what is answered when it names none, is decided here.
 */
import { DNS_LABEL_PATTERN } from '../api/names.js';
import type { Clock } from '../core/clock.js';
import type { ErrorCode } from '../core/errors.js';
import { ControlReplicas } from '../discovery/control-replicas.js';
import type { EndpointSet } from '../discovery/endpoint.js';
import { WatchClient, type WatchLogger } from '../discovery/watch-client.js';
import { ServiceClient, type HealthCheckerFactory } from '../engine/service-client.js';
import type { TrafficEvent } from '../resilience/traffic-state.js';

const SERVICE_NAME = new RegExp(DNS_LABEL_PATTERN);

/** A request the mesh answers itself before any service is chosen. */
export interface NotRouted {
  readonly error: ErrorCode;
  readonly message: string;
  readonly status?: number;
}

export interface MeshViewOptions {
  /** The control plane's base URL, or its replicas' (failover as the proxy's). */
  readonly control: string | readonly string[];
  /** DNS zone of service names: `<service>.service.<domain>` names a service too. Default "skein". */
  readonly domain: string;
  readonly clock: Clock;
  readonly logger?: WatchLogger | undefined;
  readonly onEvent: (e: TrafficEvent) => void;
  /** The SDK's own active health checks of a service's endpoints (its `activeHealthCheck`), as the proxy runs them. */
  readonly checks: HealthCheckerFactory;
}

export class MeshView {
  readonly watch: WatchClient;
  readonly control: ControlReplicas;
  readonly services = new Map<string, ServiceClient>();
  private readonly suffix: string;

  constructor(private readonly o: MeshViewOptions) {
    this.suffix = `.service.${o.domain}`;
    this.control = new ControlReplicas(typeof o.control === 'string' ? [o.control] : [...o.control], o.clock);
    this.watch = new WatchClient({ control: this.control, clock: o.clock, ...(o.logger === undefined ? {} : { logger: o.logger }) });
    this.watch.on('update', (service, set) => this.services.get(service)?.update(set));
    this.watch.on('service', (service, def) => this.services.get(service)?.setDefinition(def));
    const log = o.logger;
    this.watch.on('connected', () => log?.info({ control: this.control.current }, 'watching the control plane'));
    this.watch.on('disconnected', (err) => log?.warn({ control: this.control.current, err: err.message }, 'lost the control plane; serving from the last state seen'));
  }

  start(): void {
    this.watch.start();
  }

  /** True once the first snapshot came. */
  get ready(): boolean {
    return this.watch.revision !== null;
  }

  /**
   * The service an origin's host names (`name`, `name.service.<domain>`), or null: a host that is
   * not the mesh's (an IP address, `localhost`, a dotted name outside the zone) goes to the network
   * unchanged.
   */
  serviceOf(hostname: string): string | null {
    let host = hostname.toLowerCase();
    if (host.endsWith('.')) host = host.slice(0, -1);
    if (host.endsWith(this.suffix)) host = host.slice(0, -this.suffix.length);
    else if (host.includes('.') || host === 'localhost') return null;
    return SERVICE_NAME.test(host) ? host : null;
  }

  /** The client of `name`, made on first use; or what to answer when there is none (as the proxy's outbound listener). */
  resolve(name: string): ServiceClient | NotRouted {
    const cached = this.services.get(name);
    if (cached !== undefined) return cached;
    const w = this.watch;
    if (!this.ready) return { error: 'SKEIN_E_DISCOVERY_UNAVAILABLE', message: 'the SDK has not yet heard from the control plane' };
    if (!w.knows(name)) return { error: 'SKEIN_E_UNKNOWN_SERVICE', message: `no service "${name}" is registered`, status: 503 };
    const s = new ServiceClient(name, w.definition(name), w.endpoints(name), this.o.clock, this.o.onEvent, this.o.checks);
    this.services.set(name, s);
    return s;
  }

  /** The endpoints the view has of `service`. */
  endpoints(service: string): EndpointSet {
    return this.watch.endpoints(service);
  }

  stop(): void {
    this.watch.stop();
    for (const s of this.services.values()) s.stop();
  }
}
