// Package gateway is the core every capability of caddy-zapier passes
// through: the trusted identity and the keyed names it has at rest, the
// route policy (classes of routes and their limits, host and origin checks,
// the JSON error envelope), and the registry of per-user stores that
// offboarding walks. Capabilities (connect, actions, mcpgateway, triggers)
// build their http.Handlers on it, so a guarantee made here holds for every
// route and every store without being made again. It imports no Caddy
// package.
package gateway
