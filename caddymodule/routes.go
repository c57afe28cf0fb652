package caddymodule

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/zapgate/caddy-zapier/gateway"
)

// caddyError hands what a capability's handler left unanswered
// (gateway.HandlerError: a caller gone, an internal failure) to Caddy, which
// logs it and answers.
func caddyError(err error) error {
	var herr *gateway.HandlerError
	if errors.As(err, &herr) {
		return caddyhttp.Error(herr.Status, herr.Err)
	}
	return err
}

// newPolicy builds the route policy of every end-user route (capabilities
// serve their routes through it).
func (a *App) newPolicy() *gateway.Policy {
	rules := a.identityRules()
	names := append([]string{a.CallbackURL}, a.ReturnOrigins...)
	if a.Identity != nil {
		names = append(names, a.Identity.AllowedHosts...)
	}
	hosts := gateway.NewHostRules(names...)
	hosts.SiteNames = siteNames
	p := &gateway.Policy{
		Identity: &rules,
		Hosts:    hosts,
		Refused:  a.observeRefusal,
		Limited:  func(scope string) { rateLimited.WithLabelValues(scope).Inc() },
	}
	if a.limits != nil {
		p.PerIdentity, p.PerTenant = a.limits.identity, a.limits.tenant
	}
	return p
}

// hostRules are the policy's Host and Origin checks (nil before Provision).
func (a *App) hostRules() *gateway.HostRules {
	if a.policy == nil {
		return nil
	}
	return a.policy.Hosts
}

// observeRefusal counts and logs a refused identity; zapier_auth and every
// end-user route refuse alike.
func (a *App) observeRefusal(r *http.Request, ierr *gateway.Error) {
	a.metrics.Refusals.WithLabelValues(ierr.Code).Inc()
	level := zapcore.InfoLevel
	if ierr == gateway.ErrIdentityUntrusted {
		level = zapcore.WarnLevel
	}
	if ce := a.logger.Check(level, "request refused"); ce != nil {
		ce.Write(zap.String("reason", ierr.Code), zap.String("remote_addr", r.RemoteAddr))
	}
}

// serverNames memoizes the host patterns each Caddy server's routes match
// (*caddyhttp.Server → []string). A reload makes new servers; the memo is
// dropped when it holds more than a few.
var (
	serverNames     sync.Map
	serverNamesSize atomic.Int32
)

// siteNames reports whether host is one of the names of the site serving r:
// the host matchers of its server's routes.
func siteNames(r *http.Request, host string) bool {
	srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	if srv == nil {
		return false
	}
	v, ok := serverNames.Load(srv)
	if !ok {
		var patterns []string
		for _, route := range srv.Routes {
			for _, set := range route.MatcherSets {
				for _, m := range set {
					switch hosts := m.(type) {
					case caddyhttp.MatchHost:
						patterns = append(patterns, hosts...)
					case *caddyhttp.MatchHost:
						patterns = append(patterns, *hosts...)
					}
				}
			}
		}
		if serverNamesSize.Add(1) > 64 {
			serverNames.Clear()
			serverNamesSize.Store(1)
		}
		v, _ = serverNames.LoadOrStore(srv, patterns)
	}
	for _, p := range v.([]string) {
		if gateway.MatchHostName(p, host) {
			return true
		}
	}
	return false
}
