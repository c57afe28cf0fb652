package fakezapier

// /v2/authentications (zapier-api.md §4.2): a user's app connections.
// Connections are created by AddConnection for now; the Connect UI
// (connect.zapier.com/to/{app}) will create them too.

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
)

type connection struct {
	id           string
	tenant, user string
	app          string
	title        string
	expired      bool
}

// Authentication is one item of /v2/authentications.
type Authentication struct {
	Type      string `json:"type"` // "authentication"
	ID        string `json:"id"`
	App       string `json:"app"`
	IsExpired bool   `json:"is_expired"`
	Title     string `json:"title"`
}

// AddConnection creates a connection (authentication) for an identity and
// app and returns its id, a numeric string (the Connect UI's postMessage
// carries it as a number).
func (s *Server) AddConnection(tenant, user, app, title string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextConnID++
	id := strconv.Itoa(s.nextConnID)
	s.connections[id] = &connection{id: id, tenant: tenant, user: user, app: app, title: title}
	return id
}

// SetConnectionExpired sets a connection's is_expired; it reports whether
// the connection exists.
func (s *Server) SetConnectionExpired(id string, expired bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.connections[id]
	if ok {
		c.expired = expired
	}
	return ok
}

// connectionsFor lists an identity's connections for app, ordered by id.
func (s *Server) connectionsFor(tenant, user, app string) []Authentication {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Authentication{}
	for _, c := range s.connections {
		if c.tenant == tenant && c.user == user && c.app == app {
			out = append(out, Authentication{Type: "authentication", ID: c.id, App: c.app, IsExpired: c.expired, Title: c.title})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i].ID) != len(out[j].ID) {
			return len(out[i].ID) < len(out[j].ID)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

type listLinks struct {
	Next *string `json:"next"`
	Prev *string `json:"prev"`
}

type listMeta struct {
	Count  int `json:"count"`
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
}

type listEnvelope struct {
	Links listLinks `json:"links"`
	Meta  listMeta  `json:"meta"`
	Data  any       `json:"data"`
}

func (s *Server) serveAuthentications(w http.ResponseWriter, req *apiRequest) {
	r := req.r
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if !req.token.hasScope("connection:read") {
		permissionDenied(w, "connection:read")
		return
	}
	q := r.URL.Query()
	app := q.Get("app")
	if app == "" {
		validationError(w, "app", "This field is required.")
		return
	}
	limit, offset, ok := pageParams(w, q)
	if !ok {
		return
	}
	all := s.connectionsFor(req.token.tenant, req.token.user, app)
	page := all[min(offset, len(all)):min(offset+limit, len(all))]
	writeJSON(w, http.StatusOK, pagedEnvelope(r, len(all), limit, offset, page))
}

// pagedEnvelope is the list envelope of one page of total items, with
// next/prev links when there are pages on either side.
func pagedEnvelope(r *http.Request, total, limit, offset int, data any) listEnvelope {
	env := listEnvelope{Meta: listMeta{Count: total, Limit: limit, Offset: offset}, Data: data}
	if offset+limit < total {
		env.Links.Next = pageURL(r, limit, offset+limit)
	}
	if offset > 0 {
		env.Links.Prev = pageURL(r, limit, max(offset-limit, 0))
	}
	return env
}

// pageParams parses limit (default 10, 1..1000) and offset (default 0).
func pageParams(w http.ResponseWriter, q url.Values) (limit, offset int, ok bool) {
	limit, offset = 10, 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			validationError(w, "limit", "A valid integer between 1 and 1000 is required.")
			return 0, 0, false
		}
		limit = n
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			validationError(w, "offset", "A valid non-negative integer is required.")
			return 0, 0, false
		}
		offset = n
	}
	return limit, offset, true
}

func pageURL(r *http.Request, limit, offset int) *string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	q := r.URL.Query()
	q.Set("limit", strconv.Itoa(limit))
	q.Set("offset", strconv.Itoa(offset))
	u := (&url.URL{Scheme: scheme, Host: r.Host, Path: r.URL.Path, RawQuery: q.Encode()}).String()
	return &u
}

// FailNextAuthenticationDeletes makes the next n DELETE
// /v2/authentications/{id} answer status (e.g. 503) without deleting.
func (s *Server) FailNextAuthenticationDeletes(n, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteFaults, s.deleteFaultStatus = max(n, 0), status
}

// AuthenticationDeletes returns how many authentications DELETE
// /v2/authentications/{id} deleted.
func (s *Server) AuthenticationDeletes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authDeletes
}

// serveAuthentication is DELETE /v2/authentications/{id}
// (zapier-api-2026.md §5.1, documented since July 2026): 204 when the
// token's user owns the authentication; 404, as for an unknown id, when
// not (the docs retrieved give neither status: these are the inferred
// defaults). Scope connection:write.
func (s *Server) serveAuthentication(w http.ResponseWriter, req *apiRequest, id string) {
	r := req.r
	if r.Method != http.MethodDelete {
		methodNotAllowed(w, r, http.MethodDelete)
		return
	}
	if !req.token.hasScope("connection:write") {
		permissionDenied(w, "connection:write")
		return
	}
	s.mu.Lock()
	if s.deleteFaults > 0 {
		s.deleteFaults--
		status := s.deleteFaultStatus
		s.mu.Unlock()
		writeAPIError(w, status, "error", "ServiceUnavailable", "Injected failure.", nil)
		return
	}
	c, ok := s.connections[id]
	if !ok || c.tenant != req.token.tenant || c.user != req.token.user {
		s.mu.Unlock()
		notFound(w)
		return
	}
	delete(s.connections, id)
	s.authDeletes++
	s.mu.Unlock()
	s.logf("fakezapier: authentication %s deleted for tenant=%q user=%q", id, c.tenant, c.user)
	w.WriteHeader(http.StatusNoContent)
}
