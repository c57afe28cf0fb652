package actions

import (
	"context"
	"net/http"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
)

// App is an app by Zapier's two names for it (the core's).
type App = gateway.App

// Lookup finds the app a request names and the user's stored connection
// of it.
type Lookup struct {
	// Configured finds an app the handler's configuration names (ok), or
	// refuses a malformed name; any other name is for Catalog.
	Configured func(name string) (app App, ok bool, err error)
	// Catalog resolves any app of Zapier's catalog by key or UUID (404
	// app_not_found for an unknown one).
	Catalog func(ctx context.Context, id gateway.Identity, name string) (App, error)
	// Store holds the users' connections (zapier_connect's).
	Store *connect.Store
}

// App accepts an app named in the configuration, a key the caller has
// connected through zapier_connect (its stored connection carries the
// UUID), or any app of Zapier's catalog by key or UUID.
func (l *Lookup) App(ctx context.Context, id gateway.Identity, name string) (App, error) {
	app, ok, err := l.Configured(name)
	if err != nil {
		return App{}, err
	}
	if ok {
		return app, nil
	}
	recs, err := l.Store.List(ctx, id.Tenant, id.User)
	if err != nil {
		return App{}, err
	}
	for _, rec := range recs {
		if rec.App == name {
			return App{Key: rec.App, UUID: rec.AppUUID}, nil
		}
	}
	return l.Catalog(ctx, id, name)
}

// Connection returns the caller's stored account of the app named connID,
// or with connID empty the default one (most recently verified).
func (l *Lookup) Connection(ctx context.Context, id gateway.Identity, name, connID string) (App, *connect.Record, error) {
	app, err := l.App(ctx, id, name)
	if err != nil {
		return App{}, nil, err
	}
	rec, err := l.Store.Get(ctx, id.Tenant, id.User, app.UUID, connID)
	if err != nil {
		return App{}, nil, err
	}
	if rec == nil && connID != "" {
		return App{}, nil, &gateway.Error{Status: http.StatusConflict, Code: "connection_missing",
			Message: "connection_id is not one of the user's stored connections for app " + app.Key}
	}
	if rec == nil {
		return App{}, nil, &gateway.Error{Status: http.StatusConflict, Code: "connection_missing",
			Message: "the user has no stored connection for app " + app.Key + ": connect it through zapier_connect first"}
	}
	return app, rec, nil
}
