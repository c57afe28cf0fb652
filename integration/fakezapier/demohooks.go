package fakezapier

// A demo-only hook over HTTP, for the demo partner app (`make -f xcaddy.mk
// demo` turns it on with the fakezapier command's -demo-hooks flag): Zapier's
// trigger firing, which tests do with InjectTriggerEvent. The fake's own
// routes are unchanged by it.

import (
	"encoding/json"
	"net/http"
)

// DemoHooksPath is where DemoHooks is mounted.
const DemoHooksPath = "/_demo/trigger-events"

// DemoHooks serves POST /_demo/trigger-events {"tenant","user","payload"?}:
// the app's trigger fires once in every active inbox of that identity, as
// InjectTriggerEvent does. It answers {"fired":[{"inbox_id","message_id"}]}
// (an empty list when the user has no active inbox).
func (s *Server) DemoHooks() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		var req struct {
			Tenant  string         `json:"tenant"`
			User    string         `json:"user"`
			Payload map[string]any `json:"payload"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || req.Tenant == "" || req.User == "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": "want {\"tenant\",\"user\",\"payload\"?}"})
			return
		}
		if req.Payload == nil {
			req.Payload = map[string]any{"text": "a test event from the fake Zapier", "at": s.now().UTC().Format("2006-01-02T15:04:05Z")}
		}
		type fired struct {
			InboxID   string `json:"inbox_id"`
			MessageID string `json:"message_id"`
		}
		out := []fired{}
		for _, ib := range s.Inboxes() {
			if ib.Tenant != req.Tenant || ib.User != req.User || ib.Status != "active" {
				continue
			}
			if id := s.InjectTriggerEvent(ib.ID, req.Payload); id != "" {
				out = append(out, fired{InboxID: ib.ID, MessageID: id})
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"fired": out})
	})
}
