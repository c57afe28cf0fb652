// Package actions holds the plain-Go parts of the zapier_actions handler
// (caddymodule/actions.go): the records of who started which action run,
// kept in Caddy storage. It imports no Caddy module code; the handler's
// config, routes and error answers stay in caddymodule.
package actions
