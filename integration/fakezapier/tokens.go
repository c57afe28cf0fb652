package fakezapier

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"time"
)

const (
	accessTokenPrefix  = "fzat_"
	connectTokenPrefix = "fzct_"
	sweepEvery         = 1024             // issuances between sweeps of old tokens
	keepExpiredFor     = 10 * time.Minute // expired tokens stay known (TokenOwner) this long
)

type accessToken struct {
	tenant, user string
	scopes       []string // sorted, unique
	expires      time.Time
	revoked      bool
	claims       *UsageClaims // billing and rate_limit of its JWT (claims.go)
}

type connectToken struct {
	tenant, user string
	resource     string
	app          string
	scopes       []string
	expires      time.Time
	used         bool
	revoked      bool
}

func (t *accessToken) hasScope(sc string) bool {
	_, ok := slices.BinarySearch(t.scopes, sc)
	return ok
}

func newToken(prefix string) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic("fakezapier: crypto/rand: " + err.Error())
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// issueAccess stores a new access token. Callers hold no lock.
func (s *Server) issueAccess(tenant, user string, scopes []string, ttl time.Duration) string {
	tok := newToken(accessTokenPrefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[tok] = &accessToken{tenant: tenant, user: user, scopes: scopes, expires: s.now().Add(ttl)}
	s.stats.Exchanges++
	s.exchangesBy[identity{tenant, user}]++
	s.maybeSweepLocked()
	return tok
}

func (s *Server) issueConnect(src *accessToken, resource, app string, scopes []string) string {
	tok := newToken(connectTokenPrefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connect[tok] = &connectToken{
		tenant: src.tenant, user: src.user, resource: resource, app: app,
		scopes: scopes, expires: s.now().Add(s.cfg.ConnectTokenTTL),
	}
	s.stats.ConnectExchanges++
	s.maybeSweepLocked()
	return tok
}

func (s *Server) maybeSweepLocked() {
	s.issued++
	if s.issued < sweepEvery {
		return
	}
	s.issued = 0
	cutoff := s.now().Add(-keepExpiredFor)
	for k, t := range s.access {
		if t.expires.Before(cutoff) {
			delete(s.access, k)
		}
	}
	for k, t := range s.connect {
		if t.expires.Before(cutoff) {
			delete(s.connect, k)
		}
	}
}

// liveAccess returns a copy of the access token's record when it is live
// (known, not revoked, not expired), else nil and the reason.
func (s *Server) liveAccess(tok string) (*accessToken, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.access[tok]
	switch {
	case !ok:
		return nil, "unknown token"
	case t.revoked:
		return nil, "token revoked"
	case !s.now().Before(t.expires):
		return nil, "token expired"
	}
	c := *t
	return &c, ""
}

// Revoke revokes every live access token of an identity (the next /v2 call
// with one is answered 401) and returns how many were revoked. Connect
// tokens of the identity are revoked too but not counted.
func (s *Server) Revoke(tenant, user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, t := range s.access {
		if t.tenant == tenant && t.user == user && !t.revoked && now.Before(t.expires) {
			t.revoked = true
			n++
		}
	}
	for _, t := range s.connect {
		if t.tenant == tenant && t.user == user {
			t.revoked = true
		}
	}
	return n
}

// RevokeToken revokes one access or connect token; it reports whether the
// token was live.
func (s *Server) RevokeToken(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if t, ok := s.access[token]; ok {
		live := !t.revoked && now.Before(t.expires)
		t.revoked = true
		return live
	}
	if t, ok := s.connect[token]; ok {
		live := !t.revoked && !t.used && now.Before(t.expires)
		t.revoked = true
		return live
	}
	return false
}

// TokenOwner returns the identity an access or connect token was issued to.
// ok is true for any token this server issued (live, expired or revoked)
// until it is swept, at least 10 minutes after expiry.
func (s *Server) TokenOwner(token string) (tenant, user string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, found := s.access[token]; found {
		return t.tenant, t.user, true
	}
	if t, found := s.connect[token]; found {
		return t.tenant, t.user, true
	}
	return "", "", false
}

// LiveTokens returns the number of live access tokens of an identity.
func (s *Server) LiveTokens(tenant, user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	n := 0
	for _, t := range s.access {
		if t.tenant == tenant && t.user == user && !t.revoked && now.Before(t.expires) {
			n++
		}
	}
	return n
}

// ConnectGrant is what a consumed connect token authorised.
type ConnectGrant struct {
	Tenant, User string
	App          string // the {app} of the resource URL
	Resource     string // the exact resource the token was minted for
	Scopes       []string
	Expires      time.Time
}

// Connect-token consumption errors. Their texts are the error_description
// values of zapier-api.md §3.5 where one exists.
var (
	ErrConnectTokenInvalid  = errors.New("Invalid token")
	ErrConnectTokenExpired  = errors.New("Token expired")
	ErrConnectTokenUsed     = errors.New("Invalid token: already used")
	ErrConnectTokenResource = errors.New("Invalid token: minted for a different resource")
)

// ConsumeConnectToken spends a single-use connect token minted for
// resource (compared exactly). A token is spent only on success; a second
// use returns ErrConnectTokenUsed. It is the bookkeeping behind the Connect
// UI (connect.zapier.com/to/{app}).
func (s *Server) ConsumeConnectToken(token, resource string) (ConnectGrant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.connect[token]
	switch {
	case !ok || t.revoked:
		return ConnectGrant{}, ErrConnectTokenInvalid
	case t.used:
		return ConnectGrant{}, ErrConnectTokenUsed
	case !s.now().Before(t.expires):
		return ConnectGrant{}, ErrConnectTokenExpired
	case t.resource != resource:
		return ConnectGrant{}, ErrConnectTokenResource
	}
	t.used = true
	s.stats.ConnectTokensUsed++
	return ConnectGrant{
		Tenant: t.tenant, User: t.user, App: t.app, Resource: t.resource,
		Scopes: slices.Clone(t.scopes), Expires: t.expires,
	}, nil
}
