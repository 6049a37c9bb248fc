/**
 * The conformance suite on Redis with the default script mode (a function library called with
 * FCALL on Redis 7+). redis-eval.test.ts runs it again with EVALSHA.
 */
import { redisConformance } from './redis-runner.js';

redisConformance('redis', {});
