package fakezapier

import (
	"slices"
	"time"
)

const maxJWTLog = 1000

// VerifiedJWT is a partner JWT the fake accepted at /oauth/token.
type VerifiedJWT struct {
	// Raw is the compact JWT as received. It is kept in memory for test
	// assertions (e.g. checking it with another JOSE library) and never
	// logged.
	Raw          string
	Alg, KID     string
	Header       map[string]any
	Claims       map[string]any
	Tenant, User string
	Time         time.Time // when it was verified
}

// JWTs returns the partner JWTs the fake verified successfully, oldest
// first (the last 1000).
func (s *Server) JWTs() []VerifiedJWT {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.jwtLog)
}

// SetClaimNames changes the user and tenant claim names the fake reads
// (Config.UserClaim and Config.TenantClaim); "" keeps the current name.
func (s *Server) SetClaimNames(userClaim, tenantClaim string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if userClaim != "" {
		s.userClaim = userClaim
	}
	if tenantClaim != "" {
		s.tenantClaim = tenantClaim
	}
}

func (s *Server) claimNames() (user, tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userClaim, s.tenantClaim
}

func (s *Server) logJWT(v VerifiedJWT) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.jwtLog) >= maxJWTLog {
		s.jwtLog = slices.Delete(s.jwtLog, 0, len(s.jwtLog)-maxJWTLog+1)
	}
	s.jwtLog = append(s.jwtLog, v)
}
