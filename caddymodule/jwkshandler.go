package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/gateway"
)

func init() {
	caddy.RegisterModule(JWKS{})
}

// defaultJWKSMaxAge is short next to key_overlap, so a verifier that honours
// Cache-Control sees a next key long before it signs.
const defaultJWKSMaxAge = 5 * time.Minute

// JWKS is the zapier_jwks responder: it serves the JWK Set of every published
// public key (next, active and retired) for Zapier to verify partner JWTs.
// It never serves a private parameter. Responses carry Cache-Control and an
// ETag, and If-None-Match is answered with 304.
type JWKS struct {
	// How long verifiers may cache the set. Default 5m.
	MaxAge caddy.Duration `json:"max_age,omitempty"`

	app          *App
	cacheControl string
}

// CaddyModule returns the Caddy module information.
func (JWKS) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zapier_jwks",
		New: func() caddy.Module { return new(JWKS) },
	}
}

// Provision finds the zapier app and fills defaults.
func (h *JWKS) Provision(ctx caddy.Context) error {
	if h.MaxAge == 0 {
		h.MaxAge = caddy.Duration(defaultJWKSMaxAge)
	}
	if h.MaxAge < 0 {
		return fmt.Errorf("zapier_jwks: max_age must not be negative")
	}
	app, err := zapierApp(ctx)
	if err != nil {
		return err
	}
	h.app = app
	h.cacheControl = "public, max-age=" + strconv.Itoa(int(time.Duration(h.MaxAge)/time.Second))
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zapier_jwks [<matcher>] {
//		max_age <duration>
//	}
func (h *JWKS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_age":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("max_age: %v", err)
			}
			h.MaxAge = caddy.Duration(dur)
		default:
			return d.Errf("unrecognized zapier_jwks option %q", d.Val())
		}
	}
	return nil
}

func (h *JWKS) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		gateway.WriteError(w, &gateway.Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "the JWKS is read with GET"})
		return nil
	}
	if err := h.app.ensureKeys(r.Context()); err != nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, err)
	}
	body, etag := h.app.keys.JWKS()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", h.cacheControl)
	hdr.Set("ETag", etag)
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
	return nil
}

// etagMatches is If-None-Match's weak comparison (connect.ETagMatches).
func etagMatches(header, etag string) bool { return connect.ETagMatches(header, etag) }

// Interface guards.
var (
	_ caddy.Provisioner           = (*JWKS)(nil)
	_ caddyhttp.MiddlewareHandler = (*JWKS)(nil)
	_ caddyfile.Unmarshaler       = (*JWKS)(nil)
)
