/**
 * Name patterns of resources, in a module of their own so that the data plane can check names
 * without loading the schema library (schema.ts re-exports them).
 */

/** A DNS label (RFC 1123): lowercase letters, digits and '-', 1..63 characters. */
export const DNS_LABEL_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
export const INSTANCE_ID_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$';
export const LABEL_KEY_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$';

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
