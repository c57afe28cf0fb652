package fakezapier

// GET /v2/apps (zapier-api.md §4.1, zapier-api-2026.md §5.2): the app
// catalog with each app's UUID id and versionless key. The catalog is the
// apps registered with RegisterApp (key → UUID), titled by the key unless
// SetAppTitle says otherwise.

import (
	"net/http"
	"sort"
	"strings"
)

// SetAppTitle sets the title GET /v2/apps gives a registered app.
func (s *Server) SetAppTitle(key, title string) {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	if s.ui.titles == nil {
		s.ui.titles = map[string]string{}
	}
	s.ui.titles[key] = title
}

// AppListings returns how many GET /v2/apps requests were answered.
func (s *Server) AppListings() int {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	return s.ui.appListings
}

type catalogApp struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Key   string `json:"key"`
	Title string `json:"title"`
}

// serveApps is GET /v2/apps: scope zap; ids (comma-separated UUIDs) and
// category cannot be combined; query matches titles; limit (default 10,
// 1..1000) and offset page, sorted (here: by key, as a stand-in for
// popularity).
func (s *Server) serveApps(w http.ResponseWriter, req *apiRequest) {
	r := req.r
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if !req.token.hasScope("zap") {
		permissionDenied(w, "zap")
		return
	}
	q := r.URL.Query()
	if q.Get("ids") != "" && q.Get("category") != "" {
		validationError(w, "ids", "ids cannot be combined with category.")
		return
	}
	limit, offset, ok := pageParams(w, q)
	if !ok {
		return
	}
	var ids map[string]bool
	if v := q.Get("ids"); v != "" {
		ids = map[string]bool{}
		for _, id := range strings.Split(v, ",") {
			ids[strings.ToLower(strings.TrimSpace(id))] = true
		}
	}
	query := strings.ToLower(q.Get("query"))
	s.ui.mu.Lock()
	s.ui.appListings++
	all := make([]catalogApp, 0, len(s.ui.apps))
	for key, uuid := range s.ui.apps {
		title := key
		if t, ok := s.ui.titles[key]; ok {
			title = t
		}
		if (ids != nil && !ids[strings.ToLower(uuid)]) || (query != "" && !strings.Contains(strings.ToLower(title), query)) {
			continue
		}
		all = append(all, catalogApp{Type: "app", ID: uuid, Key: key, Title: title})
	}
	s.ui.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].Key < all[j].Key })
	page := all[min(offset, len(all)):min(offset+limit, len(all))]
	writeJSON(w, http.StatusOK, pagedEnvelope(r, len(all), limit, offset, page))
}
