package fakezapier

// POST /oauth/token (zapier.com): RFC 8693 token exchange, zapier-api.md §1.

import (
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const maxTokenRequestBody = 64 << 10

// knownScopes are Zapier's documented OAuth scopes (zapier-api.md §1.5).
var knownScopes = map[string]bool{
	"profile": true, "zap": true, "zap:write": true, "zap:all": true,
	"zap:account:all": true, "zap:runs": true, "action:run": true,
	"authentication": true, "authentication:write": true,
	"connection:read": true, "connection:write": true,
	"external": true, "mcp:run": true,
}

type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       *int64 `json:"expires_in,omitempty"`
	Scope           string `json:"scope,omitempty"`
}

type oauthError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="fakezapier"`)
	}
	writeJSON(w, status, oauthError{Error: code, ErrorDescription: desc})
}

// refuse answers an OAuth error and counts it as a refused exchange.
func (s *Server) refuse(w http.ResponseWriter, status int, code, desc string) {
	s.count(func(st *Stats) { st.ExchangeErrors++ })
	s.logf("fakezapier: token request refused: HTTP %d %s: %s", status, code, desc)
	writeOAuthError(w, status, code, desc)
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	s.count(func(st *Stats) {
		st.TokenRequests++
		s.tokenInProgress++
		st.TokenConcurrencyPeak = max(st.TokenConcurrencyPeak, s.tokenInProgress)
	})
	defer s.count(func(*Stats) { s.tokenInProgress-- })
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuse(w, http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only")
		return
	}
	// Read the whole body first: net/http notices a client that went away
	// (cancelling r.Context(), which SetTokenDelay honours) only once the
	// body has been consumed.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTokenRequestBody))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_request", "request body unreadable or larger than 64 KiB")
		return
	}
	if s.applyTokenFaults(w, r) {
		return
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		s.refuse(w, http.StatusUnsupportedMediaType, "invalid_request",
			"Content-Type must be application/x-www-form-urlencoded")
		return
	}
	// Parameters in the query string are ignored.
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	for k, v := range form {
		if len(v) > 1 {
			s.refuse(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("parameter %q repeated", k))
			return
		}
	}
	if status, code, desc := s.authenticateClient(r, form); status != 0 {
		s.refuse(w, status, code, desc)
		return
	}
	cfg := &s.cfg
	switch gt := form.Get("grant_type"); gt {
	case cfg.GrantType:
	case "authorization_code", "refresh_token": // MCP (mcp.go)
		s.serveMCPGrant(w, form)
		return
	case "":
		s.refuse(w, http.StatusBadRequest, "invalid_request", "grant_type missing")
		return
	default:
		s.refuse(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q not supported", gt))
		return
	}
	if form.Get("subject_token") == "" {
		s.refuse(w, http.StatusBadRequest, "invalid_request", "subject_token missing")
		return
	}
	subjectType, requested := form.Get("subject_token_type"), form.Get("requested_token_type")
	switch {
	case subjectType == "":
		s.refuse(w, http.StatusBadRequest, "invalid_request", "subject_token_type missing")
	case requested == "":
		s.refuse(w, http.StatusBadRequest, "invalid_request", "requested_token_type missing")
	case subjectType == cfg.SubjectTokenType && requested == cfg.AccessTokenType:
		s.exchangeJWT(w, form)
	case subjectType == cfg.SubjectTokenType && requested == cfg.ConnectTokenType:
		s.exchangeJWTForMCPConnect(w, form) // the MCP pattern (mcp.go)
	case subjectType == cfg.AccessTokenType && requested == cfg.ConnectTokenType:
		s.exchangeConnect(w, form)
	case subjectType != cfg.SubjectTokenType && subjectType != cfg.AccessTokenType:
		s.refuse(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("subject_token_type %q not supported", subjectType))
	default:
		s.refuse(w, http.StatusBadRequest, "invalid_request",
			fmt.Sprintf("requested_token_type %q not supported for subject_token_type %q", requested, subjectType))
	}
}

// authenticateClient checks client_secret_post or HTTP Basic credentials
// (exactly one method, RFC 6749 §2.3). It returns status 0 on success.
func (s *Server) authenticateClient(r *http.Request, form url.Values) (status int, code, desc string) {
	basicID, basicSecret, hasBasic, err := parseBasicAuth(r.Header.Get("Authorization"))
	if err != nil {
		return http.StatusUnauthorized, "invalid_client", "malformed HTTP Basic client authentication: " + err.Error()
	}
	_, formHasSecret := form["client_secret"]
	var id, secret string
	switch {
	case hasBasic && formHasSecret:
		return http.StatusBadRequest, "invalid_request", "more than one client authentication method used"
	case hasBasic:
		if fid := form.Get("client_id"); fid != "" && fid != basicID {
			return http.StatusUnauthorized, "invalid_client", "client_id in the body differs from the HTTP Basic one"
		}
		id, secret = basicID, basicSecret
	default:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if id == "" || secret == "" {
		return http.StatusUnauthorized, "invalid_client", "client authentication missing"
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(s.cfg.ClientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(s.cfg.ClientSecret)) == 1
	if !idOK || !secretOK || s.cfg.ClientID == "" {
		return http.StatusUnauthorized, "invalid_client", "client authentication failed"
	}
	return 0, "", ""
}

// parseBasicAuth parses "Basic base64(urlenc(id):urlenc(secret))" per
// RFC 6749 §2.3.1. ok is false when the header is absent or not Basic.
func parseBasicAuth(h string) (id, secret string, ok bool, err error) {
	scheme, rest, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return "", "", true, errors.New("invalid base64")
	}
	encID, encSecret, found := strings.Cut(string(raw), ":")
	if !found {
		return "", "", true, errors.New("no colon separator")
	}
	if id, err = url.QueryUnescape(encID); err != nil {
		return "", "", true, errors.New("client id is not form-url-encoded")
	}
	if secret, err = url.QueryUnescape(encSecret); err != nil {
		return "", "", true, errors.New("client secret is not form-url-encoded")
	}
	return id, secret, true, nil
}

// parseScopes splits a scope parameter, dedupes and sorts it, and rejects
// scopes Zapier does not document.
func parseScopes(param string) ([]string, error) {
	var out []string
	for _, sc := range strings.Fields(param) {
		if !knownScopes[sc] {
			return nil, fmt.Errorf("unknown scope %q", sc)
		}
		out = append(out, sc)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func expiresIn(d time.Duration) *int64 {
	n := max(int64(d/time.Second), 1)
	return &n
}

// exchangeJWT handles partner JWT → user access token.
func (s *Server) exchangeJWT(w http.ResponseWriter, form url.Values) {
	scopes, err := parseScopes(form.Get("scope"))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	raw := form.Get("subject_token")
	v, err := s.verifyJWT(raw)
	if err != nil {
		reason := err.Error()
		s.mu.Lock()
		s.stats.JWTFailures++
		s.lastJWTFail = reason
		s.mu.Unlock()
		s.refuse(w, http.StatusBadRequest, "invalid_grant", "partner JWT rejected: "+reason)
		return
	}
	uc, err := parseUsageClaims(v.claims) // claims.go
	if err != nil {
		s.mu.Lock()
		s.stats.JWTFailures++
		s.lastJWTFail = err.Error()
		s.mu.Unlock()
		s.refuse(w, http.StatusBadRequest, "invalid_grant", "partner JWT rejected: "+err.Error())
		return
	}
	s.logJWT(VerifiedJWT{
		Raw: raw, Alg: v.alg, KID: v.kid, Header: v.header, Claims: v.claims,
		Tenant: v.tenant, User: v.user, Time: s.now(),
	})
	ttl, omit := s.tokenSettings()
	tok := s.issueAccess(v.tenant, v.user, scopes, ttl)
	s.setTokenClaims(tok, uc)
	resp := tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: s.cfg.AccessTokenType,
		TokenType:       "Bearer",
		Scope:           strings.Join(scopes, " "),
	}
	if !omit {
		resp.ExpiresIn = expiresIn(ttl)
	}
	s.logf("fakezapier: exchange ok: access token for tenant=%q user=%q (alg %s, kid %q) scope=%q ttl=%s expires_in_sent=%t",
		v.tenant, v.user, v.alg, v.kid, resp.Scope, ttl, !omit)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// exchangeConnect handles user access token → single-use connect token.
func (s *Server) exchangeConnect(w http.ResponseWriter, form url.Values) {
	src, why := s.liveAccess(form.Get("subject_token"))
	if src == nil {
		s.refuse(w, http.StatusBadRequest, "invalid_grant", "subject_token is not a live access token: "+why)
		return
	}
	s.noteConnectSubject(form.Get("subject_token")) // claims.go
	resource := form.Get("resource")
	if resource == "" {
		s.refuse(w, http.StatusBadRequest, "invalid_request", "resource is required when requesting a connect token")
		return
	}
	app, err := connectResourceApp(resource)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_target", err.Error())
		return
	}
	scopes, err := parseScopes(form.Get("scope"))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	if _, ok := slices.BinarySearch(scopes, "connection:write"); !ok {
		s.refuse(w, http.StatusBadRequest, "invalid_scope", "a connect token requires scope connection:write")
		return
	}
	for _, sc := range scopes {
		if !src.hasScope(sc) {
			s.refuse(w, http.StatusBadRequest, "invalid_scope",
				fmt.Sprintf("scope %q was not granted to the subject access token", sc))
			return
		}
	}
	tok := s.issueConnect(src, resource, app, scopes)
	s.logf("fakezapier: exchange ok: connect token for tenant=%q user=%q app=%q scope=%q",
		src.tenant, src.user, app, strings.Join(scopes, " "))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, tokenResponse{
		AccessToken:     tok,
		IssuedTokenType: s.cfg.ConnectTokenType,
		TokenType:       "Bearer",
		ExpiresIn:       expiresIn(s.cfg.ConnectTokenTTL),
		Scope:           strings.Join(scopes, " "),
	})
}

// connectResourceApp validates a connect-token resource,
// <scheme>://<host>/to/<app> with no query or fragment, and returns <app>.
// Any host is accepted: the gateway's connect_url may point at the fake.
func connectResourceApp(resource string) (string, error) {
	u, err := url.Parse(resource)
	if err != nil {
		return "", errors.New("resource is not a URL")
	}
	switch {
	case !u.IsAbs() || (u.Scheme != "https" && u.Scheme != "http"):
		return "", fmt.Errorf("resource %q is not an absolute http(s) URL", resource)
	case u.Host == "" || u.User != nil:
		return "", fmt.Errorf("resource %q has no host or carries userinfo", resource)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return "", fmt.Errorf("resource %q must not have a query or fragment", resource)
	}
	app, ok := strings.CutPrefix(u.EscapedPath(), "/to/")
	if !ok || !validAppID(app) {
		return "", fmt.Errorf("resource %q is not a Connect URL of the form <origin>/to/<app>", resource)
	}
	return app, nil
}

func validAppID(app string) bool {
	if app == "" || len(app) > 128 {
		return false
	}
	for _, c := range app {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune("_-.@:", c)) {
			return false
		}
	}
	return true
}
