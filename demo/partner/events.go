package partner

// The partner's receiver of the gateway's events (zapier_triggers'
// deliver_to): every POST is verified with the Standard Webhooks signature
// (the project's webhooksig package), and the last few are kept in memory
// per user for the page to list.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zapgate/caddy-zapier/webhooksig"
)

// keepDeliveries is how many deliveries are kept per user.
const keepDeliveries = 20

// Delivery is one event the gateway delivered, as the page lists it.
type Delivery struct {
	ID           string          `json:"id"` // webhook-id
	Type         string          `json:"type"`
	Subscription string          `json:"subscription,omitempty"`
	App          string          `json:"app,omitempty"`
	Trigger      string          `json:"trigger,omitempty"`
	ReceivedAt   time.Time       `json:"received_at"`
	Body         json.RawMessage `json:"body"`
}

type events struct {
	verify *webhooksig.Verifier
	mu     sync.Mutex
	byUser map[[2]string][]Delivery // newest first
}

// EnableEvents adds the receiver and the page's list, for the whsec_
// secret zapier_triggers signs with (its signing_secret):
//
//	POST /zapier/events   deliver_to: the gateway's signed POSTs; the
//	                      ingress never routes the browser here
//	GET  /partner/deliveries → {"data":[…]}: the session user's last
//	                      deliveries, newest first
func (s *Server) EnableEvents(secret string) error {
	v, err := webhooksig.NewVerifier(secret, 0, nil)
	if err != nil {
		return err
	}
	s.events = &events{verify: v, byUser: map[[2]string][]Delivery{}}
	s.mux.HandleFunc("POST /zapier/events", s.receive)
	s.mux.HandleFunc("GET /partner/deliveries", s.deliveries)
	return nil
}

func (s *Server) receive(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "a delivery is at most 1 MiB")
		return
	}
	id, err := s.events.verify.Verify(body, r.Header)
	if err != nil {
		writeError(w, http.StatusUnauthorized, "bad_signature", err.Error())
		return
	}
	var ev struct {
		Type, Subscription, Tenant, User, App, Trigger string
	}
	if json.Unmarshal(body, &ev) != nil || ev.Tenant == "" || ev.User == "" {
		writeError(w, http.StatusBadRequest, "bad_event", "not an event of a user")
		return
	}
	d := Delivery{ID: id, Type: ev.Type, Subscription: ev.Subscription, App: ev.App, Trigger: ev.Trigger,
		ReceivedAt: s.now().UTC(), Body: json.RawMessage(body)}
	e := s.events
	e.mu.Lock()
	defer e.mu.Unlock()
	who := [2]string{ev.Tenant, ev.User}
	list := e.byUser[who]
	for _, old := range list {
		if old.ID == id { // a redelivery: the same webhook-id is the same event
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	list = append([]Delivery{d}, list...)
	e.byUser[who] = list[:min(len(list), keepDeliveries)]
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) deliveries(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in first")
		return
	}
	e := s.events
	e.mu.Lock()
	list := append([]Delivery{}, e.byUser[[2]string{sess.Tenant, sess.User}]...)
	e.mu.Unlock()
	writeJSON(w, map[string]any{"data": list})
}

// EnableFakeTrigger adds a button's route for demos against the bundled
// fake Zapier at fake (its -demo-hooks flag): Zapier's side of a trigger,
// the app's event, happens on request.
//
//	POST /partner/demo/trigger-event → the fake's {"fired":[…]}: one event
//	                      in each of the session user's active inboxes
func (s *Server) EnableFakeTrigger(fake string) {
	s.fakeZapier = strings.TrimSuffix(fake, "/")
	s.mux.HandleFunc("POST /partner/demo/trigger-event", s.fireTrigger)
}

func (s *Server) fireTrigger(w http.ResponseWriter, r *http.Request) {
	sess, ok := s.sessionOf(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "login_required", "log in first")
		return
	}
	body, _ := json.Marshal(map[string]any{"tenant": sess.Tenant, "user": sess.User, "payload": map[string]any{
		"text": "Hello from the fake Zapier", "from": "demo page", "at": s.now().UTC().Format(time.RFC3339)}})
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(s.fakeZapier+"/_demo/trigger-events", "application/json", bytes.NewReader(body))
	if err != nil {
		writeError(w, http.StatusBadGateway, "fake_zapier_unreachable", err.Error())
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 64<<10))
}
