/**
 * The AuthorizationPolicy resource, kept in its service's `authorization.policies`:
 * GET /v1/services/{service}/policies, PUT and DELETE .../policies/{policy}. Stored in the
 * service's definition (like routes), so a change reaches every proxy with the service over the
 * watch stream.
 */
import type { FastifyPluginAsync } from 'fastify';
import { policyToRaw } from '../../api/authz/build.js';
import { parseAuthorizationPolicy, parseService, serviceToRaw } from '../../api/parse.js';
import { SkeinError } from '../../core/errors.js';
import type { ApiDeps } from './deps.js';
import { definitionOf, policyParam, query, serviceParam } from './params.js';

export const policyRoutes: FastifyPluginAsync<ApiDeps> = async (app, { registry }) => {
  app.get<{ Params: { service: string } }>('/v1/services/:service/policies', async (req) => {
    query(req, []);
    const name = serviceParam(req.params.service);
    const a = definitionOf(registry, name, 'policies').authorization;
    return { service: name, default: a.default, policies: a.policies, revision: registry.revision };
  });

  app.put<{ Params: { service: string; policy: string } }>('/v1/services/:service/policies/:policy', async (req, reply) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const policyName = policyParam(req.params.policy);
    const policy = policyToRaw(parseAuthorizationPolicy(req.body ?? {}, { service, name: policyName }));
    const raw = serviceToRaw(definitionOf(registry, service, 'policies'));
    const policies = [...(raw.authorization?.policies ?? [])];
    const at = policies.findIndex((p) => p.name === policyName);
    const created = at < 0;
    if (created) policies.push(policy);
    else policies[at] = policy;
    const r = await registry.putService(parseService({ ...raw, authorization: { ...raw.authorization, policies } }, { name: service }));
    return reply.code(created ? 201 : 200).send({ policy, service, created, changed: r.changed, revision: registry.revision });
  });

  app.delete<{ Params: { service: string; policy: string } }>('/v1/services/:service/policies/:policy', async (req) => {
    query(req, []);
    const service = serviceParam(req.params.service);
    const policyName = policyParam(req.params.policy);
    const raw = serviceToRaw(definitionOf(registry, service, 'policies'));
    const policies = raw.authorization?.policies ?? [];
    if (!policies.some((p) => p.name === policyName)) throw new SkeinError('SKEIN_E_UNKNOWN_POLICY', `service "${service}" has no authorization policy "${policyName}"`, { field: 'name' });
    await registry.putService(parseService({ ...raw, authorization: { ...raw.authorization, policies: policies.filter((p) => p.name !== policyName) } }, { name: service }));
    return { deleted: policyName, service, revision: registry.revision };
  });
};
