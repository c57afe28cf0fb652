// Package actions is the zapier_actions capability: a partner backend
// lists a user's actions and runs one with a single request. Handler
// serves its routes (GET actions, POST inputs, POST run with
// Idempotency-Key, GET runs/{id}, and Zapier's POST callback) on the core
// (gateway: route policy, identity, Zapier caller, error envelope); the
// Zapier call sequence of a run (resolve the app and connection, prepay
// the budget, a fresh action id, create the run, await its callback or
// poll) lives here, as do the records of who started which run. It imports
// no Caddy package: caddymodule's zapier_actions builds the Handler from
// its config and the zapier app's pieces.
package actions
