package mcpgateway

import (
	"container/list"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// The aggregate endpoint's sessions are the SDK's (one mcp.Server per
// user, its StreamableHTTPHandler keeping the sessions); the Aggregator
// keeps their bounds around it: it names every new session (GetSessionID),
// sees every request for one (ServeHTTP), and closes a session that is
// evicted or idle. A user's upstream sessions live as long as the user has
// a session or a request in progress.

// aggSession is one aggregate session the Aggregator bounds.
type aggSession struct {
	id       string
	u        *userAgg
	elem     *list.Element // in a.lru
	inflight int           // POST and DELETE requests being served
	timer    *time.Timer   // the idle timeout, stopped while inflight > 0
	claims   sessionClaims // what its id carries
	touched  time.Time     // when its shared record was last checked and written
}

func (s *aggSession) stop() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

func (a *Aggregator) perIdentity() int {
	if a.SessionsPerIdentity > 0 {
		return a.SessionsPerIdentity
	}
	return DefaultSessionsPerIdentity
}

func (a *Aggregator) maxSessions() int {
	if a.MaxSessions > 0 {
		return a.MaxSessions
	}
	return DefaultMaxSessions
}

func (a *Aggregator) idleTimeout() time.Duration {
	if a.IdleTimeout > 0 {
		return a.IdleTimeout
	}
	return DefaultIdleTimeout
}

// acquire takes a reference on id's state for one request (creating it),
// and marks the session the request names as in use: most recently used,
// its idle timeout paused while a POST or DELETE is served (a GET stream
// does not keep a session, as in the SDK: an idle agent pings).
func (a *Aggregator) acquire(id Identity, sessionID string, creating, get bool) (*userAgg, *aggSession) {
	subject := a.Tokens.Store().Subject(id)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lru == nil {
		a.users, a.sessions, a.lru = map[string]*userAgg{}, map[string]*aggSession{}, list.New()
	}
	u := a.users[subject]
	if u == nil {
		u = a.newUser(id, subject)
		a.users[subject] = u
	}
	u.refs++
	if creating {
		u.creating++
	}
	s := a.sessions[sessionID]
	if s == nil || s.u != u {
		return u, nil
	}
	a.lru.MoveToFront(s.elem)
	if !get {
		s.inflight++
		s.stop()
	} else if s.inflight == 0 {
		s.timer.Reset(a.idleTimeout())
	}
	return u, s
}

// release ends a request: the session's idle timeout runs again; sessions
// the SDK closed meanwhile (DELETE, a failed initialize) are forgotten;
// a user without sessions or requests is dropped, closing its upstream
// sessions.
func (a *Aggregator) release(u *userAgg, s *aggSession, sessionID string, creating, get bool) {
	a.mu.Lock()
	var drop []*aggSession
	u.refs--
	if creating {
		u.creating--
	}
	if s != nil && !get && a.sessions[s.id] == s {
		s.inflight--
		if s.inflight == 0 {
			s.timer.Reset(a.idleTimeout())
		}
	}
	if creating && u.creating == 0 || s != nil {
		// With no initialize of this user in progress, a session the SDK
		// does not have is closed (or never opened): forget it.
		live := u.liveIDs()
		for _, t := range u.live {
			if !live[t.id] && (u.creating == 0 || t == s) {
				drop = append(drop, t)
			}
		}
		for _, t := range drop {
			a.untrackLocked(t)
		}
	}
	gone := a.dropIfIdleLocked(u)
	a.mu.Unlock()
	if gone {
		u.closeSessions()
	}
}

// admit names a new session of u and makes room for it: past the
// identity's cap its oldest session is closed (here and, by its shared
// record, everywhere), past the total the least recently used of anyone's.
// It is the user's server's GetSessionID: the request creating (or
// restoring) the session left its params in u.newSession.
func (a *Aggregator) admit(u *userAgg) string {
	p := u.newSession
	var id string
	var claims sessionClaims
	var elsewhere []string
	switch {
	case p != nil && p.restoreID != "":
		id, claims = p.restoreID, p.claims
	case p != nil:
		var err error
		id, claims, err = a.newSessionID(p.ctx, u.subject, p.params)
		if err == nil {
			elsewhere, err = a.created(p.ctx, u.id, u.subject, claims)
		}
		if err != nil {
			return "" // no storage: a session of this request alone
		}
		p.claims = claims
	default:
		return ""
	}
	evictedElsewhere := map[string]bool{}
	for _, n := range elsewhere {
		evictedElsewhere[n] = true
	}
	a.mu.Lock()
	if a.closed || a.users[u.subject] != u {
		a.mu.Unlock()
		return id // a closed aggregator, or a dropped user: the session is closed after the request
	}
	s := &aggSession{id: id, u: u, claims: claims, touched: a.now()}
	s.elem = a.lru.PushFront(s)
	s.inflight = 1 // its initialize is being served; release does not see it (no session id yet)
	s.timer = time.AfterFunc(a.idleTimeout(), func() { a.expire(s) })
	s.timer.Stop()
	a.sessions[id] = s
	u.live = append(u.live, s)
	var evicted []*aggSession
	for _, t := range append([]*aggSession(nil), u.live...) {
		if evictedElsewhere[t.claims.N] {
			evicted = append(evicted, t)
			a.untrackLocked(t)
		}
	}
	for len(u.live) > a.perIdentity() {
		evicted = append(evicted, u.live[0])
		a.untrackLocked(u.live[0])
	}
	for a.lru.Len() > a.maxSessions() {
		old := a.lru.Back().Value.(*aggSession)
		evicted = append(evicted, old)
		a.untrackLocked(old)
	}
	var gone []*userAgg
	for _, old := range evicted {
		if old.u != u && a.dropIfIdleLocked(old.u) {
			gone = append(gone, old.u)
		}
	}
	busy := map[*aggSession]bool{}
	for _, old := range evicted {
		busy[old] = old.inflight > 0
	}
	a.mu.Unlock()
	for _, old := range evicted {
		old.u.closeServerSession(old.id, busy[old])
	}
	for _, g := range gone {
		g.closeSessions()
	}
	return id
}

// initialized ends the creating request's hold on the session it made:
// from now on the idle timeout runs when no request is served.
func (a *Aggregator) initialized(u *userAgg, id string) {
	if id == "" {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[id]
	if s == nil || s.u != u {
		u.closeServerSession(id, true) // made while the aggregator closed: not kept
		return
	}
	s.inflight--
	if s.inflight == 0 {
		s.timer.Reset(a.idleTimeout())
	}
}

// expire closes a session idle for IdleTimeout.
func (a *Aggregator) expire(s *aggSession) {
	a.mu.Lock()
	if a.sessions[s.id] != s || s.inflight > 0 {
		a.mu.Unlock()
		return
	}
	a.untrackLocked(s)
	gone := a.dropIfIdleLocked(s.u)
	a.mu.Unlock()
	a.idleEverywhere(s.u.subject, s.claims.N)
	s.u.closeServerSession(s.id, false)
	if gone {
		s.u.closeSessions()
	}
}

// untrackLocked forgets s (not closing it).
func (a *Aggregator) untrackLocked(s *aggSession) {
	if a.sessions[s.id] != s {
		return
	}
	s.stop()
	delete(a.sessions, s.id)
	a.lru.Remove(s.elem)
	u := s.u
	for i, t := range u.live {
		if t == s {
			u.live = append(u.live[:i:i], u.live[i+1:]...)
			break
		}
	}
}

// dropIfIdleLocked drops u when it has no session and no request: it
// reports whether it did (the caller then closes u's upstream sessions).
func (a *Aggregator) dropIfIdleLocked(u *userAgg) bool {
	if len(u.live) > 0 || u.refs > 0 || a.users[u.subject] != u {
		return false
	}
	delete(a.users, u.subject)
	return true
}

// liveIDs is the ids of u's sessions the SDK has open.
func (u *userAgg) liveIDs() map[string]bool {
	out := map[string]bool{}
	for ss := range u.server.Sessions() {
		out[ss.ID()] = true
	}
	return out
}

// closeServerSession closes u's SDK session id, if open. Close waits for
// the session's requests in progress: with busy, it runs on its own.
func (u *userAgg) closeServerSession(id string, busy bool) {
	for ss := range u.server.Sessions() {
		if ss.ID() == id {
			if busy {
				go ss.Close()
			} else {
				_ = ss.Close()
			}
		}
	}
}

// AggregateStats counts what the aggregate endpoint holds, for metrics and
// tests: identities with state, sessions it tracks, sessions the SDK has
// open, and upstream sessions to apps' MCP servers.
type AggregateStats struct {
	Users, Sessions, OpenSessions, Upstream int
}

// Stats counts the aggregate endpoint's state now.
func (a *Aggregator) Stats() AggregateStats {
	a.mu.Lock()
	users := make([]*userAgg, 0, len(a.users))
	for _, u := range a.users {
		users = append(users, u)
	}
	st := AggregateStats{Users: len(a.users), Sessions: len(a.sessions)}
	a.mu.Unlock()
	for _, u := range users {
		for range u.server.Sessions() {
			st.OpenSessions++
		}
		st.Upstream += u.upstreams()
	}
	return st
}

// envelopeWriter turns the SDK's plain-text HTTP errors (404 session not
// found, 400, 405, 413, …) into the gateway's JSON error envelope. JSON
// answers (JSON-RPC results and errors) pass as they are.
type envelopeWriter struct {
	http.ResponseWriter
	status   int  // the error being rewritten; 0 when passing through
	wrote    bool // WriteHeader was called
	text     []byte
	finished bool
}

func (w *envelopeWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	h := w.Header()
	if code >= 400 && strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *envelopeWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.status != 0 {
		if len(w.text) < 512 {
			w.text = append(w.text, p[:min(len(p), 512-len(w.text))]...)
		}
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Flush passes through (the SDK flushes its SSE events), by way of a
// ResponseController: the writer beneath (Caddy's) may flush only through
// FlushError or an Unwrap chain, not as an http.Flusher.
func (w *envelopeWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush reporting what the writer beneath says.
func (w *envelopeWriter) FlushError() error {
	if w.status != 0 {
		return nil
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *envelopeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// finish writes the envelope of a rewritten error.
func (w *envelopeWriter) finish() {
	if w.status == 0 || w.finished {
		return
	}
	w.finished = true
	code, msg := "bad_request", "the MCP request was refused: "+sanitizeSDKText(w.text)
	switch w.status {
	case http.StatusNotFound:
		code, msg = "mcp_session_not_found", "no such MCP session (it ended, was idle too long or was evicted by a newer one): initialize a new session"
	case http.StatusForbidden:
		code, msg = "mcp_session_not_found", "no such MCP session for this user: initialize a new session"
		w.status = http.StatusNotFound // another user's session is not told apart from none
	case http.StatusMethodNotAllowed:
		code, msg = "method_not_allowed", "the MCP endpoint takes POST, GET and DELETE"
	case http.StatusRequestEntityTooLarge:
		code, msg = "mcp_request_too_large", "the MCP request body is too large"
	case http.StatusUnsupportedMediaType:
		code, msg = "bad_request", "the MCP request body must be application/json"
		w.status = http.StatusBadRequest
	case http.StatusUnauthorized:
		code, msg = "identity_missing", "no identity"
	default:
		if w.status >= 500 {
			code, msg = "internal_error", "the MCP session could not be served"
		}
	}
	h := w.Header()
	h.Del("Content-Length")
	writeEnvelope(w.ResponseWriter, w.status, code, msg)
}

// sanitizeSDKText keeps a short, printable ASCII line of an SDK message.
func sanitizeSDKText(b []byte) string {
	s := strings.TrimSpace(string(b))
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// writeEnvelope writes the gateway's JSON error envelope.
func writeEnvelope(w http.ResponseWriter, status int, code, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	body, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
