/**
 * Runs the conformance suite with the memory backend owned by a worker thread (`serveBackend`)
 * and both clients `remoteBackend`s in the test's thread: every client is in another thread than
 * the owner, and every call crosses a MessagePort.
 */
import { remoteBackend } from '../../src/threads/index.js';
import { startOwner } from '../threads/owner.js';
import { conformance } from './suite.js';

conformance('threads (memory served by a worker)', async () => {
  const owner = await startOwner();
  return {
    open: async () => remoteBackend(await owner.handle()),
    cleanup: async () => {
      await owner.worker.terminate();
    },
    limitState: (name) => owner.limitKeys(name),
    // The owner's memory backend counts (pools are dropped when idle).
    namedLockResidue: async () => {
      const { permitPools, permitLeases, timers } = await owner.stats();
      return Object.entries({ permitPools, permitLeases, timers })
        .filter(([, n]) => n !== 0)
        .map(([k, n]) => `${k}: ${n}`);
    },
  };
});
