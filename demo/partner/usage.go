package partner

// The tenant's usage, for the page: the partner's backend asks the
// gateway's admin API (on loopback, never exposed to the browser) what the
// session's tenant spent this month and what its quota is.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// EnableUsage adds GET /partner/usage → {"tenant","since","tasks","quota"},
// asking Caddy's admin API at admin (e.g. http://localhost:2019).
func (s *Server) EnableUsage(admin string) {
	s.admin = strings.TrimSuffix(admin, "/")
	s.mux.HandleFunc("GET /partner/usage", s.usage)
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

// adminCall calls the admin API and decodes its JSON answer into dst.
func (s *Server) adminCall(method, path string, body any, dst any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.admin+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return &adminError{status: resp.StatusCode, msg: string(msg)}
	}
	return json.NewDecoder(resp.Body).Decode(dst)
}

type adminError struct {
	status int
	msg    string
}

func (e *adminError) Error() string { return "admin API: " + http.StatusText(e.status) + ": " + e.msg }

func (s *Server) usage(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in first")
		return
	}
	now := s.now().UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var rep struct {
		Tasks int64 `json:"tasks"`
	}
	if err := s.adminCall(http.MethodPost, "/zapier/usage", map[string]string{"tenant": sess.Tenant, "since": month.Format(time.RFC3339)}, &rep); err != nil {
		writeError(w, http.StatusBadGateway, "usage_unavailable", err.Error())
		return
	}
	var st struct {
		Usage struct {
			DefaultQuota string `json:"default_quota"`
			Tenants      []struct {
				Tenant string `json:"tenant"`
				Quota  string `json:"quota"`
			} `json:"tenants"`
		} `json:"usage"`
	}
	if err := s.adminCall(http.MethodGet, "/zapier/status", nil, &st); err != nil {
		writeError(w, http.StatusBadGateway, "usage_unavailable", err.Error())
		return
	}
	quota := st.Usage.DefaultQuota
	for _, t := range st.Usage.Tenants {
		if t.Tenant == sess.Tenant {
			quota = t.Quota
		}
	}
	writeJSON(w, map[string]any{"tenant": sess.Tenant, "since": month.Format(time.RFC3339), "tasks": rep.Tasks, "quota": quota})
}
