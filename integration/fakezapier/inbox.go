package fakezapier

// The Trigger Inbox API (zapier-api-2026.md §3, §8), served under both path
// prefixes Zapier's docs use: /trigger-inbox/api/v1 and /trigger-inbox/v1.
// Inboxes are per user (the bearer token's identity) and keyed by `key`;
// messages are leased, acked and released as in §3.6, and quarantined once
// they reach the per-message lease limit (default 5, SetInboxLeaseLimit).
//
// Simplifications, stated: a new or resumed inbox is active at once (no
// initializing phase). The events stream is in inbox_events.go.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Trigger Inbox path prefixes (§3.1): the guides' and the spec's.
const (
	InboxPrefix     = "/trigger-inbox/api/v1"
	InboxPrefixSpec = "/trigger-inbox/v1"
)

// DefaultInboxLeaseLimit is the fake's per-message lease limit before a
// message is quarantined (zapier-api-2026.md §7 #15).
const DefaultInboxLeaseLimit = 5

type inboxState struct {
	mu         sync.Mutex
	inboxes    map[string]*fakeInbox // by id
	leaseLimit int
	leases     int // lease calls that returned at least one message
	acks       int // messages acked
	releases   int // messages released
	notified   []InboxNotification
	wg         sync.WaitGroup    // notification POSTs in flight
	streams    inboxStreams      // events streams (inbox_events.go); own lock
	connHooks  connWebhooksState // connection webhooks registration (connwebhooks.go); own lock
}

type fakeInbox struct {
	id, key         string
	tenant, user    string
	created         time.Time
	status          string
	pausedReason    string
	notificationURL string
	sub             InboxSubscription
	msgs            []*fakeMessage // in arrival order
}

type fakeMessage struct {
	id           string
	created      time.Time
	status       string // available, leased, acked, quarantined
	payload      json.RawMessage
	leaseCount   int
	leaseID      string
	leasedUntil  time.Time
	possibleDup  bool
	errorMessage *string
	acks         int
}

// InboxSubscription is an inbox's subscription as the API carries it.
type InboxSubscription struct {
	AppKey       string          `json:"app_key"`
	ActionKey    string          `json:"action_key"`
	Inputs       json.RawMessage `json:"inputs"`
	ConnectionID *string         `json:"connection_id"`
}

// InboxInfo is a snapshot of one inbox, for tests.
type InboxInfo struct {
	ID, Key, Tenant, User string
	Status, PausedReason  string
	NotificationURL       string
	Subscription          InboxSubscription
}

// InboxMessage is a snapshot of one message, for tests.
type InboxMessage struct {
	ID         string
	Status     string
	LeaseCount int
	Acks       int // how many times it was acked (at most 1 by construction)
}

// InboxNotification is one availability notification the fake POSTed.
type InboxNotification struct {
	URL     string
	InboxID string
	Status  int // the receiver's answer; 0 on a network error
}

// InboxStats counts Trigger Inbox traffic.
type InboxStats struct {
	Leases, Acks, Releases int
}

func (st *inboxState) init() {
	if st.inboxes == nil {
		st.inboxes = map[string]*fakeInbox{}
		st.leaseLimit = DefaultInboxLeaseLimit
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func inboxError(w http.ResponseWriter, status int, code, detail string) {
	writeJSON(w, status, map[string]any{"errors": []map[string]any{{"code": code, "detail": detail, "status": status}}})
}

// serveInbox routes /trigger-inbox/{api/,}v1/... requests.
func (s *Server) serveInbox(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, InboxPrefix)
	if !ok {
		rest, ok = strings.CutPrefix(r.URL.Path, InboxPrefixSpec)
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	// Authentication (§3.2, §3.10): no Bearer → 401; a dead token → 400
	// unauthenticated; a token without `external` → 401 invalid_audience.
	tok := bearerToken(r)
	if tok == "" {
		inboxError(w, http.StatusUnauthorized, "not_authenticated", "Authentication credentials were not provided.")
		return
	}
	at, why := s.liveAccess(tok)
	if at == nil {
		inboxError(w, http.StatusBadRequest, "unauthenticated", "Invalid token: "+why+".")
		return
	}
	if !at.hasScope("external") {
		inboxError(w, http.StatusUnauthorized, "invalid_audience", "The token lacks the external scope.")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAPIBody))
	if err != nil {
		inboxError(w, http.StatusBadRequest, "parse_error", "Malformed request.")
		return
	}
	st := &s.inbox
	parts := strings.Split(strings.Trim(rest, "/"), "/")
	if len(parts) == 3 && parts[0] == "inboxes" && parts[2] == "events" && r.Method == http.MethodGet {
		st.mu.Lock()
		st.init()
		ib := st.inboxes[parts[1]]
		ok := ib != nil && ib.tenant == at.tenant && ib.user == at.user
		st.mu.Unlock()
		if !ok {
			inboxError(w, http.StatusNotFound, "not_found", "No such inbox.")
			return
		}
		s.serveInboxEvents(w, r, parts[1], at.expires) // inbox_events.go
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.init()
	s.expireLeasesLocked()

	if len(parts) == 0 || parts[0] != "inboxes" {
		inboxError(w, http.StatusNotFound, "not_found", "Not found.")
		return
	}
	if len(parts) == 1 {
		switch r.Method {
		case http.MethodGet:
			s.listInboxesLocked(w, r, at)
		case http.MethodPut, http.MethodPost:
			s.createInboxLocked(w, r, at, body)
		default:
			inboxError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed.")
		}
		return
	}
	ib := st.inboxes[parts[1]]
	if ib == nil || ib.tenant != at.tenant || ib.user != at.user || ib.status == "deleting" {
		inboxError(w, http.StatusNotFound, "not_found", "No such inbox.")
		return
	}
	route := strings.Join(parts[2:], "/")
	switch {
	case route == "" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, ib.view())
	case route == "" && r.Method == http.MethodDelete:
		ib.status = "deleting"
		writeJSON(w, http.StatusOK, ib.view())
		delete(st.inboxes, ib.id)
	case route == "pause" && r.Method == http.MethodPost:
		ib.status, ib.pausedReason = "paused", "user"
		writeJSON(w, http.StatusOK, ib.view())
	case route == "resume" && r.Method == http.MethodPost:
		ib.status, ib.pausedReason = "active", ""
		writeJSON(w, http.StatusOK, ib.view())
	case route == "messages" && r.Method == http.MethodGet:
		out := []map[string]any{}
		for _, m := range ib.msgs {
			out = append(out, m.view(false))
		}
		writeJSON(w, http.StatusOK, map[string]any{"next": nil, "previous": nil, "results": out})
	case route == "messages/lease" && r.Method == http.MethodPost:
		s.leaseLocked(w, ib, body)
	case (route == "messages/ack" || route == "messages/release") && r.Method == http.MethodPost:
		s.settleLocked(w, ib, body, route == "messages/ack")
	default:
		inboxError(w, http.StatusNotFound, "not_found", "Not found.")
	}
}

func (ib *fakeInbox) attrs() map[string]any {
	var reason any
	if ib.pausedReason != "" {
		reason = ib.pausedReason
	}
	return map[string]any{"status": ib.status, "paused_reason": reason}
}

func (ib *fakeInbox) view() map[string]any {
	v := ib.attrs()
	v["id"], v["key"], v["name"] = ib.id, ib.key, ib.key
	v["created_at"] = ib.created.UTC().Format(time.RFC3339)
	v["subscription"] = ib.sub
	if ib.notificationURL != "" {
		v["notification_url"] = ib.notificationURL
	} else {
		v["notification_url"] = nil
	}
	return v
}

func (m *fakeMessage) view(withPayload bool) map[string]any {
	v := map[string]any{
		"id": m.id, "created_at": m.created.UTC().Format(time.RFC3339), "status": m.status,
		"message_attributes": map[string]any{"lease_count": m.leaseCount, "error_message": m.errorMessage, "possible_duplicate_data": m.possibleDup},
	}
	if withPayload {
		v["payload"] = m.payload
	}
	return v
}

func (s *Server) listInboxesLocked(w http.ResponseWriter, r *http.Request, at *accessToken) {
	key := r.URL.Query().Get("key")
	out := []map[string]any{}
	for _, ib := range s.sortedInboxesLocked() {
		if ib.tenant == at.tenant && ib.user == at.user && (key == "" || ib.key == key) {
			out = append(out, ib.view())
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "next": nil, "previous": nil, "results": out})
}

func (s *Server) sortedInboxesLocked() []*fakeInbox {
	out := make([]*fakeInbox, 0, len(s.inbox.inboxes))
	for _, ib := range s.inbox.inboxes {
		out = append(out, ib)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].created.Before(out[j].created) || out[i].created.Equal(out[j].created) && out[i].id < out[j].id
	})
	return out
}

// createInboxLocked is POST (create) and PUT (ensure by key) on /inboxes.
func (s *Server) createInboxLocked(w http.ResponseWriter, r *http.Request, at *accessToken, body []byte) {
	var req struct {
		Key             *string            `json:"key"`
		Name            *string            `json:"name"`
		Subscription    *InboxSubscription `json:"subscription"`
		NotificationURL *string            `json:"notification_url"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		inboxError(w, http.StatusBadRequest, "invalid", "Malformed body: "+err.Error())
		return
	}
	key := ""
	if req.Key != nil {
		key = *req.Key
	} else if req.Name != nil {
		key = *req.Name
	}
	switch {
	case r.Method == http.MethodPut && key == "":
		inboxError(w, http.StatusBadRequest, "invalid", "key: This field is required.")
		return
	case len(key) > 100:
		inboxError(w, http.StatusBadRequest, "invalid", "key: at most 100 characters.")
		return
	case req.Subscription == nil || req.Subscription.AppKey == "" || req.Subscription.ActionKey == "":
		inboxError(w, http.StatusBadRequest, "invalid", "subscription: app_key and action_key are required.")
		return
	case req.NotificationURL != nil && len(*req.NotificationURL) > 2048:
		inboxError(w, http.StatusBadRequest, "invalid", "notification_url: at most 2048 characters.")
		return
	}
	sub := *req.Subscription
	if len(bytes.TrimSpace(sub.Inputs)) == 0 || string(bytes.TrimSpace(sub.Inputs)) == "null" {
		sub.Inputs = json.RawMessage("{}")
	}
	if sub.ConnectionID != nil {
		s.mu.Lock()
		c, ok := s.connections[*sub.ConnectionID]
		s.mu.Unlock()
		if !ok || c.tenant != at.tenant || c.user != at.user {
			inboxError(w, http.StatusBadRequest, "invalid", "subscription.connection_id: no such connection for this user.")
			return
		}
	}
	if key != "" {
		for _, ib := range s.inbox.inboxes {
			if ib.tenant != at.tenant || ib.user != at.user || ib.key != key {
				continue
			}
			if r.Method == http.MethodPost || !sameSubscription(ib.sub, sub) {
				inboxError(w, http.StatusConflict, "conflict", "An inbox with this key exists with a different configuration.")
				return
			}
			if req.NotificationURL != nil {
				ib.notificationURL = *req.NotificationURL
			}
			writeJSON(w, http.StatusOK, ib.view())
			return
		}
	} else {
		key = "inbox-" + newUUID()[:8]
	}
	ib := &fakeInbox{id: newUUID(), key: key, tenant: at.tenant, user: at.user, created: s.now(), status: "active", sub: sub}
	if req.NotificationURL != nil {
		ib.notificationURL = *req.NotificationURL
	}
	s.inbox.inboxes[ib.id] = ib
	writeJSON(w, http.StatusCreated, ib.view())
}

func sameSubscription(a, b InboxSubscription) bool {
	if a.AppKey != b.AppKey || a.ActionKey != b.ActionKey || !jsonEqual(a.Inputs, b.Inputs) {
		return false
	}
	if (a.ConnectionID == nil) != (b.ConnectionID == nil) {
		return false
	}
	return a.ConnectionID == nil || *a.ConnectionID == *b.ConnectionID
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// expireLeasesLocked returns messages whose lease ran out to the queue, or
// quarantines them at the lease limit.
func (s *Server) expireLeasesLocked() {
	now := s.now()
	for _, ib := range s.inbox.inboxes {
		for _, m := range ib.msgs {
			if m.status == "leased" && !now.Before(m.leasedUntil) {
				s.returnMessageLocked(m)
			}
		}
	}
}

func (s *Server) returnMessageLocked(m *fakeMessage) {
	m.leaseID, m.leasedUntil = "", time.Time{}
	m.status = "available"
	if m.leaseCount >= s.inbox.leaseLimit {
		m.status = "quarantined"
	}
}

func (s *Server) leaseLocked(w http.ResponseWriter, ib *fakeInbox, body []byte) {
	req := struct {
		LeaseSeconds *int `json:"lease_seconds"`
		LeaseLimit   *int `json:"lease_limit"`
	}{}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			inboxError(w, http.StatusBadRequest, "invalid", "Malformed body.")
			return
		}
	}
	secs, limit := 300, 10
	if req.LeaseSeconds != nil {
		secs = *req.LeaseSeconds
	}
	if req.LeaseLimit != nil {
		limit = *req.LeaseLimit
	}
	if secs < 1 || secs > 3600 {
		inboxError(w, http.StatusBadRequest, "invalid", "lease_seconds: must be between 1 and 3600.")
		return
	}
	if limit < 1 || limit > 100 {
		inboxError(w, http.StatusBadRequest, "invalid", "lease_limit: must be between 1 and 100.")
		return
	}
	var picked []*fakeMessage
	pending := false
	for _, m := range ib.msgs {
		switch m.status {
		case "available":
			if len(picked) < limit {
				picked = append(picked, m)
			} else {
				pending = true
			}
		case "leased":
			pending = true
		}
	}
	if ib.status == "paused" && len(picked) == 0 && !pending {
		writeJSON(w, http.StatusConflict, map[string]any{
			"detail":           "The inbox is paused and has no messages left.",
			"inbox_attributes": ib.attrs(),
			"errors":           []map[string]any{{"code": "inbox_paused", "detail": "The inbox is paused and has no messages left.", "status": 409}},
		})
		return
	}
	resp := map[string]any{"lease_id": nil, "leased_until": nil, "results": []any{}, "inbox_attributes": ib.attrs()}
	if len(picked) > 0 {
		leaseID, until := newUUID(), s.now().Add(time.Duration(secs)*time.Second)
		results := make([]any, 0, len(picked))
		for _, m := range picked {
			m.status, m.leaseID, m.leasedUntil = "leased", leaseID, until
			m.leaseCount++
			results = append(results, m.view(true))
		}
		resp["lease_id"], resp["leased_until"], resp["results"] = leaseID, until.UTC().Format(time.RFC3339Nano), results
		s.inbox.leases++
	}
	writeJSON(w, http.StatusOK, resp)
}

// settleLocked is ack (done) and release (give back).
func (s *Server) settleLocked(w http.ResponseWriter, ib *fakeInbox, body []byte, ack bool) {
	var req struct {
		LeaseID    string   `json:"lease_id"`
		MessageIDs []string `json:"message_ids"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.LeaseID == "" {
		inboxError(w, http.StatusBadRequest, "invalid", "lease_id: This field is required.")
		return
	}
	if req.MessageIDs != nil && (len(req.MessageIDs) < 1 || len(req.MessageIDs) > 100) {
		inboxError(w, http.StatusBadRequest, "invalid", "message_ids: between 1 and 100 ids.")
		return
	}
	want := map[string]bool{}
	for _, id := range req.MessageIDs {
		want[id] = true
	}
	var targets []*fakeMessage
	for _, m := range ib.msgs {
		if req.MessageIDs != nil && !want[m.id] {
			continue
		}
		if m.status == "leased" && m.leaseID == req.LeaseID {
			targets = append(targets, m)
		} else if req.MessageIDs != nil {
			inboxError(w, http.StatusBadRequest, "lease_expired", "The lease of message "+m.id+" has expired.")
			return
		}
	}
	if len(targets) == 0 || len(targets) < len(req.MessageIDs) {
		inboxError(w, http.StatusBadRequest, "lease_expired", "The lease has expired.")
		return
	}
	results := make([]any, 0, len(targets))
	for _, m := range targets {
		if ack {
			m.status, m.leaseID, m.leasedUntil = "acked", "", time.Time{}
			m.acks++
			s.inbox.acks++
		} else {
			s.returnMessageLocked(m)
			s.inbox.releases++
		}
		results = append(results, m.view(false))
	}
	if ack {
		writeJSON(w, http.StatusOK, map[string]any{"acked_id": req.LeaseID, "results": results})
	} else {
		writeJSON(w, http.StatusOK, map[string]any{"released_id": req.LeaseID, "results": results})
	}
}

// Test hooks.

// InjectTriggerEvent queues an event on an inbox as if the app's trigger
// fired, and POSTs the inbox's notification_url (in the background). It
// returns the message id, or "" when the inbox is unknown or paused (events
// arriving while paused are dropped, §3.7).
func (s *Server) InjectTriggerEvent(inboxID string, payload any) string {
	raw, err := json.Marshal(payload)
	if err != nil {
		panic("fakezapier: InjectTriggerEvent: " + err.Error())
	}
	st := &s.inbox
	st.mu.Lock()
	st.init()
	ib := st.inboxes[inboxID]
	if ib == nil || ib.status != "active" {
		st.mu.Unlock()
		return ""
	}
	m := &fakeMessage{id: newUUID(), created: s.now(), status: "available", payload: raw}
	ib.msgs = append(ib.msgs, m)
	notify := ib.notificationURL
	st.mu.Unlock()
	s.publishInboxEvent(inboxID)
	if notify != "" {
		st.wg.Add(1)
		go func() {
			defer st.wg.Done()
			s.postInboxNotification(notify, inboxID)
		}()
	}
	return m.id
}

// postInboxNotification POSTs §3.8's body once, plus 2 retries on failure.
func (s *Server) postInboxNotification(url, inboxID string) {
	body, _ := json.Marshal(map[string]any{"inbox_id": inboxID, "received_message_count": 1, "redelivery": false})
	client := s.partnerClient(5 * time.Second)
	for attempt := 0; attempt < 3; attempt++ {
		status := 0
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		s.inbox.mu.Lock()
		s.inbox.notified = append(s.inbox.notified, InboxNotification{URL: url, InboxID: inboxID, Status: status})
		s.inbox.mu.Unlock()
		if status >= 200 && status < 300 {
			return
		}
	}
}

// WaitInboxNotifications waits for the notification POSTs in flight.
func (s *Server) WaitInboxNotifications() { s.inbox.wg.Wait() }

// InboxNotifications returns the notification POSTs made so far.
func (s *Server) InboxNotifications() []InboxNotification {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	return append([]InboxNotification(nil), s.inbox.notified...)
}

// PauseInbox pauses an inbox as Zapier does on its own (e.g. reason
// "authentication"); it reports whether the inbox exists.
func (s *Server) PauseInbox(inboxID, reason string) bool {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	s.inbox.init()
	ib := s.inbox.inboxes[inboxID]
	if ib != nil {
		ib.status, ib.pausedReason = "paused", reason
	}
	return ib != nil
}

// SetInboxLeaseLimit sets how many leases a message may have before it is
// quarantined.
func (s *Server) SetInboxLeaseLimit(n int) {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	s.inbox.init()
	s.inbox.leaseLimit = max(n, 1)
}

// Inboxes returns every inbox, oldest first.
func (s *Server) Inboxes() []InboxInfo {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	s.inbox.init()
	var out []InboxInfo
	for _, ib := range s.sortedInboxesLocked() {
		out = append(out, InboxInfo{ID: ib.id, Key: ib.key, Tenant: ib.tenant, User: ib.user, Status: ib.status,
			PausedReason: ib.pausedReason, NotificationURL: ib.notificationURL, Subscription: ib.sub})
	}
	return out
}

// InboxMessages returns the messages of an inbox in arrival order, after
// expiring leases that ran out.
func (s *Server) InboxMessages(inboxID string) []InboxMessage {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	s.inbox.init()
	s.expireLeasesLocked()
	var out []InboxMessage
	if ib := s.inbox.inboxes[inboxID]; ib != nil {
		for _, m := range ib.msgs {
			out = append(out, InboxMessage{ID: m.id, Status: m.status, LeaseCount: m.leaseCount, Acks: m.acks})
		}
	}
	return out
}

// InboxStats returns the Trigger Inbox counters.
func (s *Server) InboxStats() InboxStats {
	s.inbox.mu.Lock()
	defer s.inbox.mu.Unlock()
	return InboxStats{Leases: s.inbox.leases, Acks: s.inbox.acks, Releases: s.inbox.releases}
}

// IssueAccessToken issues a live access token for an identity with the
// given scopes, without a JWT exchange, for tests of API clients.
func (s *Server) IssueAccessToken(tenant, user string, scopes ...string) string {
	tok := "fat_" + strings.ReplaceAll(newUUID(), "-", "")
	sorted := append([]string(nil), scopes...)
	sort.Strings(sorted)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access[tok] = &accessToken{tenant: tenant, user: user, scopes: sorted, expires: s.now().Add(s.cfg.AccessTokenTTL)}
	return tok
}
