/**
 * The mesh file (`kind: Mesh`): what `skein up FILE` runs. One YAML (or JSON) document naming
 * the services of a mesh, each with the command that runs it, its replicas, environment,
 * readiness probe, balancer and restart policy.
 *
 * One concept per file, under mesh/: schema.ts is the raw form (its descriptions reach `skein
 * schema`), model.ts the parsed form and MESH_DEFAULTS, parse.ts the validation (`parseMeshFile`),
 * run.ts the helpers `skein up` runs it with. This module is their public face; docs/mesh-file.md
 * documents the fields.
 */
import { BALANCER_KINDS, DEFAULT_BALANCER, HASHING_BALANCERS, type BalancerKind } from './balancer.js';

export { BALANCER_KINDS as MESH_BALANCER_KINDS, DEFAULT_BALANCER as MESH_DEFAULT_BALANCER, HASHING_BALANCERS };
export type MeshBalancerKind = BalancerKind;
export { ENV_NAME_PATTERN } from './names.js';
export * from './mesh/schema.js';
export * from './mesh/model.js';
export * from './mesh/parse.js';
export * from './mesh/run.js';
export * from './mesh/rollout.js';
export * from './mesh/revision.js';
