/**
 * The authorization policy's raw (file and wire) form: the AuthorizationPolicy fields, and the
 * `authorization` section of a Service (and of a mesh-file service) that holds a service's
 * policies and its default. Bounds that the schema cannot word well (empty lists, the shape of
 * an identity, a path or a header value) are checked in build.ts, with a message that says why.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Enum, Obj } from '../fields.js';
import { DNS_LABEL_PATTERN, HTTP_TOKEN_PATTERN } from '../names.js';
import { AUTHZ_DEFAULTS } from './model.js';

export const AUTHZ_ACTIONS = ['ALLOW', 'DENY', 'AUDIT'] as const;
export type AuthzAction = (typeof AUTHZ_ACTIONS)[number];
export const AUTHZ_MODES = ['enforce', 'dry-run'] as const;
export type AuthzMode = (typeof AUTHZ_MODES)[number];
export const AUTHZ_DEFAULT_VALUES = ['allow', 'deny'] as const;
export type AuthzDefault = (typeof AUTHZ_DEFAULT_VALUES)[number];

/** A string matched exactly, as a prefix (a trailing "*"), or "*" alone (anything present). */
const Matches = (what: string, maxItems: number) =>
  Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), {
    maxItems,
    uniqueItems: true,
    description: `${what}: each exact, a prefix ending in "*", or "*" alone (any). Never a regular expression. Leave the field out to match any; an empty list is an error.`,
  });

export const AuthzFromSchema = Obj(
  {
    identities: Type.Optional(Matches('Source SPIFFE identities ("spiffe://<trust-domain>/ns/<ns>/sa/<service>")', 256)),
    namespaces: Type.Optional(Matches('Source namespaces (of the identity)', 256)),
    services: Type.Optional(Matches('Source services: the `<service>` of an identity `spiffe://<trust-domain>/ns/<ns>/sa/<service>` of this mesh (what `skein up` names each service\'s callers by)', 256)),
  },
  'Who sends the request (the identity mTLS proved). A request without an identity matches no `from` that names identities or namespaces.',
);

export const AuthzToSchema = Obj(
  {
    methods: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { maxItems: 32, uniqueItems: true, description: 'HTTP methods, exactly (case-sensitive: GET, not get).' }),
    ),
    paths: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), {
        maxItems: 256,
        uniqueItems: true,
        description: 'Normalized request paths: exact ("/user"), or a prefix ending in "*" ("/admin/*"). ALLOW rules compare them exactly, DENY and AUDIT rules without regard to ASCII case (docs/authorization.md).',
      }),
    ),
    ports: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), { maxItems: 64, uniqueItems: true, description: 'Destination ports.' })),
  },
  'What the request asks for.',
);

export const AuthzConditionSchema = Obj(
  {
    header: Type.String({ pattern: HTTP_TOKEN_PATTERN, maxLength: 256, description: 'A request header name (case-insensitive).' }),
    values: Matches('Header values', 64),
  },
  'A condition on a request header: it matches when the header is present and its value matches one of `values`.',
);

export const AuthzRuleSchema = Obj(
  {
    from: Type.Optional(AuthzFromSchema),
    to: Type.Optional(AuthzToSchema),
    when: Type.Optional(Type.Array(AuthzConditionSchema, { maxItems: 32, description: 'Conditions that must all hold.' })),
  },
  'A rule matches when its `from`, `to` and every `when` condition match; a field left out matches anything, so `{}` matches every request.',
);

/** The fields of a policy (what a Service's `authorization.policies` lists). */
export const AuthorizationPolicyFields = {
  name: Type.String({ pattern: DNS_LABEL_PATTERN, description: 'Name of the policy, unique in its service (a DNS label).' }),
  action: Enum(AUTHZ_ACTIONS, 'ALLOW: requests matching a rule are allowed (and, once a service has one, only they are); DENY: requests matching a rule are denied; AUDIT: matches are only logged.'),
  mode: Type.Optional(Enum(AUTHZ_MODES, `enforce: the decision applies; dry-run: decided and reported, never blocks. Default ${AUTHZ_DEFAULTS.mode}. AUDIT policies never block either way.`)),
  rules: Type.Array(AuthzRuleSchema, { maxItems: 256, description: 'The policy matches a request if any rule matches. At least one rule (`[{}]` matches everything).' }),
};

export const AuthorizationPolicySchema = Type.Object(AuthorizationPolicyFields, { additionalProperties: false, description: 'An authorization policy of a service.' });

export const ServiceAuthorizationSchema = Obj(
  {
    default: Type.Optional(
      Enum(AUTHZ_DEFAULT_VALUES, 'What happens to a request when the service has no enforced ALLOW policy: allow or deny. Default: the mesh default (AUTHZ_DEFAULTS.meshDefault, allow).'),
    ),
    policies: Type.Optional(Type.Array(AuthorizationPolicySchema, { maxItems: 256, description: 'The policies of the service (also managed one by one as AuthorizationPolicy resources).' })),
  },
  "Who may call the service: its authorization policies, evaluated by the service's own (inbound) proxy, and its default.",
);

/** The `authorization` field a Service (and a mesh-file service) carries. */
export const AuthorizationFields = { authorization: Type.Optional(ServiceAuthorizationSchema) };

export type RawAuthzRule = Static<typeof AuthzRuleSchema>;
export type RawAuthorizationPolicy = Static<typeof AuthorizationPolicySchema>;
export type RawServiceAuthorization = Static<typeof ServiceAuthorizationSchema>;
