package triggers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"github.com/zapgate/caddy-zapier/connect"
)

// Connection lifecycle events for the partner, sent by every running
// delivery loop to its deliver_to, signed like trigger events.
const (
	EventConnectionCreated = "connection.created" // a connection was stored through zapier_connect
	EventConnectionDeleted = "connection.deleted" // forgotten: DELETE connections/{app}, replaced, or gone at Zapier
)

// PublishConnectionChange tells the running delivery loops mgrs that a
// stored connection changed (typ: EventConnectionCreated or
// EventConnectionDeleted). It never blocks: each loop publishes in the
// background (retries, then a replayable dead letter). Only the gateway
// that made the change calls it, so sidecars sharing storage send it once.
func PublishConnectionChange(mgrs []*Manager, typ, tenant, user string, rec connect.Record) {
	body, err := json.Marshal(struct {
		Type         string    `json:"type"`
		Tenant       string    `json:"tenant"`
		User         string    `json:"user"`
		App          string    `json:"app"`
		AppUUID      string    `json:"app_uuid,omitempty"`
		ConnectionID string    `json:"connection_id"`
		Title        string    `json:"title,omitempty"`
		At           time.Time `json:"at"`
	}{typ, tenant, user, rec.App, rec.AppUUID, rec.ConnectionID, rec.Title, time.Now().UTC()})
	if err != nil {
		return
	}
	// The webhook-id names the event, so a retry or replay keeps it.
	sum := sha256.Sum256([]byte(typ + "\x00" + tenant + "\x00" + user + "\x00" + rec.AppUUID + "\x00" + rec.ConnectionID))
	id := "evt_" + hex.EncodeToString(sum[:16])
	who := Identity{Tenant: tenant, User: user}
	for _, m := range mgrs {
		m.Publish(id, who, body)
	}
}

// AllDeadLetters lists the dead letters of the delivery loops mgrs
// (loops sharing a storage list the same letters: each once), oldest
// first.
func AllDeadLetters(ctx context.Context, mgrs []*Manager) ([]DeadLetter, error) {
	byID := map[string]DeadLetter{}
	for _, m := range mgrs {
		dls, err := m.DeadLetters(ctx)
		if err != nil {
			return nil, err
		}
		for _, dl := range dls {
			byID[dl.ID] = dl
		}
	}
	out := make([]DeadLetter, 0, len(byID))
	for _, dl := range byID {
		out = append(out, dl)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// ReplayAny delivers dead letter id again through the first of mgrs that
// has it: ErrNotFound when none has it, else the last failure.
func ReplayAny(ctx context.Context, mgrs []*Manager, id string) error {
	var lastErr error = ErrNotFound
	for _, m := range mgrs {
		err := m.Replay(ctx, id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrNotFound) {
			lastErr = err
		}
	}
	return lastErr
}
