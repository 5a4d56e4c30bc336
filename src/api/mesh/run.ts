/** Helpers of `skein up` over a parsed mesh file: start order, working directories, registrations. */
import { dirname, resolve } from 'node:path';
import { SkeinError } from '../../core/errors.js';
import { INBOUND_PROXY_LABEL } from '../names.js';
import type { RawInstance } from '../schema.js';
import type { MeshFile, MeshService } from './model.js';

/**
 * The services in an order that starts every service after the ones it depends on; among
 * services free to start, file order. (parseMesh has already rejected cycles.)
 */
export function startOrder(mesh: MeshFile): MeshService[] {
  const done = new Set<string>();
  const out: MeshService[] = [];
  const left = [...mesh.services];
  while (left.length > 0) {
    const i = left.findIndex((s) => s.dependsOn.every((d) => done.has(d)));
    if (i < 0) throw new SkeinError('SKEIN_E_VALIDATION', `mesh "${mesh.name}": dependsOn has a cycle`, { field: 'dependsOn' });
    const [s] = left.splice(i, 1) as [MeshService];
    done.add(s.name);
    out.push(s);
  }
  return out;
}

/**
 * The working directory of a service's replicas: its `cwd` resolved against the directory of the
 * mesh file (the file's own directory when it has no `cwd`). A relative `command` such as
 * `./server` is then found from there too.
 */
export function serviceCwd(meshFilePath: string, service: Pick<MeshService, 'cwd'>): string {
  return resolve(dirname(resolve(meshFilePath)), service.cwd ?? '.');
}

/** The registration (`PUT /v1/services/{service}/instances/{id}` body) of one ready replica. */
export function replicaInstance(service: MeshService, replica: { id: string; address: string; port: number }): RawInstance {
  const inst: RawInstance = { id: replica.id, service: service.name, address: replica.address, port: replica.port, weight: service.weight };
  if (service.zone !== '') inst.zone = service.zone;
  if (service.version !== '') inst.version = service.version;
  // Every replica is registered at the inbound listener in front of it.
  inst.labels = { ...service.labels, [INBOUND_PROXY_LABEL]: 'true' };
  return inst;
}
