package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/zapgate/caddy-zapier/authproxy"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// Auth is the zapier_auth middleware. It reads the end user's identity from
// the trusted identity headers, gets the user's Zapier access token from the
// cache (exchanging a freshly minted JWT on a miss), removes the identity
// headers, any client Authorization and Cookie, and sets
// `Authorization: Bearer <token>` for the next handler (usually
// reverse_proxy to api.zapier.com).
//
// When Zapier answers 401 the token is evicted, and a request whose body is
// replayable (none, or at most 64 KiB) is sent once more with a fresh token,
// so clients do not see a 401 caused by a stale cached token.
type Auth struct {
	proxy *authproxy.Proxy
}

// CaddyModule returns the Caddy module information.
func (Auth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_auth",
		New: func() caddy.Module { return new(Auth) },
	}
}

// Provision finds the zapier app.
func (h *Auth) Provision(ctx caddy.Context) error {
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	h.proxy = &authproxy.Proxy{Policy: app.policy, Tokens: appTokens{app}, Gate: app.gate, Logger: ctx.Logger()}
	if app.claimsPolicy != nil {
		h.proxy.ActionsTokens = app.actionsCaller().Tokens
	}
	return nil
}

// zapierApp loads the zapier app for a handler; a config without the global
// option fails here with the app's own message about what is missing.
func zapierApp(ctx caddy.Context) (*App, error) {
	appIface, err := ctx.App("zapier")
	if err != nil {
		return nil, fmt.Errorf("getting the zapier app: %w", err)
	}
	return appIface.(*App), nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_auth
func (h *Auth) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(0) {
		return d.Errf("zapier_auth takes no options (configure the zapier global option): unexpected %q", d.Val())
	}
	return nil
}

func (h *Auth) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return caddyError(h.proxy.Serve(w, r, next.ServeHTTP))
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
	_ caddyfile.Unmarshaler       = (*Auth)(nil)
)
