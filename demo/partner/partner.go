// Package partner is the backend of the demo partner app (demo/): its own
// login, and the identity check its ingress (demo/Caddyfile) runs, with
// forward_auth, before every request it passes to the gateway.
//
// This is the part every partner already has: a session cookie that says
// who the user is. The gateway never sees the cookie's secret and the
// browser never chooses an identity: the ingress strips any X-Zapier-*
// header the browser sent, asks Identity who the session belongs to, and
// copies the answer onto the request.
package partner

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// CookieName is the partner's session cookie.
const CookieName = "partner_session"

// sessionTTL is how long a login lasts.
const sessionTTL = 12 * time.Hour

// validID is what the demo accepts as a tenant or user id; the gateway
// would take more (1-256 printable bytes), a real app has its own rules.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Server is the partner backend. Its routes:
//
//	POST /partner/login   form tenant, user → session cookie, 303 to /
//	POST /partner/logout  → cookie cleared, 303 to /
//	GET  /partner/session → {"tenant","user"} of the session, or 401
//	GET  /identity        forward_auth: 200 with X-Zapier-Tenant and
//	                      X-Zapier-User, or 401; the ingress never routes
//	                      the browser here.
//
// EnableAgents (agents.go), EnableEvents and EnableFakeTrigger (events.go)
// add the routes of the AI agents and the events parts of the page;
// EnableUsage (usage.go) the tenant's tasks this month and its quota.
type Server struct {
	key []byte // HMAC-SHA256 key of the session cookies
	now func() time.Time
	mux *http.ServeMux

	mcpEndpoint string  // the gateway's aggregate MCP endpoint (EnableAgents)
	events      *events // the deliveries received (EnableEvents)
	fakeZapier  string  // the fake Zapier with -demo-hooks (EnableFakeTrigger)
	admin       string  // Caddy's admin API, for the tenant's usage (EnableUsage)
}

// New returns the backend; key signs its session cookies (32 random bytes).
func New(key []byte) *Server {
	s := &Server{key: key, now: time.Now, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /partner/login", s.login)
	s.mux.HandleFunc("POST /partner/logout", s.logout)
	s.mux.HandleFunc("GET /partner/session", s.session)
	s.mux.HandleFunc("GET /identity", s.identity)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Session is who a session cookie belongs to.
type Session struct {
	Tenant  string `json:"tenant"`
	User    string `json:"user"`
	Expires int64  `json:"exp"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	// A login form posted from another site would log the user in as
	// someone else (login CSRF).
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		writeError(w, http.StatusForbidden, "cross_site_refused", "log in from this site")
		return
	}
	tenant, user := r.PostFormValue("tenant"), r.PostFormValue("user")
	if !validID.MatchString(tenant) || !validID.MatchString(user) {
		writeError(w, http.StatusBadRequest, "bad_login", "tenant and user must be 1-64 letters, digits, _ or -")
		return
	}
	sess := Session{Tenant: tenant, User: user, Expires: s.now().Add(sessionTTL).Unix()}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: s.sign(sess), Path: "/",
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil, MaxAge: int(sessionTTL / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in first")
		return
	}
	// What the page may offer besides Connect and Actions.
	writeJSON(w, map[string]any{"tenant": sess.Tenant, "user": sess.User, "exp": sess.Expires,
		"agents": s.mcpEndpoint != "", "events": s.events != nil, "fake_trigger": s.fakeZapier != "", "show_usage": s.admin != ""})
}

// identity answers the ingress's forward_auth: the headers of a 2xx answer
// are copied onto the request to the gateway; any other answer goes back to
// the browser instead.
func (s *Server) identity(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in to the partner app first")
		return
	}
	w.Header().Set("X-Zapier-Tenant", sess.Tenant)
	w.Header().Set("X-Zapier-User", sess.User)
	w.WriteHeader(http.StatusOK)
}

// sign encodes a session as <payload>.<HMAC of payload>, both base64url.
func (s *Server) sign(sess Session) string {
	payload, _ := json.Marshal(sess)
	p := base64.RawURLEncoding.EncodeToString(payload)
	return p + "." + base64.RawURLEncoding.EncodeToString(s.mac(p))
}

func (s *Server) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// sessionOf verifies the request's session cookie: signed by this key, not
// expired, ids still valid.
func (s *Server) sessionOf(r *http.Request) (Session, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return Session{}, false
	}
	p, sig, ok := strings.Cut(c.Value, ".")
	if !ok {
		return Session{}, false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(p)) {
		return Session{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Session{}, false
	}
	var sess Session
	if json.Unmarshal(payload, &sess) != nil || s.now().Unix() >= sess.Expires ||
		!validID.MatchString(sess.Tenant) || !validID.MatchString(sess.User) {
		return Session{}, false
	}
	return sess, true
}

// writeError answers in the gateway's error shape, so the page shows both
// alike.
func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}
