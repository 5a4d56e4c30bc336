/**
 * The mesh file's raw form: the schema `skein up FILE` validates (and `skein schema --mesh`
 * prints). Every field's description states its default and bounds; the defaults themselves are
 * MESH_DEFAULTS (model.ts). docs/mesh-file.md documents both.
 */
import { Type, type Static } from '@sinclair/typebox';
import { BalancerSchema } from '../balancer.js';
import { Duration, Enum } from '../fields.js';
import { DNS_LABEL_PATTERN, DOMAIN_PATTERN, ENV_NAME_PATTERN } from '../names.js';
import { API_VERSION, InstanceFields, Labels, ServiceFields } from '../schema.js';
import { TrafficFields } from '../traffic.js';
import { AuthorizationFields } from '../authz/schema.js';
import { MtlsFields } from '../mtls.js';
import { RolloutSchema } from './rollout.js';
import { CanarySchema } from '../canary.js';
import { autoscaleSchema } from './autoscale.js';
import { formatDuration as ms } from '../../core/duration.js';
import { DNS_DEFAULTS } from '../dns.js';
import { MESH_DEFAULTS as M } from './model.js';

export const MAX_REPLICAS = 100;
export const MAX_SERVICES = 200;
/** Variables Skein sets in every replica; a service's `env` may not set them. */
export const RESERVED_ENV = ['SKEIN_SERVICE', 'SKEIN_INSTANCE_ID', 'SKEIN_VERSION'] as const;

/** A string in the file (numbers and booleans must be quoted in YAML: `"8080"`, `"true"`). */
const Str = (description: string, maxLength = 4096) => Type.String({ maxLength, description });

export const ReadinessSchema = Type.Object(
  {
    type: Type.Optional(Enum(['http', 'tcp'] as const, `http: GET \`path\` and expect 2xx or 3xx; tcp: open a connection to the port. Default ${M.readiness.type}.`)),
    path: Type.Optional(Type.String({ pattern: '^/[\\x21-\\x7e]*$', maxLength: 1024, description: `Path to GET (http only). Default ${JSON.stringify(M.readiness.path)}.` })),
    interval: Type.Optional(Duration(`Time between probes until the first success. Default ${ms(M.readiness.intervalMs)}; 100ms..1h.`)),
    timeout: Type.Optional(Duration(`Time one probe may take. Default ${ms(M.readiness.timeoutMs)}; 1ms..1h.`)),
    initialDelay: Type.Optional(Duration(`Time after the start before the first probe. Default ${ms(M.readiness.initialDelayMs)}; at most 1h.`)),
    deadline: Type.Optional(
      Duration(`Time from the start within which a probe must succeed; after it the replica is stopped and restarted (with backoff). Default ${ms(M.readiness.deadlineMs)}; 1s..24h.`),
    ),
  },
  {
    additionalProperties: false,
    description: 'When a replica counts as ready (and is registered). Default: a TCP connect to its port.',
  },
);

export const RestartSchema = Type.Object(
  {
    backoff: Type.Optional(
      Type.Object(
        {
          base: Type.Optional(Duration(`Ceiling of the first restart delay. Default ${ms(M.restart.baseMs)}; 10ms..1h.`)),
          cap: Type.Optional(Duration(`Largest ceiling of a restart delay. Default ${ms(M.restart.capMs)}; at least base, at most 24h.`)),
        },
        { additionalProperties: false, description: 'Exponential backoff with full jitter: the n-th delay is uniform in [0, min(cap, base * 2^n)).' },
      ),
    ),
    resetAfter: Type.Optional(Duration(`A replica that stayed up this long starts its backoff (and its restart count) over. Default ${ms(M.restart.resetAfterMs)}; 1s..24h.`)),
    maxRestarts: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'Consecutive restarts (without staying up `resetAfter`) before the replica is given up. Default: no limit. 0: never restart.' }),
    ),
  },
  { additionalProperties: false, description: 'What happens when a replica exits on its own.' },
);

export const MeshServiceSchema = Type.Object(
  {
    command: Type.String({ minLength: 1, maxLength: 4096, description: 'The program to run (required): a name looked up in PATH, or a path (relative paths start from `cwd`).' }),
    args: Type.Optional(Type.Array(Str('One argument.'), { maxItems: 1000, description: 'Arguments, passed as they are (no shell).' })),
    cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'Working directory, relative to the mesh file. Default the directory of the mesh file.' })),
    env: Type.Optional(
      Type.Record(Type.String(), Str('A value.', 65_536), {
        maxProperties: 1000,
        description: 'Extra environment variables (on top of the environment of `skein up` and the variables Skein sets). Values are strings.',
      }),
    ),
    replicas: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_REPLICAS, description: `How many copies run. Default ${M.replicas}; 0..${MAX_REPLICAS}.` })),
    port: Type.Optional(
      Type.Object(
        { env: Type.Optional(Type.String({ pattern: ENV_NAME_PATTERN, maxLength: 256, description: `Name of the variable that carries the assigned port. Default ${M.portEnv}.` })) },
        { additionalProperties: false, description: 'How a replica learns the port Skein assigned it.' },
      ),
    ),
    readiness: Type.Optional(ReadinessSchema),
    protocol: ServiceFields.protocol,
    balancer: Type.Optional(BalancerSchema),
    ...TrafficFields,
    ...AuthorizationFields,
    mtls: Type.Optional(MtlsFields.mtls),
    weight: Type.Optional(InstanceFields.weight),
    zone: Type.Optional(InstanceFields.zone),
    version: Type.Optional(InstanceFields.version),
    labels: Type.Optional(Labels),
    restart: Type.Optional(RestartSchema),
    stopTimeout: Type.Optional(Duration(`Time a replica gets between SIGTERM and SIGKILL. Default ${ms(M.stopTimeoutMs)}; at most 10m.`)),
    rollout: Type.Optional(RolloutSchema),
    canary: Type.Optional(CanarySchema),
    autoscale: Type.Optional(autoscaleSchema(MAX_REPLICAS)),
    dependsOn: Type.Optional(
      Type.Array(Type.String({ maxLength: 63 }), {
        maxItems: MAX_SERVICES,
        uniqueItems: true,
        description: 'Services of this mesh started (and ready) before this one. No cycles.',
      }),
    ),
  },
  { additionalProperties: false, description: 'One service of the mesh and how to run it.' },
);

export const MeshControlSchema = Type.Object(
  {
    http: Type.Optional(Type.String({ maxLength: 300, description: 'HOST:PORT of the control plane API. Default: the `skein up` default.' })),
    dns: Type.Optional(Type.String({ maxLength: 300, description: 'HOST:PORT of the DNS server, or "off". Default: the `skein up` default.' })),
    domain: Type.Optional(Type.String({ pattern: DOMAIN_PATTERN, description: `DNS zone served: <service>.service.<domain>. Default ${JSON.stringify(DNS_DEFAULTS.domain)}.` })),
  },
  { additionalProperties: false, description: 'The embedded control plane.' },
);

export const MeshFileSchema = Type.Object(
  {
    apiVersion: Type.Optional(Type.Literal(API_VERSION, { description: `Resource API version; "${API_VERSION}".` })),
    kind: Type.Literal('Mesh'),
    name: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Name of the mesh (a DNS label).' }),
    control: Type.Optional(MeshControlSchema),
    services: Type.Record(Type.String(), MeshServiceSchema, {
      minProperties: 1,
      maxProperties: MAX_SERVICES,
      description: 'The services, by name (each a DNS label).',
    }),
  },
  { additionalProperties: false, title: 'Mesh', description: 'A mesh file: what `skein up` runs.' },
);

export type RawMeshFile = Static<typeof MeshFileSchema>;
export type RawMeshService = Static<typeof MeshServiceSchema>;

/** JSON Schema of a mesh file (for editors: point yaml-language-server at it). */
export function meshFileJsonSchema(): object {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://skein.dev/schema/v1/mesh.json',
    ...(JSON.parse(JSON.stringify(MeshFileSchema)) as object),
  };
}
