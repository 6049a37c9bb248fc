/**
 * The one place the suite (and the runners) import the library from: exactly the public entry.
 */
export * from '../../src/index.js';
