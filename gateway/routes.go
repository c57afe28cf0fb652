package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/zapgate/caddy-zapier/ratelimit"
)

// Class is what a route costs and so how it is limited. Every end-user
// route declares its Route; the zero Class is Limited, so a route that
// forgets to choose is limited, never open.
type Class int

const (
	// Limited routes spend Zapier calls for one browser or backend request
	// (Connect, actions, MCP authorize, subscriptions): the per-identity and
	// per-tenant end-user limits apply.
	Limited Class = iota
	// Agent routes carry an MCP agent's messages, chatty by nature (a
	// message per request); tool calls have their own cap and open streams
	// theirs.
	Agent
)

func (c Class) String() string {
	switch c {
	case Limited:
		return "limited"
	case Agent:
		return "agent"
	}
	return "class" + strconv.Itoa(int(c))
}

// Route is how one end-user route is served: its methods, its class, and
// whether browsers call it (then a foreign Origin is refused).
type Route struct {
	Methods []string
	Class   Class
	Browser bool
}

// Handler serves a route for the caller's identity.
type Handler func(w http.ResponseWriter, r *http.Request, id Identity) error

// Policy is what every end-user route passes through, in this order: the
// method, the Host and Origin (DNS rebinding), the trusted identity, and the
// limits of the route's class. The refusals use the one error envelope.
type Policy struct {
	Identity *IdentityRules
	Hosts    *HostRules
	// PerIdentity and PerTenant limit Limited routes; nil allows all.
	PerIdentity, PerTenant *ratelimit.Limiter
	// Refused observes an identity refusal (metric, log); may be nil.
	Refused func(r *http.Request, e *Error)
	// Limited observes a rate-limit refusal by scope (identity, tenant);
	// may be nil.
	Limited func(scope string)
}

// Serve serves r on route rt with next.
func (p *Policy) Serve(w http.ResponseWriter, r *http.Request, rt Route, next Handler) error {
	if !AllowMethod(w, r, rt.Methods...) {
		return nil
	}
	if e := p.Hosts.Check(r, rt.Browser); e != nil {
		p.Identity.Strip(r)
		WriteError(w, e)
		return nil
	}
	tenant, user, ierr := p.Identity.Extract(r)
	if ierr != nil {
		if p.Refused != nil {
			p.Refused(r, ierr)
		}
		WriteError(w, ierr)
		return nil
	}
	id := Identity{Tenant: tenant, User: user}
	if rt.Class == Limited && !p.Allow(w, id) {
		return nil
	}
	return next(w, r, id)
}

// Allow takes one request from id's identity and tenant limits, or answers
// 429 rate_limited with Retry-After and reports false.
func (p *Policy) Allow(w http.ResponseWriter, id Identity) bool {
	ok, retry, by := ratelimit.AllowAll(
		ratelimit.Check{L: p.PerIdentity, Key: id.Tenant + "\x00" + id.User},
		ratelimit.Check{L: p.PerTenant, Key: id.Tenant},
	)
	if ok {
		return true
	}
	scope := "identity"
	if by == 1 {
		scope = "tenant"
	}
	if p.Limited != nil {
		p.Limited(scope)
	}
	WriteError(w, &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", RetryAfter: retry,
		Message: "too many requests for this user or tenant; retry after " + strconv.Itoa(int((retry+time.Second-1)/time.Second)) + "s"})
	return false
}
