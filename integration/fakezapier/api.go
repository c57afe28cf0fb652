package fakezapier

// api.zapier.com /v2/... : bearer authentication, the error envelope
// (zapier-api.md §4.0), request recording and routing. Each area has its own
// file (echo.go, authentications.go, actions.go).

import (
	"io"
	"net/http"
	"strings"
	"time"
)

const maxAPIBody = 10 << 20

// RecordedRequest is one /v2 request as the fake received it.
type RecordedRequest struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Body                   []byte
	// Tenant and User are resolved from the bearer token ("" when there is
	// none or it is unknown); they are set for expired and revoked tokens too.
	Tenant, User string
	Time         time.Time // arrival

	// Additions.
	Host   string
	Status int // the status the fake answered; 0 if the client went away during SetAPILatency
}

// apiRequest is what the /v2 handlers get.
type apiRequest struct {
	r     *http.Request
	body  []byte
	token *accessToken // nil unless the bearer token is live
}

type apiErrorObject struct {
	Status int            `json:"status"`
	Code   string         `json:"code"`
	Title  string         `json:"title"`
	Detail string         `json:"detail"`
	Source map[string]any `json:"source"`
	Meta   map[string]any `json:"meta"`
}

// writeAPIError writes the JSON:API-like error envelope of zapier-api.md §4.0.
func writeAPIError(w http.ResponseWriter, status int, code, title, detail string, source map[string]any) {
	writeJSON(w, status, map[string]any{"errors": []apiErrorObject{{
		Status: status, Code: code, Title: title, Detail: detail, Source: source,
		Meta: map[string]any{
			"source":       "ZAPIER",
			"full_details": map[string]any{"message": detail, "code": code},
		},
	}}})
}

func notFound(w http.ResponseWriter) {
	writeAPIError(w, http.StatusNotFound, "not_found", "NotFound", "Not found.", nil)
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeAPIError(w, http.StatusMethodNotAllowed, "method_not_allowed", "MethodNotAllowed",
		`Method "`+r.Method+`" not allowed.`, nil)
}

func permissionDenied(w http.ResponseWriter, scope string) {
	writeAPIError(w, http.StatusForbidden, "permission_denied", "PermissionDenied",
		"You do not have permission to perform this action (scope "+scope+" required).", nil)
}

func validationError(w http.ResponseWriter, param, detail string) {
	writeAPIError(w, http.StatusBadRequest, "invalid", "ValidationError", param+": "+detail,
		map[string]any{"parameter": param})
}

// bearerToken returns the token of an "Authorization: Bearer" header.
func bearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	arrived := s.now()
	s.count(func(st *Stats) { st.APIRequests++ })
	rec := &statusRecorder{ResponseWriter: w}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody+1))
	tok := bearerToken(r)
	var tenant, user string
	if tok != "" {
		tenant, user, _ = s.TokenOwner(tok)
	}
	defer func() {
		s.record(RecordedRequest{
			Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
			Header: r.Header.Clone(), Body: body, Tenant: tenant, User: user,
			Time: arrived, Host: r.Host, Status: rec.status,
		})
	}()

	// Latency first, so that it delays every answer, 429 and 401 included.
	if !s.waitAPILatency(r.Context()) {
		return // the client went away; Status stays 0
	}
	// The documented rate limits apply before anything else (ratelimit.go).
	if s.throttled(rec, r, tenant != "" || user != "") {
		return
	}
	if r.URL.Path == "/v2/whitelabel/apps" { // public: no Authorization (MCP, mcp.go)
		s.serveWhitelabelApps(rec, r)
		return
	}
	// Authentication comes before everything else, as in Zapier's API.
	var at *accessToken
	why := "Authentication credentials were not provided."
	if tok != "" {
		var reason string
		if at, reason = s.liveAccess(tok); at == nil {
			why = "Invalid token: " + reason + "."
		}
	}
	if at == nil {
		s.count(func(st *Stats) { st.Unauthorized++ })
		if tok != "" {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token"`)
		} else {
			rec.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		}
		writeAPIError(rec, http.StatusUnauthorized, "not_authenticated", "NotAuthenticated", why, nil)
		return
	}
	if err != nil {
		writeAPIError(rec, http.StatusBadRequest, "parse_error", "ParseError", "Malformed request.", nil)
		return
	}
	if len(body) > maxAPIBody {
		writeAPIError(rec, http.StatusRequestEntityTooLarge, "parse_error", "ParseError", "Request body too large.", nil)
		return
	}
	req := &apiRequest{r: r, body: body, token: at}

	p := r.URL.Path
	switch {
	case p == "/v2/echo" || strings.HasPrefix(p, "/v2/echo/"):
		s.serveEcho(rec, req)
	case p == "/v2/authentications" || p == "/v2/authentications/":
		s.serveAuthentications(rec, req)
	case p == "/v2/apps" || p == "/v2/apps/":
		s.serveApps(rec, req)
	case strings.HasPrefix(p, "/v2/authentications/"):
		s.serveAuthentication(rec, req, strings.TrimPrefix(p, "/v2/authentications/"))
	case p == "/v2/actions" || strings.HasPrefix(p, "/v2/actions/") || p == "/v2/action-runs" || strings.HasPrefix(p, "/v2/action-runs/"):
		s.serveActions(rec, req)
	case strings.HasPrefix(p, "/actions/v1/"):
		s.serveStoredActions(rec, req) // stored_actions.go
	default:
		notFound(rec)
	}
}

// record appends to the bounded ring of recorded requests.
func (s *Server) record(rr RecordedRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.recorded) < s.cfg.MaxRecorded {
		s.recorded = append(s.recorded, rr)
		return
	}
	s.recorded[s.recNext] = rr
	s.recNext = (s.recNext + 1) % s.cfg.MaxRecorded
	s.recFull = true
}

// Requests returns the recorded /v2 requests, oldest first (at most the
// last Config.MaxRecorded, default 10000). A request is recorded when its
// response has been written.
func (s *Server) Requests() []RecordedRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]RecordedRequest, 0, len(s.recorded))
	if s.recFull {
		out = append(out, s.recorded[s.recNext:]...)
		out = append(out, s.recorded[:s.recNext]...)
	} else {
		out = append(out, s.recorded...)
	}
	return out
}

// ResetRecorded forgets the recorded requests.
func (s *Server) ResetRecorded() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recorded = nil
	s.recNext = 0
	s.recFull = false
}
