/**
 * Name patterns of resources, in a module of their own so that the data plane and the CLI can
 * check names without loading the schema library (schema.ts re-exports them), and what each
 * pattern means in an error message.
 */
import { DURATION_PATTERN } from '../core/duration.js';
import { DURATION_EXAMPLES } from './duration.js';

/** A DNS label (RFC 1123): lowercase letters, digits and '-', 1..63 characters. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
export const INSTANCE_ID_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$';
export const LABEL_KEY_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$';
/** An HTTP token: what header and cookie names are made of. */
export const HTTP_TOKEN_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/** Names of environment variables: letters, digits and '_', not starting with a digit. */
export const ENV_NAME_PATTERN = '^[A-Za-z_][A-Za-z0-9_]*$';
/** A DNS name (the mesh's zone): dot-separated DNS labels, up to 200 characters. */
export const DOMAIN_PATTERN = '^(?=.{1,200}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$';

/** What each known pattern means, as it completes "must be ...". */
const PATTERN_NOUNS = new Map<string, string>([
  [DURATION_PATTERN, `a duration such as ${DURATION_EXAMPLES}`],
  [DNS_LABEL_PATTERN, 'a DNS label (a-z, 0-9 and "-", 1-63 characters, no "-" at either end)'],
  [INSTANCE_ID_PATTERN, 'an instance id (letters, digits, ".", "_" and "-", 1-128 characters, starting and ending with a letter or digit)'],
  [LABEL_KEY_PATTERN, 'a label key (letters, digits, ".", "_", "/" and "-", 1-63 characters, starting and ending with a letter or digit)'],
  [ENV_NAME_PATTERN, 'an environment variable name (letters, digits and "_", not starting with a digit)'],
  [HTTP_TOKEN_PATTERN, "a header or cookie name (letters, digits and !#$%&'*+.^_`|~-)"],
  [DOMAIN_PATTERN, 'a DNS name such as "skein" or "mesh.internal"'],
]);

/** What a known pattern means ("a DNS label (...)"), or undefined. */
export function patternNoun(pattern: string): string | undefined {
  return PATTERN_NOUNS.get(pattern);
}

/** "must be <what the pattern means>" (or "must match <pattern>" for a pattern without a name). */
export function patternMessage(pattern: string): string {
  const noun = PATTERN_NOUNS.get(pattern);
  return noun === undefined ? `must match ${pattern}` : `must be ${noun}`;
}

/**
 * The label (value "true") of an instance whose address is a Skein inbound listener rather than
 * the app itself. Only such an endpoint's `x-skein-error-origin: inbound` is believed (a refusal
 * that never reached the app, safe to send elsewhere whatever the method); from anything else it
 * is just an app's header. `skein up` sets it on every replica it fronts; until mTLS proves a
 * peer is a proxy, this is the registry's word for it.
 */
export const INBOUND_PROXY_LABEL = 'skein.io/inbound-proxy';

/** A proxy's id (`skein proxy --id`): how the control plane names it. */
export const PROXY_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * The service name, and so the identity, of callers from outside the mesh in `skein up`: its
 * outbound listener for curl -x and each service port (browsers). Policies name it like any
 * caller: `spiffe://<mesh>/ns/default/sa/local`.
 */
export const OUTSIDE_CALLER = 'local';
