package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// maxAppID bounds an app identifier.
const maxAppID = 128

// appIDs are Zapier's two names for one app (zapier-api.md §4.2): Connect
// URLs use the implementation id (e.g. SlackCLIAPI), the API uses the app's
// UUID.
type appIDs struct {
	connect string // in <connect_url>/to/<app>
	uuid    string // in /v2/authentications?app=
}

// appMap resolves the app a request names, by either identifier.
type appMap struct {
	byID   map[string]string // implementation id → UUID
	byUUID map[string]string // UUID (lower case) → implementation id
}

func newAppMap(apps map[string]string) (appMap, error) {
	m := appMap{byID: map[string]string{}, byUUID: map[string]string{}}
	for id, uuid := range apps {
		if !validAppName(id) || isAppUUID(id) {
			return appMap{}, fmt.Errorf("app %q: not a Connect implementation id (letters, digits and _-.@:, at most %d)", id, maxAppID)
		}
		if !isAppUUID(uuid) {
			return appMap{}, fmt.Errorf("app %s: %q is not an app UUID", id, uuid)
		}
		uuid = strings.ToLower(uuid)
		if other, dup := m.byUUID[uuid]; dup {
			return appMap{}, fmt.Errorf("apps %s and %s map to the same UUID %s", other, id, uuid)
		}
		m.byID[id] = uuid
		m.byUUID[uuid] = id
	}
	return m, nil
}

// resolve finds an app the configuration names, by key or by UUID (ok),
// or refuses a malformed name; any other app is for Zapier's catalog
// (App.resolveApp).
func (m appMap) resolve(name string) (ids appIDs, ok bool, aerr *gateway.Error) {
	if !validAppName(name) {
		return appIDs{}, false, &gateway.Error{Status: http.StatusBadRequest, Code: "bad_request",
			Message: fmt.Sprintf("app must be 1-%d letters, digits or _-.@: (the app's key, e.g. SlackCLIAPI, or its UUID)", maxAppID)}
	}
	key, _, _ := strings.Cut(name, "@") // SlackCLIAPI@1.0.0 names SlackCLIAPI
	if uuid, ok := m.byID[key]; ok {
		return appIDs{connect: key, uuid: uuid}, true, nil
	}
	if isAppUUID(name) {
		if id, ok := m.byUUID[strings.ToLower(name)]; ok {
			return appIDs{connect: id, uuid: strings.ToLower(name)}, true, nil
		}
	}
	return appIDs{}, false, nil
}

// unprovisionedAppDir serves Apps built without Provision (unit tests).
var unprovisionedAppDir = &connect.AppDirectory{}

// resolveApp resolves the app a request names: the handler's configured
// overrides first, then Zapier's catalog (GET /v2/apps, with the caller's
// token, cached: connect.AppDirectory). An unknown key is 404
// app_not_found.
func (a *App) resolveApp(ctx context.Context, key tokencache.Key, overrides appMap, name string) (appIDs, error) {
	ids, ok, aerr := overrides.resolve(name)
	if aerr != nil {
		return appIDs{}, aerr
	}
	if ok {
		return ids, nil
	}
	dir := a.appDir
	if dir == nil {
		dir = unprovisionedAppDir
	}
	appKey, uuid, err := dir.Resolve(ctx, name, func(ctx context.Context, ids ...string) ([]zapierapi.App, error) {
		var apps []zapierapi.App
		err := a.callAPI(ctx, key, func(ctx context.Context, access string) (err error) {
			apps, err = a.client.ListApps(ctx, a.APIURL, access, ids...)
			return err
		})
		return apps, err
	})
	if errors.Is(err, connect.ErrAppNotFound) {
		return appIDs{}, &gateway.Error{Status: http.StatusNotFound, Code: "app_not_found",
			Message: fmt.Sprintf("Zapier's app catalog (GET /v2/apps) has no app %q: name it by its key (e.g. SlackCLIAPI) or its UUID", name)}
	}
	if _, isZapier := zapierapi.AsError(err); isZapier {
		return appIDs{}, gateway.CallError(err)
	}
	if err != nil {
		return appIDs{}, err
	}
	return appIDs{connect: appKey, uuid: uuid}, nil
}

func validAppName(app string) bool {
	if app == "" || len(app) > maxAppID || strings.Trim(app, ".") == "" {
		return false // "." and ".." would be path segments in a Connect URL
	}
	for i := 0; i < len(app); i++ {
		c := app[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("_-.@:", c) >= 0) {
			return false
		}
	}
	return true
}

// isAppUUID accepts the 8-4-4-4-12 hex form.
func isAppUUID(s string) bool { return connect.IsUUID(s) }

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
