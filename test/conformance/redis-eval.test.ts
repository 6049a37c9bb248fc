/**
 * The conformance suite on Redis with scripts run by EVALSHA (`scripts: 'eval'`, the mode for
 * servers that refuse FUNCTION LOAD): both ways of running the same Lua must behave the same.
 */
import { redisConformance } from './redis-runner.js';

redisConformance('redis (scripts: eval)', { scripts: 'eval' });
