// Package authproxy is zapier_auth's work: it turns a partner backend's
// request carrying trusted identity headers into one carrying the user's
// Zapier access token, hands it to the next handler (a reverse proxy to
// Zapier's API) through the request budget, and, when Zapier answers 401
// for a stale cached token, evicts it and sends a replayable request once
// more with a fresh one.
package authproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/gateway"
)

// MaxReplayBody is the largest request body kept in memory so the request
// can be sent again after Zapier answers 401 for a stale token.
const MaxReplayBody = 64 << 10

const maxReplayBody = MaxReplayBody

// Next is the handler a request goes on to (Caddy's next handler).
type Next func(w http.ResponseWriter, r *http.Request) error

// Proxy serves zapier_auth. Its identity and host rules are the route
// policy's (one identity path for every route); it sets no limits of its
// own: the request budget (Gate) is what bounds calls to Zapier.
type Proxy struct {
	Policy *gateway.Policy
	Tokens gateway.TokenSource
	// ActionsTokens, if set, is the token source of calls to Zapier's
	// Actions API (IsActionsPath): tokens minted with the tenant's billing
	// and rate_limit claims.
	ActionsTokens gateway.TokenSource
	Gate          *gateway.APIGate
	Logger        *zap.Logger
}

// IsActionsPath says whether path is on Zapier's Actions API, whose calls
// carry the billing and rate_limit claims.
func IsActionsPath(path string) bool {
	return strings.HasPrefix(path, "/actions/") || path == "/v2/actions" || strings.HasPrefix(path, "/v2/actions/") ||
		path == "/v2/action-runs" || strings.HasPrefix(path, "/v2/action-runs/")
}

// Serve answers r itself (refusals, a failed token lookup) or sends it on
// with the user's Bearer token. A *gateway.HandlerError is a request it did
// not answer (the caller went away, an unreadable body).
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, next Next) error {
	rules := p.Policy.Identity
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		// A browser request made by another site: with an ingress that turns
		// the partner's session into identity headers it would act as the
		// user (CSRF). Backends, the callers zapier_auth serves, never send it.
		rules.Strip(r)
		gateway.WriteError(w, &gateway.Error{Status: http.StatusForbidden, Code: "cross_site_refused",
			Message: "zapier_auth does not serve requests made by another site"})
		return nil
	}
	if e := p.Policy.Hosts.Check(r, false); e != nil {
		rules.Strip(r)
		gateway.WriteError(w, e)
		return nil
	}
	tenant, user, ierr := rules.Extract(r)
	if ierr != nil {
		if p.Policy.Refused != nil {
			p.Policy.Refused(r, ierr)
		}
		gateway.WriteError(w, ierr)
		return nil
	}
	id := gateway.Identity{Tenant: tenant, User: user}
	tokens := p.Tokens
	if p.ActionsTokens != nil && IsActionsPath(r.URL.Path) {
		tokens = p.ActionsTokens
	}
	token, err := tokens.Token(r.Context(), id)
	if err != nil {
		return p.failExchange(w, r, id, err)
	}

	body, err := bufferBody(r)
	if err != nil {
		return &gateway.HandlerError{Status: http.StatusBadRequest, Err: fmt.Errorf("reading request body: %w", err)}
	}
	defer body.release()
	r.Header.Del("Cookie")
	setBearer(r, token)
	if done, err := p.admit(w, r, tenant); done {
		return err
	}

	if !body.replayable {
		rec := &recorder{w: w}
		err := next(rec, r)
		p.Gate.Proxied(r.Method, r.URL.Path, rec.Status(), w.Header(), err)
		evictOnUnauthorized(tokens, rec.Status(), id, token)
		return err
	}

	// Hold back a 401 so the request can be retried; anything else streams.
	held := holdResponse(w.Header())
	defer held.release()
	rec := &recorder{w: w, buf: &held.buf, shouldBuffer: isUnauthorized}
	capped := &holdCap{rec: rec, out: w}
	err = next(capped, r)
	p.Gate.Proxied(r.Method, r.URL.Path, rec.Status(), w.Header(), err)
	if capped.spilled || err != nil || !rec.Buffered() {
		evictOnUnauthorized(tokens, rec.Status(), id, token) // a 401 too large to hold
		return err
	}

	tokens.Evict(id, token)
	held.restore(w.Header())
	fresh, err := tokens.Token(r.Context(), id)
	if err != nil {
		return p.failExchange(w, r, id, err)
	}
	body.rewind(r)
	setBearer(r, fresh)
	if done, err := p.admit(w, r, tenant); done {
		return err
	}
	retry := &recorder{w: w}
	err = next(retry, r)
	p.Gate.Proxied(r.Method, r.URL.Path, retry.Status(), w.Header(), err)
	evictOnUnauthorized(tokens, retry.Status(), id, fresh)
	return err
}

// admit spends budget for one proxied request. When the request may not
// go it is answered here (done), with an error only for a caller that went
// away.
func (p *Proxy) admit(w http.ResponseWriter, r *http.Request, tenant string) (done bool, _ error) {
	err := p.Gate.Admit(r.Context(), tenant)
	if err == nil {
		return false, nil
	}
	var aerr *gateway.Error
	if errors.As(err, &aerr) {
		gateway.WriteError(w, aerr)
		return true, nil
	}
	return true, &gateway.HandlerError{Status: gateway.StatusClientGone, Err: err}
}

func setBearer(r *http.Request, token string) {
	r.Header["Authorization"] = []string{"Bearer " + token}
}

func evictOnUnauthorized(tokens gateway.TokenSource, status int, id gateway.Identity, token string) {
	if status == http.StatusUnauthorized {
		tokens.Evict(id, token)
	}
}

// failExchange answers a failed token lookup. A caller that went away gets
// no body; its request is simply over.
func (p *Proxy) failExchange(w http.ResponseWriter, r *http.Request, id gateway.Identity, err error) error {
	if errors.Is(r.Context().Err(), context.Canceled) {
		return &gateway.HandlerError{Status: gateway.StatusClientGone, Err: r.Context().Err()}
	}
	apiErr := gateway.ExchangeError(err)
	// The exchange logged the failure once; this says which requests it
	// answered (also those served from the negative cache), at debug level.
	if ce := p.Logger.Check(zapcore.DebugLevel, "request failed: no access token"); ce != nil {
		ce.Write(zap.String("reason", apiErr.Code), zap.String("identity", gateway.LogHash(id.Tenant, id.User)))
	}
	gateway.WriteError(w, apiErr)
	return nil
}

// isUnauthorized is the recorder's buffering rule: a 401 is held back so the
// request can be retried with a fresh token; every other response streams,
// and so does a 401 whose Content-Length says it will not fit in
// MaxReplayBody. One of unknown length that outgrows it is let go by
// holdCap (hold.go).
func isUnauthorized(status int, h http.Header) bool {
	if status != http.StatusUnauthorized {
		return false
	}
	n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
	return err != nil || n <= maxReplayBody
}
