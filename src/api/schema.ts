/**
 * Resource schemas, version v1. These are the raw (wire/file) shapes; parse.ts turns them into
 * frozen domain objects. Defaults and bounds are documented here and in docs/resources.md.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { formatDuration as ms } from '../core/duration.js';
import { Duration, Enum } from './fields.js';
import { DEFAULT_PROTOCOL, HEALTH_CHECK_DEFAULTS as H, INSTANCE_DEFAULTS, PROTOCOLS } from './types.js';
import { BalancerSchema } from './balancer.js';
import { RouteSchema, TrafficFields } from './traffic.js';
import { AuthorizationFields, AuthorizationPolicyFields } from './authz/schema.js';
import { MtlsFields } from './mtls.js';

export const API_VERSION = 'skein/v1';

import { DNS_LABEL_PATTERN, INSTANCE_ID_PATTERN, LABEL_KEY_PATTERN } from './names.js';

export { DNS_LABEL_PATTERN, INSTANCE_ID_PATTERN, LABEL_KEY_PATTERN };

export const Labels = Type.Record(Type.String({ pattern: LABEL_KEY_PATTERN }), Type.String({ maxLength: 256 }), {
  maxProperties: 64,
  additionalProperties: false,
  description: 'Free-form key/value labels (at most 64; keys like DNS names, values up to 256 characters).',
});

export const HealthCheckSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('http'), Type.Literal('tcp'), Type.Literal('ttl')], {
      description: 'http: GET a path and expect a status range; tcp: open a connection; ttl: the instance heartbeats.',
    }),
    path: Type.Optional(Type.String({ pattern: '^/[\\x21-\\x7e]*$', maxLength: 1024, description: `HTTP path to GET (http only). Default ${JSON.stringify(H.path)}.` })),
    method: Type.Optional(Type.Union([Type.Literal('GET'), Type.Literal('HEAD')], { description: `HTTP method (http only). Default ${H.method}.` })),
    expectedStatus: Type.Optional(
      Type.String({ pattern: '^[1-5]\\d\\d(-[1-5]\\d\\d)?$', description: `Status or inclusive range counted as passing (http only). Default "${H.expectedStatus.min}-${H.expectedStatus.max}".` }),
    ),
    port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535, description: 'Port to check; default the instance port (http, tcp).' })),
    interval: Type.Optional(Duration(`Time between checks (http, tcp). Default ${ms(H.intervalMs)}; at least 100ms.`)),
    timeout: Type.Optional(Duration(`Time a single check may take (http, tcp). Default ${ms(H.timeoutMs)}.`)),
    ttl: Type.Optional(Duration('How long a heartbeat keeps the instance healthy (ttl only; required there).')),
    healthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Consecutive passes before unhealthy becomes healthy. Default ${H.healthyThreshold}.` })),
    unhealthyThreshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, description: `Consecutive failures before healthy becomes unhealthy. Default ${H.unhealthyThreshold} (http, tcp).` })),
    initialState: Type.Optional(
      Type.Union([Type.Literal('healthy'), Type.Literal('unhealthy')], {
        description: `Status at registration, before the first result. Default ${H.initialState.probe} for http/tcp (the first check runs at once), ${H.initialState.ttl} for ttl (registering counts as a heartbeat).`,
      }),
    ),
    deregisterAfter: Type.Optional(Duration('Deregister the instance once it has been unhealthy this long. Default: never.')),
  },
  { additionalProperties: false, description: 'A health check run by the control plane.' },
);

export const InstanceFields = {
  id: Type.String({ pattern: INSTANCE_ID_PATTERN, description: 'Unique within the service: letters, digits, ".", "_", "-"; up to 128 characters.' }),
  service: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Name of the service (a DNS label).' }),
  address: Type.String({ minLength: 1, maxLength: 64, description: 'IPv4 or IPv6 address the instance listens on.' }),
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
  weight: Type.Optional(Type.Integer({ minimum: 0, maximum: 10000, description: `Relative share of traffic; 0 drains. Default ${INSTANCE_DEFAULTS.weight} (or the service default).` })),
  zone: Type.Optional(Type.String({ maxLength: 128, description: 'Failure domain, e.g. "eu-west-1a".' })),
  version: Type.Optional(Type.String({ maxLength: 128, description: 'Version of the workload, e.g. "v2" or a git sha.' })),
  labels: Type.Optional(Labels),
  check: Type.Optional(HealthCheckSchema),
};

export const InstanceSchema = Type.Object(InstanceFields, {
  additionalProperties: false,
  description: 'One running copy of a service, reachable at address:port.',
});

/** The body of `PUT /v1/services/{service}/instances/{id}`: id and service come from the path. */
export const InstanceBodySchema = Type.Object(
  {
    ...InstanceFields,
    id: Type.Optional(InstanceFields.id),
    service: Type.Optional(InstanceFields.service),
  },
  { additionalProperties: false },
);

/** What a service's instances speak (docs/protocols.md). */
const ProtocolField = (description: string) => Enum(PROTOCOLS, description);

export const ServicePortSchema = Type.Object(
  {
    name: Type.String({ pattern: DNS_LABEL_PATTERN }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    protocol: Type.Optional(ProtocolField(`Default ${DEFAULT_PROTOCOL}.`)),
  },
  { additionalProperties: false },
);

export const ServiceDefaultsSchema = Type.Object(
  {
    weight: Type.Optional(InstanceFields.weight),
    zone: Type.Optional(InstanceFields.zone),
    version: Type.Optional(InstanceFields.version),
    labels: Type.Optional(Labels),
    check: Type.Optional(HealthCheckSchema),
  },
  { additionalProperties: false, description: 'Values an instance of this service gets when it does not set them.' },
);

export const ServiceFields = {
  name: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Name of the service (a DNS label).' }),
  ports: Type.Optional(Type.Array(ServicePortSchema, { maxItems: 32 })),
  protocol: Type.Optional(
    ProtocolField(
      'What its instances speak on the port they register (the one port of an instance; skein up assigns it): tcp makes proxies carry opaque streams, never reading a byte to detect a protocol. Default: the protocol of its `ports` when they all declare the same one, else http.',
    ),
  ),
  labels: Type.Optional(Labels),
  defaults: Type.Optional(ServiceDefaultsSchema),
  balancer: Type.Optional(BalancerSchema),
  ...TrafficFields,
  ...AuthorizationFields,
  mtls: Type.Optional(MtlsFields.mtls),
};

export const ServiceSchema = Type.Object(ServiceFields, { additionalProperties: false, description: 'A named service and the defaults of its instances.' });

export const ServiceBodySchema = Type.Object({ ...ServiceFields, name: Type.Optional(ServiceFields.name) }, { additionalProperties: false });

const envelope = <K extends string>(kind: K) => ({
  apiVersion: Type.Optional(Type.Literal(API_VERSION, { description: `Resource API version; "${API_VERSION}".` })),
  kind: Type.Literal(kind),
});

export const ServiceResourceSchema = Type.Object({ ...envelope('Service'), ...ServiceFields }, { additionalProperties: false, title: 'Service' });
export const InstanceResourceSchema = Type.Object({ ...envelope('Instance'), ...InstanceFields }, { additionalProperties: false, title: 'Instance' });

/** A route of a service, managed on its own (it lands in the service's `routes`). */
export const RouteResourceSchema = Type.Object(
  { ...envelope('Route'), service: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'The service the route belongs to; it must exist.' }), ...RouteSchema.properties },
  { additionalProperties: false, title: 'Route' },
);

/** The body of `PUT /v1/services/{service}/routes/{name}`: service and name come from the path. */
export const RouteBodySchema = Type.Object(
  { ...RouteSchema.properties, name: Type.Optional(RouteSchema.properties.name), service: Type.Optional(Type.String({ pattern: DNS_LABEL_PATTERN })) },
  { additionalProperties: false },
);

/** An authorization policy of a service, managed on its own (it lands in the service's `authorization.policies`). */
export const AuthorizationPolicyResourceSchema = Type.Object(
  { ...envelope('AuthorizationPolicy'), service: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'The service the policy protects; it must exist.' }), ...AuthorizationPolicyFields },
  { additionalProperties: false, title: 'AuthorizationPolicy' },
);

/** The body of `PUT /v1/services/{service}/policies/{name}`: service and name come from the path. */
export const AuthorizationPolicyBodySchema = Type.Object(
  { ...AuthorizationPolicyFields, name: Type.Optional(AuthorizationPolicyFields.name), service: Type.Optional(Type.String({ pattern: DNS_LABEL_PATTERN })) },
  { additionalProperties: false },
);

export const RESOURCE_KINDS: Record<string, TSchema> = {
  Service: ServiceResourceSchema,
  Instance: InstanceResourceSchema,
  Route: RouteResourceSchema,
  AuthorizationPolicy: AuthorizationPolicyResourceSchema,
};

export type RawHealthCheck = Static<typeof HealthCheckSchema>;
export type RawInstance = Static<typeof InstanceSchema>;
export type RawInstanceBody = Static<typeof InstanceBodySchema>;
export type RawService = Static<typeof ServiceSchema>;
export type RawServiceBody = Static<typeof ServiceBodySchema>;
export type RawServiceDefaults = Static<typeof ServiceDefaultsSchema>;

/** JSON Schema of a resource file: one resource, or a list of them. */
export function resourceFileJsonSchema(): object {
  const one = { oneOf: Object.keys(RESOURCE_KINDS).map((k) => ({ $ref: `#/definitions/${k}` })) };
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://skein.dev/schema/v1/resources.json',
    title: 'Skein resources (skein/v1)',
    description: 'A Skein resource file: one resource or an array of resources (YAML files may also hold several documents).',
    anyOf: [one, { type: 'array', items: one }],
    definitions: Object.fromEntries(Object.entries(RESOURCE_KINDS).map(([k, s]) => [k, JSON.parse(JSON.stringify(s))])),
  };
}
