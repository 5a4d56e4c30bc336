/**
 * The proxy's announcements to the control plane: defined in src/telemetry/announce.ts (moved
 * down so that the SDK announces itself the same way).
 */
export { Announcer, controlOf, proxyControlCall, wakeService, type AnnouncerOptions, type ControlAccess } from '../telemetry/announce.js';
