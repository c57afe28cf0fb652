package caddymodule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/tokencache"
)

func init() {
	caddy.RegisterModule(Auth{})
}

// maxReplayBody is the largest request body kept in memory so the request
// can be sent again after Zapier answers 401 for a stale token.
const maxReplayBody = 64 << 10

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
	app    *App
	rules  gateway.IdentityRules
	logger *zap.Logger
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
	h.app = app
	h.rules = app.identityRules()
	h.logger = ctx.Logger()
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
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		// A browser request made by another site: with an ingress that turns
		// the partner's session into identity headers it would act as the
		// user (CSRF). Backends, the callers zapier_auth serves, never send it.
		_, _, _ = h.rules.Extract(r) // still strip the identity headers
		gateway.WriteError(w, &gateway.Error{Status: http.StatusForbidden, Code: "cross_site_refused",
			Message: "zapier_auth does not serve requests made by another site"})
		return nil
	}
	if e := h.app.hostRules().Check(r, false); e != nil {
		h.rules.Strip(r)
		gateway.WriteError(w, e)
		return nil
	}
	tenant, user, ierr := h.rules.Extract(r)
	if ierr != nil {
		h.app.observeRefusal(r, ierr)
		gateway.WriteError(w, ierr)
		return nil
	}
	key := tokencache.Key{Tenant: tenant, User: user}
	token, err := h.token(r.Context(), key)
	if err != nil {
		return h.failExchange(w, r, key, err)
	}

	body, err := bufferBody(r)
	if err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", err))
	}
	defer body.release()
	r.Header.Del("Cookie")
	setBearer(r, token)
	if done, err := h.admit(w, r, tenant); done {
		return err
	}

	if !body.replayable {
		rec := caddyhttp.NewResponseRecorder(w, nil, nil)
		err := next.ServeHTTP(rec, r)
		h.app.proxied(r, rec.Status(), rec.Header(), err)
		h.evictOnUnauthorized(rec.Status(), key, token)
		return err
	}

	// Hold back a 401 so the request can be retried; anything else streams.
	held := holdResponse(w.Header())
	defer held.release()
	rec := caddyhttp.NewResponseRecorder(w, &held.buf, isUnauthorized)
	capped := &holdCap{rec: rec, out: w}
	err = next.ServeHTTP(capped, r)
	h.app.proxied(r, rec.Status(), rec.Header(), err)
	if capped.spilled || err != nil || !rec.Buffered() {
		h.evictOnUnauthorized(rec.Status(), key, token) // a 401 too large to hold
		return err
	}

	h.app.tokens.evictToken(key, token)
	held.restore(w.Header())
	fresh, err := h.token(r.Context(), key)
	if err != nil {
		return h.failExchange(w, r, key, err)
	}
	body.rewind(r)
	setBearer(r, fresh)
	if done, err := h.admit(w, r, tenant); done {
		return err
	}
	retry := caddyhttp.NewResponseRecorder(w, nil, nil)
	err = next.ServeHTTP(retry, r)
	h.app.proxied(r, retry.Status(), retry.Header(), err)
	h.evictOnUnauthorized(retry.Status(), key, fresh)
	return err
}

// admit spends budget for one proxied request. When the request may not
// go it is answered here (done), with an error only for a caller that went
// away.
func (h *Auth) admit(w http.ResponseWriter, r *http.Request, tenant string) (done bool, _ error) {
	err := h.app.admitProxied(r.Context(), tenant)
	if err == nil {
		return false, nil
	}
	var aerr *gateway.Error
	if errors.As(err, &aerr) {
		gateway.WriteError(w, aerr)
		return true, nil
	}
	return true, caddyhttp.Error(499, err)
}

func (h *Auth) token(ctx context.Context, key tokencache.Key) (string, error) {
	tok, res, err := h.app.tokens.get(ctx, key)
	h.app.metrics.observeLookup(res)
	annotateLookup(ctx, res)
	return tok.Value, err
}

func setBearer(r *http.Request, token string) {
	r.Header["Authorization"] = []string{"Bearer " + token}
}

func (h *Auth) evictOnUnauthorized(status int, key tokencache.Key, token string) {
	if status == http.StatusUnauthorized {
		h.app.tokens.evictToken(key, token)
	}
}

// failExchange answers a failed token lookup. A caller that went away gets
// no body; its request is simply over.
func (h *Auth) failExchange(w http.ResponseWriter, r *http.Request, key tokencache.Key, err error) error {
	if errors.Is(r.Context().Err(), context.Canceled) {
		return caddyhttp.Error(499, r.Context().Err())
	}
	apiErr := gateway.ExchangeError(err)
	// The exchange logged the failure once; this says which requests it
	// answered (also those served from the negative cache), at debug level.
	if ce := h.logger.Check(zapcore.DebugLevel, "request failed: no access token"); ce != nil {
		ce.Write(zap.String("reason", apiErr.Code), zap.String("identity", gateway.LogHash(key.Tenant, key.User)))
	}
	gateway.WriteError(w, apiErr)
	return nil
}

// isUnauthorized is the recorder's buffering rule: a 401 is held back so the
// request can be retried with a fresh token; every other response streams,
// and so does a 401 whose Content-Length says it will not fit in
// maxReplayBody. One of unknown length that outgrows it is let go by
// holdCap (auth_hold.go).
func isUnauthorized(status int, h http.Header) bool {
	if status != http.StatusUnauthorized {
		return false
	}
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	return err != nil || n <= maxReplayBody
}

// heldResponse is what a replayable request needs while next runs: a copy of
// the response header as it was (to undo what a held-back 401 wrote into the
// shared map) and the buffer for that 401. It is pooled because every request
// without a body takes this path; the copy shares the immutable strings and
// allocates nothing once the pool is warm.
type heldResponse struct {
	buf    bytes.Buffer
	names  []string
	values []string // values of names[i]: values[ends[i-1]:ends[i]]
	ends   []int
	nils   []bool // names[i] was set to a nil slice, which reverse_proxy tells apart from empty
}

var heldResponses = sync.Pool{New: func() any { return new(heldResponse) }}

func holdResponse(h http.Header) *heldResponse {
	held := heldResponses.Get().(*heldResponse)
	for name, vv := range h {
		held.names = append(held.names, name)
		held.values = append(held.values, vv...)
		held.ends = append(held.ends, len(held.values))
		held.nils = append(held.nils, vv == nil)
	}
	return held
}

// restore puts the header map back as it was when the response was held.
func (held *heldResponse) restore(h http.Header) {
	clear(h)
	start := 0
	for i, name := range held.names {
		end := held.ends[i]
		if held.nils[i] {
			h[name] = nil
		} else {
			h[name] = append(make([]string, 0, end-start), held.values[start:end]...)
		}
		start = end
	}
}

// release returns the state to the pool once the request is over, dropping
// its references to header strings.
func (held *heldResponse) release() {
	if held.buf.Cap() > maxReplayBody {
		return // a huge 401 body; let it go rather than pin it in the pool
	}
	held.buf.Reset()
	clear(held.names)
	clear(held.values)
	held.names, held.values, held.ends, held.nils = held.names[:0], held.values[:0], held.ends[:0], held.nils[:0]
	heldResponses.Put(held)
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Auth)(nil)
	_ caddyhttp.MiddlewareHandler = (*Auth)(nil)
	_ caddyfile.Unmarshaler       = (*Auth)(nil)
)
