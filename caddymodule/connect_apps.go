package caddymodule

import (
	"context"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/zapgate/caddy-zapier/gateway"
)

// unprovisionedAppDir serves Apps built without Provision (unit tests).
var unprovisionedAppDir = &gateway.AppDirectory{}

// resolveApp resolves the app a request names through the core's one app
// resolver: the handler's configured overrides first, then Zapier's
// catalog (GET /v2/apps, with the caller's token, cached).
func (a *App) resolveApp(ctx context.Context, id gateway.Identity, overrides gateway.AppMap, name string) (gateway.App, error) {
	dir := a.appDir
	if dir == nil {
		dir = unprovisionedAppDir
	}
	r := gateway.AppResolver{Dir: dir, Caller: a.caller()}
	return r.Resolve(ctx, id, overrides, name)
}

// parseAppMapping reads one `app <implementation id> <app UUID>` line of a
// zapier_connect or zapier_actions block.
func parseAppMapping(d *caddyfile.Dispenser, apps *map[string]string) error {
	var id, uuid string
	if !d.AllArgs(&id, &uuid) {
		return d.Errf("app takes an implementation id and an app UUID")
	}
	if *apps == nil {
		*apps = map[string]string{}
	}
	if _, dup := (*apps)[id]; dup {
		return d.Errf("app %s is mapped twice", id)
	}
	(*apps)[id] = uuid
	return nil
}
